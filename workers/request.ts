// The request and reply a blocking handler receives in the worker. Both are
// cheap to make: signal and log are only built when the handler reads them.
import { FST_BLOCKING_HANDLER_NOT_DEFINED, FST_BLOCKING_NOT_CLONEABLE, FST_BLOCKING_NOT_IN_WORKER, FST_BLOCKING_NOT_SERIALIZABLE, FST_BLOCKING_QUEUE_FULL } from '../lib/common/errors.js'
import { definitionOf } from '../lib/common/define.js'
import { copyBytes, uncloneable } from '../lib/common/clone.js'
import { encodeArgs } from '../lib/common/json.js'
import { kTransfer, serializeError, type Outbound } from './outcome.js'
import { createSignal } from './signal.js'
import type { SlotTable } from '../lib/common/slots.js'
import type { MessagePort } from 'node:worker_threads'
import { GAUGE_BACKGROUND_LIMIT, GAUGE_BACKGROUND_QUEUED, GAUGE_DURABLE, type BackgroundCall, type CookieCall, type Head, type LogLine, type LogMessage, type Outcome, type RequestSnapshot } from '../lib/common/protocol.js'

type Level = LogLine['level']
const LEVELS: readonly Level[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal']

/** This thread's log port (SessionTask.logs): lines leave the thread on it as they are written. */
let logPort: MessagePort | undefined

export function setLogPort (port: MessagePort): void {
  logPort = port
}

/**
 * A line leaves the thread when it is written, on the log port, tagged with
 * the task's slot: a handler that then blocks for good (its thread is
 * terminated at its timeout) has still said what it said. The main thread
 * does not listen on that port (no message event per line): it takes the
 * lines synchronously when the task's outcome arrives, or when the thread is
 * lost, and writes them with the request's logger (LogMessage). Once the
 * task's outcome is built (seal()), lines are kept instead, for a returned
 * stream's end, or dropped: the slot may belong to another task by then.
 */
function write (state: ReplyState, line: LogLine): void {
  if (state.slot >= 0 && logPort !== undefined) {
    try {
      logPort.postMessage([state.slot, line] satisfies LogMessage)
      return
    } catch {
      // Checked values always clone; should one not, the line goes with the outcome.
    }
  }
  state.logs.push(line)
}

function createLogger (state: ReplyState): Record<Level, (a: unknown, b?: unknown) => void> {
  const log = {} as Record<Level, (a: unknown, b?: unknown) => void>
  for (const level of LEVELS) {
    log[level] = (a: unknown, b?: unknown) => {
      if (typeof a === 'string') {
        write(state, { level, msg: a })
      } else if (a !== null && typeof a === 'object') {
        const line: LogLine = { level }
        loggable(a as Record<string, unknown>, line)
        if (b !== undefined) line.msg = String(b)
        write(state, line)
      } else {
        write(state, { level, msg: String(a) })
      }
    }
  }
  return log
}

/**
 * Copies what can cross threads. Errors go as serialized errors, named in
 * `line.errors`, and are rebuilt on the main thread so that the logger's
 * error serializer sees real errors.
 */
function loggable (obj: Record<string, unknown>, line: LogLine): void {
  if (obj instanceof Error) {
    line.obj = { err: serializeError(obj) }
    line.errors = ['err']
    return
  }
  const out: Record<string, unknown> = {}
  for (const key of Object.keys(obj)) {
    const value = obj[key]
    if (value instanceof Error) {
      out[key] = serializeError(value)
      ;(line.errors ??= []).push(key)
    } else if (uncloneable(value) === undefined) {
      out[key] = value
    }
  }
  line.obj = out
}

/**
 * The worker's request. Its own properties are the contract's names only
 * (plus the properties `requestProperties` names): what it needs of the
 * plugin (the slot, the reply's log lines) is private.
 */
export class WorkerRequest {
  readonly id: string
  readonly method: string
  readonly url: string
  readonly routeUrl: string
  readonly params: unknown
  readonly query: unknown
  readonly headers: RequestSnapshot['headers']
  body: unknown
  readonly ip: string
  readonly hostname: string
  readonly protocol: 'http' | 'https'
  readonly routeOptions: { readonly config: unknown }
  declare files?: unknown[]
  readonly #reply: WorkerReply
  readonly #slots: SlotTable
  readonly #slot: number
  #signal: AbortSignal | undefined
  #log: Record<Level, (a: unknown, b?: unknown) => void> | undefined

  constructor (snapshot: RequestSnapshot, config: unknown, reply: WorkerReply, slots: SlotTable, slot: number) {
    this.id = snapshot.id
    this.method = snapshot.method
    this.url = snapshot.url
    this.routeUrl = snapshot.routeUrl
    this.params = snapshot.params
    this.query = snapshot.query
    this.headers = snapshot.headers
    this.body = snapshot.bodyIsBuffer === true ? asBuffer(snapshot.body as Uint8Array) : snapshot.body
    this.ip = snapshot.ip
    this.hostname = snapshot.hostname
    this.protocol = snapshot.protocol
    this.routeOptions = { config }
    // Names were checked at startup not to shadow the request's own (options.ts).
    if (snapshot.properties !== undefined) Object.assign(this, snapshot.properties)
    this.#reply = reply
    this.#slots = slots
    this.#slot = slot
  }

  get signal (): AbortSignal {
    this.#signal ??= createSignal(this.#slots, this.#slot)
    return this.#signal
  }

  get log (): Record<Level, (a: unknown, b?: unknown) => void> {
    this.#log ??= createLogger(stateOf(this.#reply))
    return this.#log
  }
}

/** Buffers arrive as plain Uint8Arrays (structured clone drops their class): view them as Buffers again, without a copy. */
export function asBuffer (bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
}

/**
 * Arguments of a background task called in a worker: checked now (an error at
 * the call, not a silent drop later), bytes copied so that the caller keeps
 * its own, and the copies transferred. Returns the indexes of Buffer arguments.
 */
export function prepareArgs (label: string, args: unknown[], transfer: ArrayBuffer[]): number[] | undefined {
  const problem = uncloneable(args)
  if (problem !== undefined) {
    throw new FST_BLOCKING_NOT_CLONEABLE(`${label}: an argument cannot be sent to a worker: ${problem.replace(/^at \[(\d+)\]/, 'argument $1')}`)
  }
  let buffers: number[] | undefined
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]
    if (ArrayBuffer.isView(arg) || arg instanceof ArrayBuffer) {
      const copy = copyBytes(arg)
      transfer.push(copy.buffer as ArrayBuffer)
      if (Buffer.isBuffer(arg)) (buffers ??= []).push(i)
      args[i] = arg instanceof ArrayBuffer ? copy.buffer : copy
    }
  }
  return buffers
}

