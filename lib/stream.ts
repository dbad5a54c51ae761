// The main-thread half of a streaming handler (a generator function): a
// Readable that Fastify sends, fed by the worker over the task's port, with
// credit granted as the client reads (the worker half is workers/stream.ts).
//
// Bytes in flight per stream stay near `highWaterMark`: the Readable buffers
// at most that much, and the worker may send at most that much more. A stream
// whose credit is spent waits for its client without holding a thread's
// place (scheduler pause/resume); each thread holds up to STREAMS_PER_THREAD (threads.ts)
// such waiting streams besides the task it runs.
import { Readable } from 'node:stream'
import { MessageChannel, type MessagePort } from 'node:worker_threads'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Background } from './background.js'
import { reviveError, writeLogs } from './logs.js'
import { applyHead, refused, serverTiming } from './reply.js'
import { snapshotOf, type BlockingRoute } from './request.js'
import type { Entry } from './lane.js'
import type { Scheduler } from './scheduler.js'
import { PayloadKind, type ErrorOutcome, type Head, type Outcome, type StreamMessage, type StreamTask, unknownMessage } from './common/protocol.js'

export function startStream (
  route: BlockingRoute,
  scheduler: Scheduler,
  background: Background,
  request: FastifyRequest,
  reply: FastifyReply
): Promise<unknown> {
  const { port1: port, port2 } = new MessageChannel()
  let task: StreamTask
  let entry: ReturnType<Scheduler['submit']>
  try {
    task = {
      type: 'blocking:stream',
      fn: route.number,
      slot: -1,
      request: snapshotOf(request, reply, route),
      port: port2,
      highWaterMark: route.options.highWaterMark
    }
    entry = scheduler.submit({ task, lane: 'request', label: route.label, timeout: route.options.timeout, transferList: [port2], stream: true, meter: route.meter, log: request.log })
  } catch (err) {
    refused(reply, scheduler, err)
    port.close()
    port2.close()
    return Promise.reject(err)
  }
  return new StreamReceiver(port, route, background, request, reply, scheduler, entry, false).promise
}

/**
 * A stream a handler returned (PayloadKind.Stream): it flows on `port` once
 * credit is granted, and its task (`entry`, whose promise now stands for the
 * stream's end: see Scheduler.streaming()) goes on until it ends, as a
 * generator's does.
 */
export function streamFrom (port: MessagePort, route: BlockingRoute, background: Background, request: FastifyRequest, reply: FastifyReply, scheduler: Scheduler, entry: Entry): Promise<unknown> {
  return new StreamReceiver(port, route, background, request, reply, scheduler, entry, true).promise
}

/**
 * The Readable Fastify sends (`promise` settles with it, or with undefined
 * for a stream that ended before its first chunk), fed by a worker over
 * `port`, paced by credit, for the task `entry`: a generator handler's, or
 * one whose handler returned a stream (`returned`: its head and Server-Timing
 * went with its first outcome).
 *
 * One instance a stream, in place of a closure per event: the listeners it
 * hands out (port, client, Readable, timer, task) are its arrow fields; what
 * arrives on the port is dispatched by onMessage().
 */
class StreamReceiver {
  readonly promise: Promise<unknown>
  private resolve!: (body: Readable | undefined) => void
  private reject!: (err: Error) => void
  private body: Readable | undefined = undefined
  private finished = false
  // Bytes the worker may send (granted) against bytes it sent (received).
  private granted: number
  private received = 0
  private stall: NodeJS.Timeout | undefined = undefined
  private readonly highWaterMark: number

  constructor (
    private readonly port: MessagePort,
    private readonly route: BlockingRoute,
    private readonly background: Background,
    private readonly request: FastifyRequest,
    private readonly reply: FastifyReply,
    private readonly scheduler: Scheduler,
    private readonly entry: Entry,
    private readonly returned: boolean
  ) {
    this.highWaterMark = route.options.highWaterMark
    // A generator starts with a window of credit (StreamTask.highWaterMark);
    // a returned stream is granted its window below.
    this.granted = this.highWaterMark
    this.promise = new Promise((resolve, reject) => {
      this.resolve = resolve
      this.reject = reject
    })
    reply.raw.once('close', this.onClose)
    port.on('message', this.onMessage)
    if (returned) {
      // The handler has returned: the stream may send its first chunk.
      port.postMessage({ type: 'stream:more', credit: this.highWaterMark })
    }
    entry.promise.then(this.onTaskOver, this.fail)
  }

  // --- Worker -> main (StreamMessage) ---

  private readonly onMessage = (message: StreamMessage): void => {
    if (this.finished) return
    // What the generator logged (on its thread's log port) goes before its end or its error.
    if (message.type !== 'stream:chunk') this.scheduler.drainLogs(this.entry)
    switch (message.type) {
      case 'stream:chunk':
        this.onChunk(message.chunk, message.head)
        break
      case 'stream:end':
        this.onEnd(message.outcome)
        break
      case 'stream:error':
        this.onError(message.outcome)
        break
      default:
        // An unknown message is a bug on one side: end the stream loudly.
        this.fail(unknownMessage('stream', message))
    }
  }

