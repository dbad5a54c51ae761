// A blocking route: the request snapshot goes out, the worker's reply is
// replayed on Fastify's reply. Everything else (hooks, validation, serializers,
// the error handler) stays Fastify's: only the handler moves.
import type { FastifyReply, FastifyRequest } from 'fastify'
import { ServerResponse } from 'node:http'
import { Socket } from 'node:net'
import { FST_BLOCKING_NOT_CLONEABLE, FST_BLOCKING_QUEUE_FULL, FST_BLOCKING_UNDER_PRESSURE } from './errors.js'
import { uncloneable } from '../workers/clone.js'
import type { ResolvedRouteOptions } from './options.js'
import type { Background } from './background.js'
import type { Meter, Entry } from './lane.js'
import type { Scheduler } from './scheduler.js'
import { startStream, streamFrom } from './stream.js'
import { closeAfterLimit, multipartBody, startUpload, type Upload } from './multipart.js'
import type { MessagePort } from 'node:worker_threads'
import { PayloadKind, type HandleTask, type Head, type Outcome, type RequestSnapshot, type SerializedError } from '../workers/protocol.js'
import { reviveError, writeLogs } from './logs.js'

export { reviveError, writeLogs }

/** Marks a handler this plugin made, so that a route seen twice (the automatic HEAD route) is not wrapped twice. */
export const kBlockingHandler = Symbol('fastify-blocking.handler')

export interface BlockingRoute {
  /** The handler's identity (lib/define.ts). */
  fn: string
  /** Its number on the threads' channels (threads.ts). */
  number: number
  /** `GET /users/:id`: for errors and logs. */
  label: string
  /** The route's pattern. */
  url: string
  /** Its number on the threads' channels: its config travels once (threads.ts routeConfigs). */
  route: number
  /** A generator handler: the response streams (stream.ts). */
  generator: boolean
  options: ResolvedRouteOptions
  /** This route's counts and timings (stats().routes). */
  meter: Meter
}

/** A submission refused for load: the client is told when to come back. */
export function refused (reply: FastifyReply, scheduler: Scheduler, err: unknown): void {
  if (err instanceof FST_BLOCKING_QUEUE_FULL || err instanceof FST_BLOCKING_UNDER_PRESSURE) reply.header('retry-after', scheduler.retryAfter())
}

/** Adds this task's queue wait and run time to the response's Server-Timing header. */
export function serverTiming (reply: FastifyReply, scheduler: Scheduler, entry: Entry, run = 'run in worker'): void {
  const timing = scheduler.timing(entry)
  if (timing === undefined || reply.sent) return
  const value = `blocking-wait;dur=${timing.wait.toFixed(2)};desc="queue wait", blocking-run;dur=${timing.run.toFixed(2)};desc="${run}"`
  const previous = reply.getHeader('server-timing')
  reply.header('server-timing', previous === undefined ? value : `${String(previous)}, ${value}`)
}

/** The payload of an outcome whose log lines (a worker that could not load the function says why there) go to `log`. */
export function loggedPayloadOf (log: FastifyRequest['log'], outcome: Outcome): unknown {
  if (outcome.logs !== undefined) writeLogs(log, outcome.logs)
  return payloadOf(outcome)
}

/** The payload an outcome carries, as the main thread should use it. */
export function payloadOf (outcome: Outcome): unknown {
  switch (outcome.kind) {
    case PayloadKind.Bytes: {
      const bytes = outcome.value as Uint8Array
      // A view over the transferred buffer: no copy.
      return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    }
    case PayloadKind.Error:
      throw reviveError(outcome.value as SerializedError)
    default:
      return outcome.value
  }
}

/** Status, headers and cookies the worker's reply set, applied to Fastify's. */
export function applyHead (reply: FastifyReply, head: Head | undefined): void {
  if (head === undefined) return
  if (head.status !== undefined) reply.code(head.status)
  if (head.headers !== undefined) reply.headers(head.headers)
  if (head.cookies !== undefined) {
    // @fastify/cookie's own methods: signing and serializing happen as for an inline handler.
    const cookies = reply as unknown as {
      setCookie: (name: string, value: string, options?: object) => void
      clearCookie: (name: string, options?: object) => void
    }
    for (const call of head.cookies) {
      if (call.value === undefined) cookies.clearCookie(call.name, call.options)
      else cookies.setCookie(call.name, call.value, call.options)
    }
  }
}