/** What a worker's reply collects, out of the handler's sight. */
interface ReplyState {
  status?: number
  headers?: Record<string, string | number | string[]>
  background?: BackgroundCall[]
  cookies?: CookieCall[]
  /** The task's slot while its lines go out as written (see write()); -1 once its outcome is built. */
  slot: number
  /** Lines kept for the outcome: written after seal(), or without a log port. */
  readonly logs: LogLine[]
  /** Buffers the outcome moves instead of copying. */
  readonly transfer: ArrayBuffer[]
  readonly gauges: Int32Array
}

let stateOf: (reply: WorkerReply) => ReplyState

/**
 * The task's outcome is being built: lines written from now on are kept (not
 * sent under a slot that may be reused). Returns those kept so far, if any.
 */
export function seal (reply: WorkerReply): LogLine[] | undefined {
  const state = stateOf(reply)
  state.slot = -1
  return state.logs.length > 0 ? state.logs : undefined
}

/** Buffers the outcome moves instead of copying (background tasks' arguments). */
export function transferOf (reply: WorkerReply): ArrayBuffer[] | undefined {
  const { transfer } = stateOf(reply)
  return transfer.length > 0 ? transfer : undefined
}

/** The status, headers and cookies set so far (a stream's, at its first chunk). */
export function headOf (reply: WorkerReply): Head {
  const state = stateOf(reply)
  const head: Head = {}
  if (state.status !== undefined) head.status = state.status
  if (state.headers !== undefined) head.headers = state.headers
  if (state.cookies !== undefined) {
    head.cookies = state.cookies
    // Sent once: a stream's end does not set them again.
    state.cookies = undefined
  }
  return head
}