  private onChunk (chunk: Uint8Array, head: Head | undefined): void {
    this.received += chunk.byteLength
    let body = this.body
    if (body === undefined) {
      body = this.body = new Readable({ highWaterMark: this.highWaterMark, read: this.grant })
      applyHead(this.reply, head)
      this.timing('until the first chunk')
      this.resolve(body)
    }
    // A view over the transferred buffer: no copy.
    body.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength))
    if (this.granted - this.received <= 0) this.spent()
  }

  private onEnd (outcome: Outcome): void {
    if (outcome.logs !== undefined) writeLogs(this.request.log, outcome.logs)
    if (outcome.background !== undefined) this.background.fromWorker(this.reply, outcome.background)
    this.finish()
    if (this.body === undefined) {
      applyHead(this.reply, outcome)
      this.timing()
      this.resolve(undefined)
    } else {
      this.body.push(null)
    }
  }

  private onError (outcome: ErrorOutcome): void {
    if (outcome.logs !== undefined) writeLogs(this.request.log, outcome.logs)
    this.fail(reviveError(outcome.value))
  }

  /**
   * The task ends after its last message was posted; a task that failed
   * before streaming (its module did not load) ends with an error outcome;
   * a stream whose client went away sends its log lines with the task.
   */
  private readonly onTaskOver = (outcome: Outcome): void => {
    if (outcome.kind === PayloadKind.Error) {
      if (outcome.logs !== undefined) writeLogs(this.request.log, outcome.logs)
      this.fail(reviveError(outcome.value))
    } else if (outcome.kind === PayloadKind.Skipped) {
      if (outcome.logs !== undefined) writeLogs(this.request.log, outcome.logs)
      // Cancelled before this side saw its client leave (a returned stream
      // whose client left while its handler ran): nothing is left to send.
      if (!this.finished) {
        this.finish()
        this.body?.destroy()
        this.resolve(undefined)
      }
    }
  }

  // --- Main -> worker (StreamControl) ---

  /**
   * Called by the Readable when its reader wants more (its buffer is below,
   * or about to fall below, highWaterMark): the worker may then send up to
   * highWaterMark beyond what it still owes. So the Readable's buffer and
   * the bytes in flight each stay within highWaterMark.
   */
  private readonly grant = (): void => {
    if (this.finished || this.body === undefined) return
    // Granted in steps of half the window or more: a credit message per
    // chunk would cost as much as the chunk.
    const credit = this.highWaterMark - (this.granted - this.received)
    if (credit < this.highWaterMark / 2) return
    this.granted += credit
    this.unstall()
    this.port.postMessage({ type: 'stream:more', credit })
    this.scheduler.resume(this.entry)
  }

  /** The client went away: the generator's return() runs in the worker. */
  private readonly onClose = (): void => {
    if (this.finished || this.reply.raw.writableFinished) return
    this.finished = true
    this.unstall()
    this.reply.raw.removeListener('close', this.onClose)
    this.scheduler.cancel(this.entry)
    this.cancel()
    this.body?.destroy()
    this.resolve(undefined)
  }

  /**
   * Told over the port (a worker waiting for credit wakes on it), which is
   * closed once the task is over: the task, and the port's other end with
   * it, may still be in its channel's outbox.
   */
  private cancel (): void {
    const port = this.port
    port.postMessage({ type: 'stream:cancel' })
    const close = (): void => port.close()
    void this.entry.promise.then(close, close)
  }

  // --- Credit spent: the stream waits for its client ---

  /**
   * The worker may send nothing more: the task waits without holding a
   * thread's place. A client that reads nothing for stallTimeout ms from
   * then loses its connection: the stream ends as if it had gone (onClose),
   * and its place in the streams' cap is free.
   */
  private spent (): void {
    this.scheduler.pause(this.entry)
    const stallTimeout = this.route.options.stallTimeout
    if (stallTimeout > 0 && this.stall === undefined) this.stall = setTimeout(this.stalled, stallTimeout).unref()
  }

  private readonly stalled = (): void => {
    this.request.log.warn(`fastify-blocking: ${this.route.label}: the client read nothing for ${this.route.options.stallTimeout} ms (stallTimeout); the connection is closed`)
    this.reply.raw.destroy()
  }

  private unstall (): void {
    clearTimeout(this.stall)
    this.stall = undefined
  }

  // --- The end ---

  private finish (): void {
    this.finished = true
    this.unstall()
    this.reply.raw.removeListener('close', this.onClose)
    this.port.close()
  }

  /** Before the first chunk, an error goes to the error handler; after it, it cuts the response. */
  private readonly fail = (err: Error): void => {
    if (this.finished) return
    this.finish()
    if (this.body === undefined) {
      this.timing()
      this.reject(err)
    } else {
      // Headers are gone: the error handler cannot answer. Cut the response
      // (the client sees no clean end) and say why, once, with the worker's
      // stack: the body ends without an error, so Fastify does not log it again.
      this.request.log.error({ err }, `fastify-blocking: ${this.route.label} failed after its first chunk; the response was cut`)
      this.body.destroy()
    }
  }

  private timing (run?: string): void {
    if (!this.returned && this.route.options.serverTiming) serverTiming(this.reply, this.scheduler, this.entry, run)
  }
}
