// A blocking route: the request snapshot goes out, the worker's reply is
// replayed on Fastify's reply. Everything else (hooks, validation, serializers,
// the error handler) stays Fastify's: only the handler moves.
import type { Readable } from 'node:stream'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { PayloadKind, type HandleTask, type Outcome } from './common/protocol.js'
import type { Background } from './background.js'
import { closeAfterLimit, multipartBody, startUpload, type UploadSender } from './multipart.js'
import { writeLogs } from './logs.js'
import { applyHead, payloadOf, refused, serverTiming } from './reply.js'
import { snapshotOf, unwatch, watchClient, type BlockingRoute } from './request.js'
import type { Entry } from './lane.js'
import type { Scheduler } from './scheduler.js'
import { startStream, streamFrom } from './stream.js'
import { kBlockingHandler } from './symbols.js'

export function createBlockingHandler (route: BlockingRoute, scheduler: Scheduler, background: Background) {
  const blocking = new RouteHandler(route, scheduler, background)
  // Plain functions, not arrows: Fastify binds handlers to their encapsulated instance.
  function blockingHandler (request: FastifyRequest, reply: FastifyReply): Promise<unknown> {
    return blocking.handle(request, reply)
  }
  function streamingHandler (request: FastifyRequest, reply: FastifyReply): Promise<unknown> {
    return startStream(route, scheduler, background, request, reply)
  }
  const handler = route.generator ? streamingHandler : blockingHandler
  Object.defineProperty(handler, kBlockingHandler, { value: route })
  return handler
}

/** One a route, made at registration; its methods run once a request. */
class RouteHandler {
  constructor (
    private readonly route: BlockingRoute,
    private readonly scheduler: Scheduler,
    private readonly background: Background
  ) {}

  handle (request: FastifyRequest, reply: FastifyReply): Promise<unknown> {
    let task: HandleTask
    try {
      task = { type: 'blocking:handle', fn: this.route.number, slot: -1, request: snapshotOf(request, reply, this.route) }
    } catch (err) {
      return Promise.reject(err)
    }
    // A multipart body is parsed in the worker: only its bytes pass through here.
    const multipart = multipartBody(request)
    if (multipart === undefined) return this.plain(task, request, reply)
    return this.withUpload(task, request, reply, multipart.body, multipart.contentType)
  }

  private plain (task: HandleTask, request: FastifyRequest, reply: FastifyReply): Promise<unknown> {
    let entry: Entry
    try {
      entry = this.submit(task, request, undefined)
    } catch (err) {
      refused(reply, this.scheduler, err)
      return Promise.reject(err)
    }
    // The client went away: a queued task is dropped, a running one sees request.signal abort.
    const watched = watchClient(request, reply, this.scheduler, entry)
    return entry.promise.then(
      (outcome) => {
        unwatch(watched, entry)
        this.timing(reply, entry)
        return this.deliver(request, reply, outcome, entry)
      },
      (err: unknown) => {
        unwatch(watched, entry)
        this.timing(reply, entry)
        throw err
      }
    )
  }

  private withUpload (task: HandleTask, request: FastifyRequest, reply: FastifyReply, body: Readable, contentType: string): Promise<unknown> {
    const { options } = this.route
    const upload = startUpload(body, contentType, { limits: options.multipartLimits, spoolThreshold: options.spoolThreshold, stallTimeout: options.stallTimeout, log: request.log })
    task.upload = upload.spec
    let entry: Entry
    try {
      entry = this.submit(task, request, upload)
    } catch (err) {
      refused(reply, this.scheduler, err)
      void upload.cleanup()
      return Promise.reject(err)
    }
    // While the body arrives, the task waits for its client without holding a thread's place.
    upload.attach(this.scheduler, entry)
    // The client went away: a queued task is dropped, a running one sees
    // request.signal abort (and a running parse, the body's abort). The
    // upload's channel is released once the task is over (below): the pool
    // may not have sent the task, and the port it carries, yet.
    const watched = watchClient(request, reply, this.scheduler, entry)
    return entry.promise.then(
      async (outcome) => {
        unwatch(watched, entry)
        // A returned stream may read a spooled file: the files go at its end
        // (entry.promise now stands for it, see Scheduler.streaming()).
        if (outcome.kind === PayloadKind.Stream) void entry.promise.then(upload.cleanup, upload.cleanup)
        else await upload.cleanup()
        this.timing(reply, entry)
        try {
          return this.deliver(request, reply, outcome, entry)
        } catch (err) {
          closeAfterLimit(reply, err)
          throw err
        }
      },
      async (err: unknown) => {
        unwatch(watched, entry)
        await upload.cleanup()
        this.timing(reply, entry)
        throw err
      }
    )
  }

  private submit (task: HandleTask, request: FastifyRequest, upload: UploadSender | undefined): Entry {
    return this.scheduler.submit({
      task,
      lane: 'request',
      label: this.route.label,
      timeout: this.route.options.timeout,
      transferList: upload === undefined ? undefined : [upload.spec.port],
      // An upload waits for its client as a stream does, and counts as one.
      stream: upload !== undefined,
      meter: this.route.meter,
      log: request.log
    })
  }

  private deliver (request: FastifyRequest, reply: FastifyReply, outcome: Outcome, entry: Entry): unknown {
    if (outcome.logs !== undefined) writeLogs(request.log, outcome.logs)
    if (outcome.kind === PayloadKind.Skipped) return undefined
    applyHead(reply, outcome)
    if (outcome.background !== undefined) this.background.fromWorker(reply, outcome.background)
    // A returned stream flows on the port the outcome carries.
    if (outcome.kind === PayloadKind.Stream) return streamFrom(outcome.value, this.route, this.background, request, reply, this.scheduler, entry)
    return payloadOf(outcome)
  }

  private timing (reply: FastifyReply, entry: Entry): void {
    if (this.route.options.serverTiming) serverTiming(reply, this.scheduler, entry)
  }
}