/** The reply a request gets in `slot`: with setCookie() and clearCookie() when the app has @fastify/cookie. */
export function createReply (snapshot: RequestSnapshot, gauges: Int32Array, slot: number): WorkerReply {
  return snapshot.cookies === true ? new CookieReply(gauges, slot) : new WorkerReply(gauges, slot)
}

/**
 * Copies what the handler set onto the outcome of a task whose stream goes
 * on after it (a returned stream), and starts afresh: what is logged later
 * goes with the stream's end, and nothing is sent twice.
 */
export function finishHead (reply: WorkerReply, outcome: Outbound): Outbound {
  const state = stateOf(reply)
  finish(reply, outcome)
  // Background tasks' arguments, moved with this outcome.
  outcome[kTransfer] = state.transfer.splice(0)
  if (outcome.logs !== undefined) outcome.logs = outcome.logs.slice()
  state.logs.length = 0
  state.background = undefined
  state.status = undefined
  state.headers = undefined
  state.cookies = undefined
  return outcome
}

/** Copies what the handler set onto the outcome. */
export function finish (reply: WorkerReply, outcome: Outcome): Outcome {
  const state = stateOf(reply)
  state.slot = -1
  if (state.background !== undefined) outcome.background = state.background
  if (state.status !== undefined) outcome.status = state.status
  if (state.headers !== undefined) outcome.headers = state.headers
  if (state.cookies !== undefined) outcome.cookies = state.cookies
  if (state.logs.length > 0) outcome.logs = state.logs
  return outcome
}

/**
 * The worker's reply: the contract's methods, on the prototype. Fastify's
 * reply methods that cannot work here throw, saying what to do instead
 * (NOT_IN_WORKER below).
 */
export class WorkerReply {
  readonly #state: ReplyState

  static {
    stateOf = (reply) => reply.#state
  }

  constructor (gauges: Int32Array, slot: number) {
    this.#state = { logs: [], transfer: [], gauges, slot }
  }

  code (statusCode: number): this {
    if (!Number.isInteger(statusCode) || statusCode < 100 || statusCode > 599) {
      throw new RangeError(`reply.code(): ${String(statusCode)} is not a valid HTTP status code`)
    }
    this.#state.status = statusCode
    return this
  }

  status (statusCode: number): this {
    return this.code(statusCode)
  }

  header (name: string, value: string | number | string[]): this {
    if (typeof name !== 'string' || name === '') throw new TypeError('reply.header(): name must be a non-empty string')
    // Checked here: a value the pool cannot send back would end the thread.
    const problem = uncloneable(value)
    if (problem !== undefined) throw new FST_BLOCKING_NOT_CLONEABLE(`reply.header('${name}'): the value cannot be sent to the main thread: ${problem}`)
    this.#state.headers ??= {}
    this.#state.headers[name.toLowerCase()] = value
    return this
  }

  headers (values: Record<string, string | number | string[]>): this {
    for (const name of Object.keys(values)) this.header(name, values[name]!)
    return this
  }

  type (contentType: string): this {
    return this.header('content-type', contentType)
  }

  redirect (url: string, statusCode = 302): this {
    return this.header('location', url).code(statusCode)
  }

