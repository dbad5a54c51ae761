// The messages both sides speak. This file is part of lib/common/, the leaf
// layer that the main thread (lib/) and the workers (workers/) both import and
// that imports neither: the two sides never import each other, so the whole
// protocol can be read here (test/architecture.test.js keeps it so).
//
// The pools (piscina, tinypool) only start, replace and end threads: the one
// task they run on a thread is its session (SessionTask), which hands the
// thread a MessagePort of ours, its channel, for as long as the thread serves.
// Tasks and outcomes then travel on the channel, several to a message: what
// one event-loop turn produced on one side is posted once (ChannelDown,
// ChannelUp). Handlers are named by small integers, whose names a channel
// learns once (ChannelDown.names). Cancellation, timeouts and start times
// stay in the shared slot table (slots.ts).
import type { MessagePort } from 'node:worker_threads'
import { FST_BLOCKING_PROTOCOL } from './errors.js'
import type { MultipartLimits } from './types.js'

/**
 * Set on globalThis by a worker while it imports a user's module (workers/loader.ts);
 * the plugin reads it when it is registered, to refuse to run inside a worker (lib/index.ts).
 */
export const kWorkerContext = Symbol.for('fastify-blocking.worker')

export interface WorkerContext {
  /** The module being imported, if any. */
  loading: string | undefined
  /** Set by the plugin when something registers it inside a worker. */
  registeredBy: string | undefined
}

/** How a worker learns who it is and where its shared state lives. */
export interface WorkerData {
  /** `Int32Array` over the slot table (see the layout below). */
  slots: SharedArrayBuffer
  /** `Int32Array` of gauges the main thread keeps current for workers (GAUGE_*). */
  gauges: SharedArrayBuffer
  /** Nice increment this thread applies to itself at start (0: normal priority). */
  priority: number
}

// ---------------------------------------------------------------------------
// Slots: one per task handed to the pool, in a shared table whose layout and
// accessors are in slots.ts.
// ---------------------------------------------------------------------------

/** Gauge: background tasks waiting or promised a place in their queue. */
export const GAUGE_BACKGROUND_QUEUED = 0
/** Gauge: the `backgroundQueue` option. */
export const GAUGE_BACKGROUND_LIMIT = 1
/** Gauge: 1 with the `queue` option: reply.background() arguments must survive JSON (lib/common/json.ts). */
export const GAUGE_DURABLE = 2
export const GAUGE_INTS = 3

// ---------------------------------------------------------------------------
// Tasks (main -> worker)
// ---------------------------------------------------------------------------

/** The request as the worker sees it, minus what the worker adds (signal, log, files). */
export interface RequestSnapshot {
  id: string
  method: string
  url: string
  routeUrl: string
  params: unknown
  query: unknown
  headers: Record<string, string | string[] | undefined>
  body: unknown
  /** The body was a Buffer: the worker views the cloned Uint8Array as a Buffer again. */
  bodyIsBuffer?: boolean
  ip: string
  hostname: string
  protocol: 'http' | 'https'
  /** The route's number on the channels: its `config` travels once per channel (ChannelDown.configs). */
  route: number
  /** The request properties named by `requestProperties`, cloned (an absent one is undefined). */
  properties?: Record<string, unknown>
  /** @fastify/cookie is registered: the worker's reply has setCookie() and clearCookie(). */
  cookies?: true
}

export interface HandleTask {
  type: 'blocking:handle'
  /** The handler's number on the channel (its identity, `moduleUrl#n`, travels once: see ChannelDown). */
  fn: number
  slot: number
  request: RequestSnapshot
  /** A multipart body, parsed in the worker before the handler runs. */
  upload?: UploadSpec
}

/** `request.readMultipart()`: parse a multipart body and send back fields and files. */
export interface ParseTask {
  type: 'blocking:parse'
  slot: number
  upload: UploadSpec
}

/** Limits named as in @fastify/multipart (and busboy). */
export type UploadLimits = MultipartLimits

/** How a multipart body reaches a worker: its bytes over `port`, paced by credits. */
export interface UploadSpec {
  port: MessagePort
  contentType: string
  limits: UploadLimits
  spoolThreshold: number
}

