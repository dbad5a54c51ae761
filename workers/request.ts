// The request and reply a blocking handler receives in the worker. Both are
// cheap to make: signal and log are only built when the handler reads them.
import { serializeError, uncloneable } from './outcome.js'
import { createSignal } from './signal.js'
import type { LogLine, Outcome, RequestSnapshot } from './protocol.js'

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
  readonly body: unknown
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
    this.body = snapshot.body
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

export class WorkerReply {
  #status: number | undefined = undefined
  #headers: Record<string, string | number | string[]> | undefined = undefined
  readonly logs: LogLine[] = []

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

  /** Copies what the handler set onto the outcome. */
  finish (outcome: Outcome): Outcome {
    if (this.#status !== undefined) outcome.status = this.#status
    if (this.#headers !== undefined) outcome.headers = this.#headers
    if (this.logs.length > 0) outcome.logs = this.logs
    return outcome
  }
}
