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
    outcome.kind = PayloadKind.Json
    outcome.value = value
  }
  return outcome
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
    try {
      const value = structuredClone(e[key])
      out.props ??= {}
      out.props[key] = value
    } catch {
      // A property that cannot cross threads (a socket, a function) is left
      // behind: the error itself must still reach the error handler.
    }
  }
  return out
}

export function errorOutcome (err: unknown, logs: LogLine[] | undefined): Outcome {
  const outcome: Outcome = { kind: PayloadKind.Error, value: serializeError(err) }
  if (logs !== undefined) outcome.logs = logs
  return outcome
}