/** Main -> worker, on an upload's port. */
export type UploadMessage =
  | { type: 'upload:chunk', chunk: Uint8Array }
  | { type: 'upload:end' }
  /** The client went away mid-body. */
  | { type: 'upload:abort' }

/** Worker -> main, on an upload's port. */
export type UploadControl =
  /**
   * The parser took `credit` bytes: send as much more. `returned`: the
   * buffers of chunks it has copied, transferred back to be freed by the
   * thread that allocated them.
   */
  | { type: 'upload:more', credit: number, returned?: ArrayBuffer[] }
  /** A file is being spooled here: the main thread deletes it if the thread dies. */
  | { type: 'upload:spooled', path: string }
  /** A limit was hit or the body is malformed: stop sending. */
  | { type: 'upload:stop' }
  /** The body is parsed: the handler runs now (the task counts against maxThreads again). */
  | { type: 'upload:parsed' }

export interface RunTask {
  type: 'blocking:run'
  fn: number
  slot: number
  args: unknown[]
  /** Indexes of arguments that were Buffers (they arrive as Uint8Arrays). */
  buffers?: number[] | undefined
}

/** `reply.background(task, ...args)` called in a worker: the main thread runs it after the response. */
export interface BackgroundCall {
  fn: string
  args: unknown[]
  buffers?: number[]
}

/** Sent at `app.ready()`: load these modules and say which identities are missing. */
export interface CheckTask {
  type: 'blocking:check'
  /** Not a slot of the table: a negative ticket that names the outcome. */
  slot: number
  fns: number[]
}

/** A generator handler: its chunks flow over `port`, paced by credits (see StreamMessage). */
export interface StreamTask {
  type: 'blocking:stream'
  fn: number
  slot: number
  request: RequestSnapshot
  port: MessagePort
  /** Bytes the worker may send before it waits for more credit. */
  highWaterMark: number
  upload?: UploadSpec
}

export type Task = HandleTask | RunTask | StreamTask | ParseTask | CheckTask

// ---------------------------------------------------------------------------
// Sessions and channels
// ---------------------------------------------------------------------------

/**
 * The only task a pool runs: it gives the thread its channel and lasts until
 * the main thread releases the thread (ChannelDown 'channel:release') or the
 * thread dies. The thread imports `modules` first, then says it is ready.
 */
export interface SessionTask {
  type: 'blocking:session'
  port: MessagePort
  /** The thread's log port: LogMessages, one per line, as handlers write them. */
  logs: MessagePort
  modules: string[]
}

/**
 * Worker -> main, on a thread's log port: a line a handler wrote with
 * `request.log`, and the slot of its task. Posted when written, so that a
 * handler whose thread is then terminated has its lines out; the main thread
 * has no listener on this port (it costs no message event) and takes what
 * waits there before it reads an outcome batch, when a stream ends, and when
 * the thread is lost.
 */
export type LogMessage = [slot: number, line: LogLine]

/** Main -> worker, on a channel. */
export type ChannelDown =
  /**
   * Tasks to start, in order. `names[i]` is the identity (`moduleUrl#n`) of
   * handler number `from + i`: each number is named once per channel.
   */
  | {
    type: 'channel:tasks'
    tasks: Task[]
    from?: number
    names?: string[]
    /** `configs[i]` is the `config` of route number `configsFrom + i` (RequestSnapshot.route): each is sent once per channel. */
    configsFrom?: number
    configs?: unknown[]
  }
  /** The thread is not needed for now: end the session (the pool may then end the thread). */
  | { type: 'channel:release' }

/** Worker -> main, on a channel. */
export type ChannelUp =
  /** The session's modules are imported: the thread takes tasks. */
  | { type: 'channel:ready', threadId: number, priorityRefused?: string }
  /** Outcomes of finished tasks: slot (or ticket), outcome, slot, outcome, ... */
  | { type: 'channel:outcomes', outcomes: Array<number | Outcome | CheckOutcome> }

/** Worker -> main, on a stream's port. */
export type StreamMessage =
  /** The first chunk carries the status, headers and cookies the handler set before its first yield. */
  | { type: 'stream:chunk', chunk: Uint8Array, head?: Head }
  /** The generator returned; `outcome` carries status and headers if no chunk came, and logs and background calls. */
  | { type: 'stream:end', outcome: Outcome }
  /** The generator threw (before or after its first chunk). */
  | { type: 'stream:error', outcome: ErrorOutcome }

