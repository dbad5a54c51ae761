// Background tasks: `reply.background(task, ...args)`, on the main thread or
// in a worker handler, runs `task` in the pool once the response has been
// sent. Requests never wait behind them (the scheduler's background lane), and
// none is lost silently: a task that fails or is dropped is logged by name
// with the request's reqId.
import type { FastifyBaseLogger, FastifyReply } from 'fastify'
import type { Transferable } from 'node:worker_threads'
import { definitionOf, lookup } from './common/define.js'
import { FST_BLOCKING_HANDLER_NOT_DEFINED, FST_BLOCKING_NOT_CLONEABLE } from './common/errors.js'
import { loggedPayloadOf } from './reply.js'
import type { DurableQueue } from './queue.js'
import type { Entry } from './lane.js'
import type { Scheduler } from './scheduler.js'
import type { LaneName } from './lane.js'
import { addToReply, kBackgroundPending } from './symbols.js'
import { handlerNumbers } from './threads.js'
import { bufferIndexes, ownBuffer, uncloneable } from './common/clone.js'
import type { BackgroundCall, RunTask } from './common/protocol.js'

interface Pending {
  fn: string
  name: string
  args: unknown[]
  buffers: number[] | undefined
  log: FastifyBaseLogger
}

/** The name a worker-made call is logged under: the task's own, if this thread has loaded its module. */
function nameOfId (id: string): string {
  const definition = definitionOf(lookup(id))
  return definition?.name ?? id.slice(id.lastIndexOf('/') + 1)
}

/**
 * Hands a task to the pool. Bytes that belong to the arguments alone are
 * moved, not copied; a Buffer that shares its memory (Node's pool) is cloned.
 */
export function submitTask (
  scheduler: Scheduler,
  call: { fn: string, name: string, args: unknown[], buffers: number[] | undefined },
  timeout: number,
  lane: LaneName,
  reserved = false
): Entry {
  let transferList: Transferable[] | undefined
  for (const arg of call.args) {
    const own = ownBuffer(arg)
    if (own !== undefined && !(transferList ?? []).includes(own)) (transferList ??= []).push(own)
  }
  const task: RunTask = { type: 'blocking:run', fn: handlerNumbers.numberOf(call.fn), slot: -1, args: call.args, buffers: call.buffers }
  return scheduler.submit({ task, lane, label: call.name, timeout, transferList }, reserved)
}

export class Background {
  /** With `queue`: tasks become durable jobs (queue.ts), and run here only when Redis is down and whenDown is 'local'. */
  durable: DurableQueue | undefined

  constructor (private readonly scheduler: Scheduler, private readonly timeout: number, private readonly log: FastifyBaseLogger) {}

  /** `reply.background()` on the main thread: checked now, run after the response. */
  call (reply: FastifyReply, task: unknown, args: unknown[]): void {
    const definition = definitionOf(task)
    if (definition === undefined) {
      throw new FST_BLOCKING_HANDLER_NOT_DEFINED(
        'reply.background(task): task was not made with defineTask, so a worker cannot find it'
      )
    }
    if (this.durable !== undefined) {
      this.durable.fromReply(reply, definition, args, bufferIndexes(args))
      return
    }
    const label = `reply.background(${definition.name})`
    const problem = uncloneable(args)
    if (problem !== undefined) {
      throw new FST_BLOCKING_NOT_CLONEABLE(`${label}: an argument cannot be sent to a worker: ${problem}`)
    }
    this.scheduler.reserve(label, definition.name)
    this.attach(reply, { fn: definition.id, name: definition.name, args, buffers: bufferIndexes(args), log: reply.log })
  }

  /** Calls a worker handler made (already checked in the worker); a full queue now is logged, not thrown. */
  fromWorker (reply: FastifyReply, calls: BackgroundCall[]): void {
    for (const call of calls) {
      const name = nameOfId(call.fn)
      const definition = definitionOf(lookup(call.fn))
      if (this.durable !== undefined && definition !== undefined) {
        this.durable.fromWorker(reply, definition, call.args, call.buffers)
        continue
      }
      this.runLocally(reply, call.fn, name, call.args, call.buffers)
    }
  }

  /** Runs a task in process (without `queue`, or whenDown 'local'): after the response when there is one, else now. */
  runLocally (reply: FastifyReply | undefined, fn: string, name: string, args: unknown[], buffers: number[] | undefined): void {
    if (reply === undefined) {
      // app.blocking.enqueue(): a full queue is the caller's error.
      this.scheduler.reserve(`app.blocking.enqueue(${name})`, name)
      this.start({ fn, name, args, buffers, log: this.log })
      return
    }
    try {
      this.scheduler.reserve(`reply.background(${name})`, name)
    } catch (err) {
      reply.log.error({ err, task: name }, `fastify-blocking: background task ${name} was dropped`)
      return
    }
    this.attach(reply, { fn, name, args, buffers, log: reply.log })
  }

  private attach (reply: FastifyReply, pending: Pending): void {
    // Called once the response is already over (in onResponse, say): run it now.
    if (reply.raw.closed) {
      this.start(pending)
      return
    }
    addToReply(reply, kBackgroundPending, pending, this.startPending)
  }

  /** start(), bound once: the reply's close hands it each pending task. */
  private readonly startPending = (pending: Pending): void => this.start(pending)

  private start (pending: Pending): void {
    const { name, log } = pending
    let entry
    try {
      entry = submitTask(this.scheduler, pending, this.timeout, 'background', true)
    } catch (err) {
      log.error({ err, task: name }, `fastify-blocking: background task ${name} was dropped`)
      return
    }
    entry.promise.then((outcome) => loggedPayloadOf(log, outcome)).then(
      () => log.debug({ task: name }, `fastify-blocking: background task ${name} done`),
      (err: Error & { code?: string }) => {
        const what = err.code === 'FST_BLOCKING_CLOSED' ? 'was dropped' : 'failed'
        log.error({ err, task: name }, `fastify-blocking: background task ${name} ${what}`)
      }
    )
  }
}
