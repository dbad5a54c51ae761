// What a function returned or threw, made ready to cross back to the main thread.
import { copyBytes, NotPlainData, plainData, uncloneable } from '../lib/common/clone.js'
import { PayloadKind, type ErrorOutcome, type LogLine, type Outcome, type SerializedError } from '../lib/common/protocol.js'

/**
 * Buffers an outcome moves instead of copying, under a symbol: structured
 * clone copies only string keys, so the list stays on this side.
 */
export const kTransfer = Symbol('fastify-blocking.transfer')

/**
 * The task's second outcome, when its first does not end it (a returned
 * stream: the slot stays the task's until the stream ends). Under a symbol,
 * like kTransfer: it stays on this side.
 */
export const kFollow = Symbol('fastify-blocking.follow')

/** An outcome on its way out, with what it transfers (and, for a returned stream, its end). */
export type Outbound = Outcome & { [kTransfer]?: ArrayBuffer[], [kFollow]?: Promise<Outcome> }

/**
 * What a function returned, as an outcome. Bytes go back as a fresh copy whose
 * buffer is transferred: the main thread does not copy them, and the
 * handler's own Buffer (cached, or a slice of Node's shared pool) is never
 * emptied. `transfer` holds buffers already copied for the outcome (arguments
 * of background tasks).
 */
export function toOutcome (value: unknown, outcome: Outbound, transfer?: ArrayBuffer[], check: (value: unknown) => unknown = plainData): Outbound {
  if (value === undefined) {
    outcome.kind = PayloadKind.Empty
  } else if (typeof value === 'string') {
    outcome.kind = PayloadKind.Text
    outcome.value = value
  } else if (ArrayBuffer.isView(value) || value instanceof ArrayBuffer) {
    const copy = copyBytes(value)
    outcome.kind = PayloadKind.Bytes
    outcome.value = copy
    transfer = transfer === undefined ? [copy.buffer as ArrayBuffer] : [...transfer, copy.buffer as ArrayBuffer]
  } else {
    let plain: unknown
    try {
      plain = check(value)
    } catch (err) {
      // A getter (or a Proxy trap, or a toJSON()) that throws is reported as what it threw.
      const message = err instanceof NotPlainData ? err.message : `reading it threw: ${serializeError(err).message}`
      return errorOutcome({ name: 'DataCloneError', message }, outcome.logs)
    }
    outcome.kind = PayloadKind.Json
    outcome.value = plain
  }
  if (transfer !== undefined) outcome[kTransfer] = transfer
  return outcome
}

/**
 * What app.blocking.run() returns goes back to the app's own code, never
 * straight to a client: anything structured cloning keeps is fine (a class
 * instance arrives as a plain object), unlike a handler's payload (plainData).
 */
export function cloneable (value: unknown): unknown {
  const problem = uncloneable(value)
  if (problem !== undefined) throw new NotPlainData(problem)
  return value
}

/** A property of something thrown or returned: a getter that throws reads as undefined. */
function read (obj: Record<string, unknown>, key: string): unknown {
  try {
    return obj[key]
  } catch {
    return undefined
  }
}

function text (value: unknown): string {
  try {
    return String(value)
  } catch {
    return Object.prototype.toString.call(value)
  }
}

/** Never throws, whatever was thrown: getters that throw and values that cannot be cloned are left out. */
export function serializeError (err: unknown): SerializedError {
  if (err === null || typeof err !== 'object') {
    return { name: 'Error', message: text(err) }
  }
  const e = err as Record<string, unknown>
  const name = read(e, 'name')
  const message = read(e, 'message')
  const out: SerializedError = {
    name: typeof name === 'string' ? name : 'Error',
    message: typeof message === 'string' ? message : text(err)
  }
  const stack = read(e, 'stack')
  if (typeof stack === 'string') out.stack = stack
  const code = read(e, 'code')
  if (typeof code === 'string') out.code = code
  const status = read(e, 'statusCode') ?? read(e, 'status')
  if (typeof status === 'number') out.statusCode = status
  let keys: string[] = []
  try {
    keys = Object.keys(e)
  } catch {
    // A Proxy whose ownKeys trap throws: no extra properties.
  }
  for (const key of keys) {
    if (key === 'name' || key === 'message' || key === 'stack' || key === 'code' || key === 'statusCode' || key === 'status') continue
    const value = read(e, key)
    try {
      if (uncloneable(value) !== undefined) continue
    } catch {
      continue
    }
    out.props ??= {}
    out.props[key] = value
  }
  return out
}

export function errorOutcome (err: unknown, logs: LogLine[] | undefined): ErrorOutcome {
  const outcome: ErrorOutcome = { kind: PayloadKind.Error, value: serializeError(err) }
  if (logs !== undefined) outcome.logs = logs
  return outcome
}