  background (task: Function, ...args: unknown[]): this {
    const definition = definitionOf(task)
    if (definition === undefined) {
      throw new FST_BLOCKING_HANDLER_NOT_DEFINED('reply.background(task): task was not made with defineTask, so a worker cannot find it')
    }
    const label = `reply.background(${definition.name})`
    const { gauges } = this.#state
    if (Atomics.load(gauges, GAUGE_BACKGROUND_QUEUED) >= Atomics.load(gauges, GAUGE_BACKGROUND_LIMIT)) {
      throw new FST_BLOCKING_QUEUE_FULL(`${label}: the background queue is full`)
    }
    if (Atomics.load(gauges, GAUGE_DURABLE) === 1) {
      const { problem } = encodeArgs(args)
      if (problem !== undefined) throw new FST_BLOCKING_NOT_SERIALIZABLE(`${label}: ${problem} (a durable task's arguments are stored as JSON)`)
    }
    const buffers = prepareArgs(label, args, this.#state.transfer)
    const call: BackgroundCall = { fn: definition.id, args }
    if (buffers !== undefined) call.buffers = buffers
    ;(this.#state.background ??= []).push(call)
    return this
  }
}

/** Queues a cookie call, replayed by @fastify/cookie on the main thread (signing included). */
function queueCookie (reply: WorkerReply, method: string, name: string, value: string | undefined, options: unknown): void {
  if (typeof name !== 'string' || name === '') throw new TypeError(`reply.${method}(): name must be a non-empty string`)
  const call: CookieCall = { name }
  if (value !== undefined) call.value = value
  if (options !== undefined) {
    if (options === null || typeof options !== 'object') throw new TypeError(`reply.${method}('${name}'): options must be an object`)
    const problem = uncloneable(options)
    if (problem !== undefined) {
      throw new FST_BLOCKING_NOT_CLONEABLE(`reply.${method}('${name}'): the options cannot be sent to the main thread: ${problem.replace(/^at /, 'at options')}`)
    }
    call.options = options as Record<string, unknown>
  }
  const state = stateOf(reply)
  ;(state.cookies ??= []).push(call)
}

/** The reply of a request on an app that has @fastify/cookie. */
export class CookieReply extends WorkerReply {
  setCookie (name: string, value: string, options?: Record<string, unknown>): this {
    if (typeof value !== 'string') throw new TypeError(`reply.setCookie('${String(name)}'): value must be a string`)
    queueCookie(this, 'setCookie', name, value, options)
    return this
  }

  clearCookie (name: string, options?: Record<string, unknown>): this {
    queueCookie(this, 'clearCookie', name, undefined, options)
    return this
  }
}

/** What to do instead of each of Fastify's reply members that a worker's reply does not have. */
const NOT_IN_WORKER: Record<string, string> = {
  send: 'return the payload from the handler instead (or yield chunks from a generator handler)',
  serialize: 'return the value: the route\'s serializer runs on the main thread',
  getHeader: 'headers set by hooks stay on the main thread; set yours with reply.header()',
  getHeaders: 'headers set by hooks stay on the main thread; set yours with reply.headers()',
  hasHeader: 'headers set by hooks stay on the main thread; set yours with reply.header()',
  removeHeader: 'headers set by hooks stay on the main thread; remove them in an onSend hook',
  hijack: 'the socket stays on the main thread; use an inline handler to take it over',
  callNotFound: 'throw an error whose statusCode is 404 instead',
  sendFile: 'return fs.createReadStream(path) instead: a returned stream is streamed',
  download: 'return fs.createReadStream(path) with reply.header(\'content-disposition\', ...) instead',
  view: 'render in the worker and return the string, with reply.type(\'text/html\')',
  trailer: 'trailers are not supported in a worker',
  writeEarlyHints: 'send early hints from a hook on the main thread',
  setCookie: 'register @fastify/cookie on the app: then the worker\'s reply has it',
  clearCookie: 'register @fastify/cookie on the app: then the worker\'s reply has it'
}
const PROPERTIES_NOT_IN_WORKER: Record<string, string> = {
  raw: 'the response stays on the main thread; return the payload instead',
  request: 'use the handler\'s first argument',
  log: 'use request.log: its lines reach the app\'s logger with the request\'s reqId',
  server: 'the app stays on the main thread'
}

function notInWorker (member: string, advice: string): Error {
  return new FST_BLOCKING_NOT_IN_WORKER(`${member} is not available in a blocking handler, which runs in a worker thread: ${advice}`)
}

for (const [name, advice] of Object.entries(NOT_IN_WORKER)) {
  Object.defineProperty(WorkerReply.prototype, name, {
    value: function () { throw notInWorker(`reply.${name}()`, advice) },
    writable: true,
    configurable: true
  })
}
for (const [name, advice] of Object.entries(PROPERTIES_NOT_IN_WORKER)) {
  Object.defineProperty(WorkerReply.prototype, name, {
    get () { throw notInWorker(`reply.${name}`, advice) },
    configurable: true
  })
}