/** Main -> worker, on a stream's port. */
export type StreamControl =
  /** The client read some: produce up to `credit` more bytes. */
  | { type: 'stream:more', credit: number }
  /** The client went away: run the generator's return() and end. */
  | { type: 'stream:cancel' }

// ---------------------------------------------------------------------------
// Outcomes (worker -> main)
// ---------------------------------------------------------------------------

export const PayloadKind = {
  /** No payload (`undefined`): an empty body. */
  Empty: 0,
  /** Sent through the route's serializer. */
  Json: 1,
  /** A string. */
  Text: 2,
  /** A `Uint8Array` whose buffer was transferred (the main thread does not copy it). */
  Bytes: 3,
  /** The function threw; `value` is a SerializedError. */
  Error: 4,
  /** The task was cancelled before it started, and did not run. */
  Skipped: 5,
  /**
   * The handler returned a stream (a Node Readable, a web ReadableStream, a
   * generator object): `value` is a transferred MessagePort on which it flows
   * as a generator handler's chunks do (StreamMessage), once the main thread
   * grants credit. The task does not end here: it goes on as a stream, and
   * a second outcome for its slot ends it at the stream's end.
   */
  Stream: 6
} as const
export type PayloadKind = typeof PayloadKind[keyof typeof PayloadKind]

export interface SerializedError {
  name: string
  message: string
  stack?: string
  code?: string
  statusCode?: number
  /** Other own enumerable properties that could be cloned (e.g. `validation`). */
  props?: Record<string, unknown>
}

export interface LogLine {
  level: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal'
  obj?: Record<string, unknown>
  /** Keys of `obj` that hold a SerializedError, to be rebuilt as errors. */
  errors?: string[]
  msg?: string
}

/** What the worker's reply set beside the payload: the head, log lines, background calls. */
export interface OutcomeExtras {
  /** Set by `reply.code()` in the worker. */
  status?: number
  /** Set by `reply.header()` / `headers()` / `type()` / `redirect()` in the worker. */
  headers?: Record<string, string | number | string[]>
  /** Lines written with `request.log` that did not go out on the log port (see workers/request.ts). */
  logs?: LogLine[]
  /** Background tasks the handler asked for. */
  background?: BackgroundCall[]
  /** `reply.setCookie()` / `reply.clearCookie()` calls in the worker, replayed in order on the main thread. */
  cookies?: CookieCall[]
}

/** The payload of an outcome: `value` is typed by `kind` (see PayloadKind). */
export type Payload =
  | { kind: typeof PayloadKind.Empty, value?: undefined }
  | { kind: typeof PayloadKind.Json, value: unknown }
  | { kind: typeof PayloadKind.Text, value: string }
  | { kind: typeof PayloadKind.Bytes, value: Uint8Array }
  | { kind: typeof PayloadKind.Error, value: SerializedError }
  | { kind: typeof PayloadKind.Skipped, value?: undefined }
  | { kind: typeof PayloadKind.Stream, value: MessagePort }

/** What a task came to, as it crosses back to the main thread. */
export type Outcome = OutcomeExtras & Payload

/** A task that threw (or could not run). */
export type ErrorOutcome = OutcomeExtras & { kind: typeof PayloadKind.Error, value: SerializedError }

/** What the worker's reply set that a response's head carries. */
export type Head = Pick<OutcomeExtras, 'status' | 'headers' | 'cookies'>

/** A cookie set (`value` given) or cleared (no `value`) in the worker, with @fastify/cookie's options. */
export interface CookieCall {
  name: string
  value?: string
  options?: Record<string, unknown>
}

export interface CheckOutcome {
  /** fn identity -> why the worker cannot find it. */
  missing: Record<string, string>
  /** moduleUrl -> how many definitions the module made in the worker. */
  counts: Record<string, number>
  /** Why this thread runs at normal priority although `priority` asked otherwise, if it does. */
  priorityRefused?: string
}

/** The error for a message of the protocol that `where` does not know. */
export function unknownMessage (where: string, message: unknown): Error {
  const type = typeof message === 'object' && message !== null ? (message as { type?: unknown }).type : message
  return new FST_BLOCKING_PROTOCOL(where, JSON.stringify(type) ?? String(type))
}
