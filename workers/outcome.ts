// What a function returned or threw, made ready to cross back to the main thread.
import { copyBytes, uncloneable } from './clone.js'
import { PayloadKind, type LogLine, type Outcome, type SerializedError } from './protocol.js'

/** Wraps an outcome so that the pool transfers `transfer` instead of copying it. */
export type Mover = (value: object) => unknown

const kPiscinaTransferable = Symbol.for('Piscina.transferable')
const kPiscinaValue = Symbol.for('Piscina.valueOf')
const kTinypoolTransferable = Symbol.for('Tinypool.transferable')
const kTinypoolValue = Symbol.for('Tinypool.valueOf')

export function movable (move: Mover, outcome: Outcome, transfer: ArrayBuffer[]): unknown {
  return move({
    [kPiscinaTransferable]: transfer,
    [kPiscinaValue]: outcome,
    [kTinypoolTransferable]: transfer,
    [kTinypoolValue]: outcome
  })
}

/**
 * What a function returned, as an outcome. Bytes go back as a fresh copy whose
 * buffer is transferred: the main thread does not copy them, and the
 * handler's own Buffer (cached, or a slice of Node's shared pool) is never
 * emptied. `transfer` holds buffers already copied for the outcome (arguments
 * of background tasks).
 */
export function toOutcome (value: unknown, move: Mover, outcome: Outcome, transfer?: ArrayBuffer[]): unknown {
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
    const problem = uncloneable(value)
    if (problem !== undefined) {
      return errorOutcome({ name: 'DataCloneError', message: problem }, outcome.logs)
    }
    outcome.kind = PayloadKind.Json
    outcome.value = value
  }
  return transfer === undefined ? outcome : movable(move, outcome, transfer)
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
