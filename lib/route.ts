// A blocking route: the request snapshot goes out, the worker's reply is
// replayed on Fastify's reply. Everything else (hooks, validation, serializers,
// the error handler) stays Fastify's: only the handler moves.
import type { FastifyReply, FastifyRequest } from 'fastify'
import { PayloadKind, type HandleTask, type Outcome } from './common/protocol.js'
import type { Background } from './background.js'
import { closeAfterLimit, multipartBody, startUpload, type Upload } from './multipart.js'
import { writeLogs } from './logs.js'
import { applyHead, payloadOf, refused, serverTiming } from './reply.js'
import { snapshotOf, unwatch, watchClient, type BlockingRoute } from './request.js'
import type { Entry } from './lane.js'
import type { Scheduler } from './scheduler.js'
import { startStream, streamFrom } from './stream.js'
import { kBlockingHandler } from './symbols.js'

function deliver (request: FastifyRequest, reply: FastifyReply, outcome: Outcome, background: Background, route: BlockingRoute, scheduler: Scheduler, entry: Entry): unknown {
  if (outcome.logs !== undefined) writeLogs(request.log, outcome.logs)
  if (outcome.kind === PayloadKind.Skipped) return undefined
  applyHead(reply, outcome)
  if (outcome.background !== undefined) background.fromWorker(reply, outcome.background)
  // A returned stream flows on the port the outcome carries.
  if (outcome.kind === PayloadKind.Stream) return streamFrom(outcome.value, route, background, request, reply, scheduler, entry)
  return payloadOf(outcome)
}

export function createBlockingHandler (route: BlockingRoute, scheduler: Scheduler, background: Background) {
  const { number, label, meter } = route
  const { timeout } = route.options
  const timed = route.options.serverTiming
  // A plain function, not an arrow: Fastify binds handlers to their encapsulated instance.
  function blockingHandler (request: FastifyRequest, reply: FastifyReply): Promise<unknown> {
    let task: HandleTask
    try {
      task = { type: 'blocking:handle', fn: number, slot: -1, request: snapshotOf(request, reply, route) }
    } catch (err) {
      return Promise.reject(err)
    }
    // A multipart body is parsed in the worker: only its bytes pass through here.
    const multipart = multipartBody(request)
    let upload: Upload | undefined
    if (multipart !== undefined) {
      upload = startUpload(multipart.body, multipart.contentType, { limits: route.options.multipartLimits, spoolThreshold: route.options.spoolThreshold, stallTimeout: route.options.stallTimeout, log: request.log })
      task.upload = upload.spec
    }
    let entry: ReturnType<Scheduler['submit']>
    try {
      entry = scheduler.submit({
        task,
        lane: 'request',
        label,
        timeout,
        transferList: upload === undefined ? undefined : [upload.spec.port],
        // An upload waits for its client as a stream does, and counts as one.
        stream: upload !== undefined,
        meter,
        log: request.log
      })
    } catch (err) {
      refused(reply, scheduler, err)
      void upload?.cleanup()
      return Promise.reject(err)
    }
    if (upload !== undefined) {
      // While the body arrives, the task waits for its client without holding a thread's place.
      const submitted = entry
      upload.onWaiting = () => scheduler.pause(submitted)
      upload.onParsed = () => scheduler.resume(submitted)
    }
    // The client went away: a queued task is dropped, a running one sees
    // request.signal abort (and a running parse, the body's abort). The
    // upload's channel is released once the task is over (below): the pool
    // may not have sent the task, and the port it carries, yet.
    const watched = watchClient(request, reply, scheduler, entry)
    if (upload === undefined) {
      return entry.promise.then(
        (outcome) => {
          unwatch(watched, entry)
          if (timed) serverTiming(reply, scheduler, entry)
          return deliver(request, reply, outcome, background, route, scheduler, entry)
        },
        (err: unknown) => {
          unwatch(watched, entry)
          if (timed) serverTiming(reply, scheduler, entry)
          throw err
        }
      )
    }
    const { cleanup } = upload
    return entry.promise.then(
      async (outcome) => {
        unwatch(watched, entry)
        // A returned stream may read a spooled file: the files go at its end
        // (entry.promise now stands for it, see Scheduler.streaming()).
        if (outcome.kind === PayloadKind.Stream) void entry.promise.then(cleanup, cleanup)
        else await cleanup()
        if (timed) serverTiming(reply, scheduler, entry)
        try {
          return deliver(request, reply, outcome, background, route, scheduler, entry)
        } catch (err) {
          closeAfterLimit(reply, err)
          throw err
        }
      },
      async (err: unknown) => {
        unwatch(watched, entry)
        await cleanup()
        if (timed) serverTiming(reply, scheduler, entry)
        throw err
      }
    )
  }
  function streamingHandler (request: FastifyRequest, reply: FastifyReply): Promise<unknown> {
    return startStream(route, scheduler, background, request, reply)
  }
  const handler = route.generator ? streamingHandler : blockingHandler
  Object.defineProperty(handler, kBlockingHandler, { value: route })
  return handler
}
