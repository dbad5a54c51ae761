// The request and reply a blocking handler receives in the worker. Both are
// cheap to make: signal and log are only built when the handler reads them.
import { FST_BLOCKING_HANDLER_NOT_DEFINED, FST_BLOCKING_NOT_CLONEABLE, FST_BLOCKING_NOT_SERIALIZABLE, FST_BLOCKING_QUEUE_FULL } from '../lib/errors.js'
import { definitionOf } from '../lib/define.js'
import { copyBytes, uncloneable } from './clone.js'
import { encodeArgs } from './json.js'
import { serializeError } from './outcome.js'
import { createSignal } from './signal.js'
import { GAUGE_BACKGROUND_LIMIT, GAUGE_BACKGROUND_QUEUED, GAUGE_DURABLE, type BackgroundCall, type LogLine, type Outcome, type RequestSnapshot } from './protocol.js'

type Level = LogLine['level']
const LEVELS: readonly Level[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal']

/** Logs are kept in order and sent back with the outcome; the main thread writes them with the request's logger. */
function createLogger (lines: LogLine[]): Record<Level, (a: unknown, b?: unknown) => void> {
  const log = {} as Record<Level, (a: unknown, b?: unknown) => void>
  for (const level of LEVELS) {
    log[level] = (a: unknown, b?: unknown) => {
      if (typeof a === 'string') {
        lines.push({ level, msg: a })
      } else if (a !== null && typeof a === 'object') {
        const line: LogLine = { level }
        loggable(a as Record<string, unknown>, line)
        if (b !== undefined) line.msg = String(b)
        lines.push(line)
      } else {
        lines.push({ level, msg: String(a) })
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
  files?: unknown[]
  #signal: AbortSignal | undefined
  #log: Record<Level, (a: unknown, b?: unknown) => void> | undefined

  constructor (snapshot: RequestSnapshot, private readonly reply: WorkerReply, private readonly state: Int32Array, private readonly slot: number) {
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
  }

  get signal (): AbortSignal {
    this.#signal ??= createSignal(this.state, this.slot)
    return this.#signal
  }

  get log (): Record<Level, (a: unknown, b?: unknown) => void> {
    this.#log ??= createLogger(this.reply.logs)
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

export class WorkerReply {
  #status: number | undefined = undefined
  #headers: Record<string, string | number | string[]> | undefined = undefined
  #background: BackgroundCall[] | undefined = undefined
  readonly logs: LogLine[] = []
  /** Buffers the outcome moves instead of copying. */
  readonly transfer: ArrayBuffer[] = []

  constructor (private readonly gauges: Int32Array) {}

  code (statusCode: number): this {
    if (!Number.isInteger(statusCode) || statusCode < 100 || statusCode > 599) {
      throw new RangeError(`reply.code(): ${String(statusCode)} is not a valid HTTP status code`)
    }
    this.#status = statusCode
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
    this.#headers ??= {}
    this.#headers[name.toLowerCase()] = value
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
    if (Atomics.load(this.gauges, GAUGE_BACKGROUND_QUEUED) >= Atomics.load(this.gauges, GAUGE_BACKGROUND_LIMIT)) {
      throw new FST_BLOCKING_QUEUE_FULL(`${label}: the background queue is full`)
    }
    if (Atomics.load(this.gauges, GAUGE_DURABLE) === 1) {
      const { problem } = encodeArgs(args)
      if (problem !== undefined) throw new FST_BLOCKING_NOT_SERIALIZABLE(`${label}: ${problem} (a durable task's arguments are stored as JSON)`)
    }
    const buffers = prepareArgs(label, args, this.transfer)
    const call: BackgroundCall = { fn: definition.id, args }
    if (buffers !== undefined) call.buffers = buffers
    ;(this.#background ??= []).push(call)
    return this
  }

  /** The status and headers set so far (a stream's, at its first chunk). */
  head (): Pick<Outcome, 'status' | 'headers'> {
    const head: Pick<Outcome, 'status' | 'headers'> = {}
    if (this.#status !== undefined) head.status = this.#status
    if (this.#headers !== undefined) head.headers = this.#headers
    return head
  }

  /** Copies what the handler set onto the outcome. */
  finish (outcome: Outcome): Outcome {
    if (this.#background !== undefined) outcome.background = this.#background
    if (this.#status !== undefined) outcome.status = this.#status
    if (this.#headers !== undefined) outcome.headers = this.#headers
    if (this.logs.length > 0) outcome.logs = this.logs
    return outcome
  }
}
