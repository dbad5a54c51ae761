// Wires the durable queue (queue.ts, queue-worker.ts) into the plugin when
// `queue` is set: the hook that holds a response until its jobs are in Redis,
// the consumer's start once the pool is ready, and the order of shutdown.
import type { FastifyInstance } from 'fastify'
import type { Background } from './background.js'
import { definitionOf } from './common/define.js'
import { FST_BLOCKING_HANDLER_NOT_DEFINED, FST_BLOCKING_INVALID_OPTION, FST_BLOCKING_NOT_CLONEABLE } from './common/errors.js'
import type { ResolvedOptions } from './options.js'
import { DurableQueue, loadDrivers } from './queue.js'
import { QueueConsumer } from './queue-worker.js'
import type { Scheduler } from './scheduler.js'
import type { QueueJobOptions } from './common/types.js'
import { bufferIndexes, uncloneable } from './common/clone.js'
import { GAUGE_DURABLE } from './common/protocol.js'

/** Set by startQueueWorker() on the options it registers the plugin with: a process without HTTP. */
export const kJobsOnly = Symbol.for('fastify-blocking.jobs-only')

export interface Durable {
  queue: DurableQueue
  /** After the pool is destroyed: the worker's jobs have ended (or gone back to the queue); closes every connection. */
  close (): Promise<void>
}

export async function attachQueue (
  fastify: FastifyInstance,
  given: object,
  options: ResolvedOptions,
  scheduler: Scheduler,
  background: Background
): Promise<Durable> {
  const settings = options.queue!
  const drivers = await loadDrivers()
  const jobsOnly = (given as { [kJobsOnly]?: boolean })[kJobsOnly] === true
  const queue = new DurableQueue(drivers, settings, fastify.log, (reply, fn, name, args, buffers) => background.runLocally(reply, fn, name, args, buffers))
  background.durable = queue
  // Worker handlers check their reply.background() arguments for JSON at the call.
  Atomics.store(new Int32Array(scheduler.gauges), GAUGE_DURABLE, 1)
  const consumer = settings.work
    ? new QueueConsumer(drivers, settings, queue, scheduler, fastify.log, { taskTimeout: options.taskTimeout, lane: jobsOnly ? 'request' : 'background' })
    : undefined

  fastify.addHook('onSend', function holdForQueue (_request, reply, payload, done) {
    const waiting = queue.beforeSend(reply)
    if (waiting === undefined) {
      done(null, payload)
      return
    }
    waiting.then(() => done(null, payload), done)
  })

  fastify.addHook('onReady', async () => {
    // Every task module imported so far is in the table; two tasks with one name stop the start.
    await queue.tasks.refresh()
    await consumer?.start()
    fastify.log.info(
      { queue: settings.name, tasks: queue.tasks.size, concurrency: consumer === undefined ? 0 : settings.concurrency },
      `fastify-blocking: durable queue '${settings.name}'${consumer === undefined ? ' (enqueue only)' : ''}`
    )
  })

  // Before the server stops: no new job is taken while the running ones finish.
  fastify.addHook('preClose', (done) => {
    consumer?.stopFetching()
    done()
  })

  return {
    queue,
    async close () {
      try {
        await consumer?.close()
      } finally {
        await queue.close()
      }
    }
  }
}

let localIds = 0

/** `app.blocking.enqueue(task, args, jobOptions)`: a durable job with `queue`, else the task runs in the pool. */
export function enqueue (
  durable: Durable | undefined,
  background: Background,
  task: unknown,
  args: unknown,
  jobOptions: QueueJobOptions | undefined
): Promise<{ id: string }> {
  const definition = definitionOf(task)
  if (definition === undefined || definition.kind !== 'task') {
    return Promise.reject(new FST_BLOCKING_HANDLER_NOT_DEFINED('app.blocking.enqueue(task, args): task was not made with defineTask'))
  }
  if (!Array.isArray(args)) {
    return Promise.reject(new FST_BLOCKING_INVALID_OPTION(`app.blocking.enqueue(${definition.name}, args): args must be an array, got ${typeof args}`))
  }
  if (durable !== undefined) return durable.queue.enqueue(definition, args, jobOptions)
  const problem = uncloneable(args)
  if (problem !== undefined) {
    return Promise.reject(new FST_BLOCKING_NOT_CLONEABLE(`app.blocking.enqueue(${definition.name}): an argument cannot be sent to a worker: ${problem}`))
  }
  try {
    background.runLocally(undefined, definition.id, definition.name, args, bufferIndexes(args))
  } catch (err) {
    return Promise.reject(err)
  }
  return Promise.resolve({ id: `local:${++localIds}` })
}
