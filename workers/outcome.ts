// What a function returned or threw, made ready to cross back to the main thread.
import { PayloadKind, type LogLine, type Outcome, type SerializedError } from './protocol.js'

/** Wraps an outcome so that the pool transfers `transfer` instead of copying it. */
export type Mover = (value: object) => unknown

const kPiscinaTransferable = Symbol.for('Piscina.transferable')
const kPiscinaValue = Symbol.for('Piscina.valueOf')
const kTinypoolTransferable = Symbol.for('Tinypool.transferable')
const kTinypoolValue = Symbol.for('Tinypool.valueOf')

export function movable (move: Mover, outcome: Outcome, transfer: ArrayBuffer): unknown {
  return move({
    [kPiscinaTransferable]: [transfer],
    [kPiscinaValue]: outcome,
    [kTinypoolTransferable]: [transfer],
    [kTinypoolValue]: outcome
  })
}

/**
 * Bytes go back as a fresh copy whose buffer is transferred: the main thread
 * does not copy them, and the handler's own Buffer (cached, or a slice of
 * Node's shared pool) is never emptied.
 */
export function toOutcome (value: unknown, move: Mover, outcome: Outcome): unknown {
  if (value === undefined) {
    outcome.kind = PayloadKind.Empty
  } else if (typeof value === 'string') {
    outcome.kind = PayloadKind.Text
    outcome.value = value
  } else if (ArrayBuffer.isView(value) || value instanceof ArrayBuffer) {
    const source = value instanceof ArrayBuffer
      ? new Uint8Array(value)
      : new Uint8Array(value.buffer, value.byteOffset, value.byteLength)
    const copy = new Uint8Array(source.byteLength)
    copy.set(source)
    outcome.kind = PayloadKind.Bytes
    outcome.value = copy
    return movable(move, outcome, copy.buffer)
  } else {
    const problem = uncloneable(value)
    if (problem !== undefined) {
      return errorOutcome({ name: 'DataCloneError', message: problem }, outcome.logs)
    }
    outcome.kind = PayloadKind.Json
    outcome.value = value
  }
  return outcome
}

/**
 * Says where a value holds something that cannot cross threads, or undefined.
 * Checked here because a value the pool fails to send kills the thread and
 * loses the reason; the walk allocates nothing unless it finds a problem.
 */
export function uncloneable (value: unknown): string | undefined {
  const path: string[] = []
  const reason = find(value, path, undefined)
  if (reason === undefined) return undefined
  return path.length === 0 ? reason : `at ${path.reverse().join('')}: ${reason}`
}

function find (value: unknown, path: string[], seen: Set<object> | undefined): string | undefined {
  const type = typeof value
  if (type === 'function') return `a function (${(value as Function).name || 'anonymous'}) cannot be cloned`
  if (type === 'symbol') return 'a symbol cannot be cloned'
  if (type !== 'object' || value === null) return undefined
  const obj = value as object
  if (ArrayBuffer.isView(obj) || obj instanceof ArrayBuffer || obj instanceof Date || obj instanceof RegExp || obj instanceof Error) return undefined
  if (obj instanceof Promise || obj instanceof WeakMap || obj instanceof WeakSet || obj instanceof WeakRef) {
    return `a ${obj.constructor.name} cannot be cloned`
  }
  seen ??= new Set()
  if (seen.has(obj)) return undefined
  seen.add(obj)
  if (Array.isArray(obj)) {
    for (let i = 0; i < obj.length; i++) {
      const reason = find(obj[i], path, seen)
      if (reason !== undefined) {
        path.push(`[${i}]`)
        return reason
      }
    }
    return undefined
  }
  if (obj instanceof Map || obj instanceof Set) {
    for (const entry of obj) {
      const reason = find(entry, path, seen)
      if (reason !== undefined) {
        path.push(` (in a ${obj.constructor.name})`)
        return reason
      }
    }
    return undefined
  }
  const record = obj as Record<string, unknown>
  for (const key in record) {
    if (!Object.hasOwn(record, key)) continue
    const reason = find(record[key], path, seen)
    if (reason !== undefined) {
      path.push(`.${key}`)
      return reason
    }
  }
  return undefined
}

export function serializeError (err: unknown): SerializedError {
  if (err === null || typeof err !== 'object') {
    return { name: 'Error', message: String(err) }
  }
  const e = err as Record<string, unknown>
  const out: SerializedError = {
    name: typeof e.name === 'string' ? e.name : 'Error',
    message: typeof e.message === 'string' ? e.message : String(err)
  }
  if (typeof e.stack === 'string') out.stack = e.stack
  if (typeof e.code === 'string') out.code = e.code
  const status = e.statusCode ?? e.status
  if (typeof status === 'number') out.statusCode = status
  for (const key of Object.keys(e)) {
    if (key === 'name' || key === 'message' || key === 'stack' || key === 'code' || key === 'statusCode' || key === 'status') continue
    if (uncloneable(e[key]) !== undefined) continue
    out.props ??= {}
    out.props[key] = e[key]
  }
  return out
}

export function errorOutcome (err: unknown, logs: LogLine[] | undefined): Outcome {
  const outcome: Outcome = { kind: PayloadKind.Error, value: serializeError(err) }
  if (logs !== undefined) outcome.logs = logs
  return outcome
}
