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
import { PayloadKind, type StreamMessage, type StreamTask, unknownMessage } from './common/protocol.js'

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
  return feed(port, route, background, request, reply, { scheduler, entry, returned: false })
}

/**
 * A stream a handler returned (PayloadKind.Stream): it flows on `port` once
 * credit is granted, and its task (`entry`, whose promise now stands for the
 * stream's end: see Scheduler.streaming()) goes on until it ends, as a
 * generator's does.
 */
export function streamFrom (port: MessagePort, route: BlockingRoute, background: Background, request: FastifyRequest, reply: FastifyReply, scheduler: Scheduler, entry: Entry): Promise<unknown> {
  return feed(port, route, background, request, reply, { scheduler, entry, returned: true })
}

/**
 * The Readable Fastify sends, fed by a worker over `port`, paced by credit,
 * for the task `task.entry` (a generator handler's, or one whose handler
 * returned a stream: `returned`, whose head and Server-Timing went with its first outcome).
 */
function feed (
  port: MessagePort,
  route: BlockingRoute,
  background: Background,
  request: FastifyRequest,
  reply: FastifyReply,
  task: { scheduler: Scheduler, entry: Entry, returned: boolean }
): Promise<unknown> {
  const highWaterMark = route.options.highWaterMark
  const timing = (run?: string): void => {
    if (!task.returned && route.options.serverTiming) serverTiming(reply, task.scheduler, task.entry, run)
  }
  return new Promise((resolve, reject) => {
    const raw = reply.raw
    let body: Readable | undefined
    let finished = false
    // Bytes the worker may send (granted) against bytes it sent (received).
    // A returned stream starts with none: its first credit goes below.
    let granted = task.returned ? 0 : highWaterMark
    let received = 0

    // A client that reads nothing for stallTimeout ms while the stream waits
    // for it loses its connection: the stream ends as if it had gone (onClose),
    // and its place in the streams' cap is free.
    let stall: NodeJS.Timeout | undefined
    const unstall = (): void => {
      clearTimeout(stall)
      stall = undefined
    }
    const stalled = (): void => {
      request.log.warn(`fastify-blocking: ${route.label}: the client read nothing for ${route.options.stallTimeout} ms (stallTimeout); the connection is closed`)
      raw.destroy()
    }
    const finish = (): void => {
      finished = true
      unstall()
      raw.removeListener('close', onClose)
      port.close()
    }
    /** Before the first chunk, an error goes to the error handler; after it, it cuts the response. */
    const fail = (err: Error): void => {
      if (finished) return
      finish()
      if (body === undefined) {
        timing()
        reject(err)
      } else {
        // Headers are gone: the error handler cannot answer. Cut the response
        // (the client sees no clean end) and say why, once, with the worker's
        // stack: the body ends without an error, so Fastify does not log it again.
        request.log.error({ err }, `fastify-blocking: ${route.label} failed after its first chunk; the response was cut`)
        body.destroy()
      }
    }
    // Called by the Readable when its reader wants more (its buffer is below,
    // or about to fall below, highWaterMark): the worker may then send up to
    // highWaterMark beyond what it still owes. So the Readable's buffer and
    // the bytes in flight each stay within highWaterMark.
    const grant = (): void => {
      if (finished || body === undefined) return
      // Granted in steps of half the window or more: a credit message per
      // chunk would cost as much as the chunk.
      const credit = highWaterMark - (granted - received)
      if (credit < highWaterMark / 2) return
      granted += credit
      unstall()
      port.postMessage({ type: 'stream:more', credit })
      task.scheduler.resume(task.entry)
    }
    const onClose = (): void => {
      if (finished || raw.writableFinished) return
      // The client went away: the generator's return() runs in the worker.
      finished = true
      unstall()
      raw.removeListener('close', onClose)
      task.scheduler.cancel(task.entry)
      // Told over the port (a worker waiting for credit wakes on it), which is
      // closed once the task is over: the task, and the port's other end with
      // it, may still be in its channel's outbox.
      port.postMessage({ type: 'stream:cancel' })
      void task.entry.promise.then(() => port.close(), () => port.close())
      body?.destroy()
      resolve(undefined)
    }
    raw.once('close', onClose)

    const onMessage = (message: StreamMessage): void => {
      if (finished) return
      // What the generator logged (on its thread's log port) goes before its end or its error.
      if (task !== undefined && message.type !== 'stream:chunk') task.scheduler.drainLogs(task.entry)
      switch (message.type) {
        case 'stream:chunk': {
          const { chunk } = message
          received += chunk.byteLength
          if (body === undefined) {
            body = new Readable({ highWaterMark, read: grant })
            applyHead(reply, message.head)
            timing('until the first chunk')
            resolve(body)
          }
          // A view over the transferred buffer: no copy.
          body.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength))
          if (granted - received <= 0) {
            task.scheduler.pause(task.entry)
            if (route.options.stallTimeout > 0 && stall === undefined) stall = setTimeout(stalled, route.options.stallTimeout).unref()
          }
          break
        }
        case 'stream:end': {
          const { outcome } = message
          if (outcome.logs !== undefined) writeLogs(request.log, outcome.logs)
          if (outcome.background !== undefined) background.fromWorker(reply, outcome.background)
          finish()
          if (body === undefined) {
            applyHead(reply, outcome)
            timing()
            resolve(undefined)
          } else {
            body.push(null)
          }
          break
        }
        case 'stream:error': {
          const { outcome } = message
          if (outcome.logs !== undefined) writeLogs(request.log, outcome.logs)
          fail(reviveError(outcome.value))
          break
        }
        default:
          // An unknown message is a bug on one side: end the stream loudly.
          fail(unknownMessage('stream', message))
      }
    }
    port.on('message', onMessage)

    if (task.returned) {
      // The handler has returned: the stream may send its first chunk.
      granted = highWaterMark
      port.postMessage({ type: 'stream:more', credit: highWaterMark })
    }
    task.entry.promise.then((outcome) => {
      // The task ends after its last message was posted; a task that failed
      // before streaming (its module did not load) ends with an error outcome;
      // a stream whose client went away sends its log lines with the task.
      if (outcome.kind === PayloadKind.Error) {
        if (outcome.logs !== undefined) writeLogs(request.log, outcome.logs)
        fail(reviveError(outcome.value))
      } else if (outcome.kind === PayloadKind.Skipped) {
        if (outcome.logs !== undefined) writeLogs(request.log, outcome.logs)
        // Cancelled before this side saw its client leave (a returned stream
        // whose client left while its handler ran): nothing is left to send.
        if (!finished) {
          finish()
          body?.destroy()
          resolve(undefined)
        }
      }
    }, fail)
  })
}