function deliver (request: FastifyRequest, reply: FastifyReply, outcome: Outcome, background: Background, route: BlockingRoute): unknown {
  if (outcome.logs !== undefined) writeLogs(request.log, outcome.logs)
  if (outcome.kind === PayloadKind.Skipped) return undefined
  applyHead(reply, outcome)
  if (outcome.background !== undefined) background.fromWorker(reply, outcome.background)
  // A returned stream flows on the port the outcome carries.
  if (outcome.kind === PayloadKind.Stream) return streamFrom(outcome.value as MessagePort, route, background, request, reply)
  return payloadOf(outcome)
}

/**
 * The request as a worker sees it: plain data, cloned on the way. Throws
 * FST_BLOCKING_NOT_CLONEABLE, naming it, for a request property (see
 * requestProperties) that cannot cross threads.
 */
export function snapshotOf (request: FastifyRequest, reply: FastifyReply, route: BlockingRoute): RequestSnapshot {
  const snapshot: RequestSnapshot = {
    id: request.id,
    method: request.method,
    url: request.url,
    routeUrl: route.url,
    params: request.params,
    query: request.query,
    headers: request.headers,
    body: request.body,
    bodyIsBuffer: Buffer.isBuffer(request.body),
    ip: request.ip,
    hostname: request.hostname,
    protocol: request.protocol,
    route: route.route
  }
  const names = route.options.requestProperties
  if (names.length > 0) {
    const properties: Record<string, unknown> = {}
    for (const name of names) {
      let problem: string | undefined
      try {
        const value = (request as unknown as Record<string, unknown>)[name]
        problem = uncloneable(value)
        properties[name] = value
      } catch (err) {
        problem = `reading it threw: ${(err as Error).message}`
      }
      if (problem !== undefined) {
        throw new FST_BLOCKING_NOT_CLONEABLE(`${route.label}: request.${name} cannot be sent to a worker: ${problem.replace(/^at /, `at request.${name}`)}`)
      }
    }
    snapshot.properties = properties
  }
  if (typeof (reply as { setCookie?: unknown }).setCookie === 'function') snapshot.cookies = true
  return snapshot
}

const kInFlight = Symbol('fastify-blocking.in-flight')
type WatchedSocket = Socket & { [kInFlight]?: Set<Entry> }

/**
 * Cancels `entry` (scheduler.cancel()) if its client goes away before it
 * settles. A socket is watched once, with one 'close' listener for every
 * request it carries, not one listener a request; a response that is not on
 * a socket of its own (app.inject(), HTTP/2) is watched by itself, when it is
 * known (`reply`). Returns what unwatch() takes.
 */
export function watchClient (request: FastifyRequest, reply: FastifyReply | undefined, scheduler: Scheduler, entry: Entry): Set<Entry> | (() => void) {
  const socket = request.raw.socket as WatchedSocket | undefined
  if (socket instanceof Socket && (reply === undefined || reply.raw instanceof ServerResponse)) {
    let inFlight = socket[kInFlight]
    if (inFlight === undefined) {
      const entries = new Set<Entry>()
      inFlight = entries
      socket[kInFlight] = entries
      socket.once('close', () => {
        for (const gone of entries) scheduler.cancel(gone)
        entries.clear()
      })
    }
    // Gone before its handler was called: its 'close' has been and gone.
    if (socket.destroyed) scheduler.cancel(entry)
    else inFlight.add(entry)
    return inFlight
  }
  if (reply === undefined) return () => {}
  const raw = reply.raw
  const onClose = (): void => {
    if (!raw.writableFinished) scheduler.cancel(entry)
  }
  raw.once('close', onClose)
  return () => raw.removeListener('close', onClose)
}

export function unwatch (watched: Set<Entry> | (() => void), entry: Entry): void {
  if (typeof watched === 'function') watched()
  else watched.delete(entry)
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
          return deliver(request, reply, outcome, background, route)
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
        await cleanup()
        if (timed) serverTiming(reply, scheduler, entry)
        try {
          return deliver(request, reply, outcome, background, route)
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
