// What can cross threads, and how bytes cross without a copy on the main
// thread. Used by both sides: the worker checks what a function returns, the
// main thread checks the arguments of background tasks at the call.
import { MessagePort } from 'node:worker_threads'

/** A private copy of some bytes, in an ArrayBuffer of its own that can be transferred. */
export function copyBytes (value: ArrayBufferView | ArrayBuffer): Uint8Array {
  const source = value instanceof ArrayBuffer
    ? new Uint8Array(value)
    : new Uint8Array(value.buffer, value.byteOffset, value.byteLength)
  const copy = new Uint8Array(source.byteLength)
  copy.set(source)
  return copy
}

/** Indexes of the arguments that are Buffers: they arrive as Uint8Arrays, and the worker views them as Buffers again. */
export function bufferIndexes (args: unknown[]): number[] | undefined {
  let indexes: number[] | undefined
  for (let i = 0; i < args.length; i++) if (Buffer.isBuffer(args[i])) (indexes ??= []).push(i)
  return indexes
}

/**
 * The ArrayBuffer behind `value` if it can be moved (transferred) whole: it
 * belongs to this view alone. A Buffer from Node's shared pool (small
 * `Buffer.from()` results) shares its ArrayBuffer with others: moving it
 * would empty them all, so it is cloned instead.
 */
export function ownBuffer (value: unknown): ArrayBuffer | undefined {
  if (value instanceof ArrayBuffer) return value
  if (!ArrayBuffer.isView(value)) return undefined
  const buffer = value.buffer
  if (!(buffer instanceof ArrayBuffer) || value.byteOffset !== 0 || value.byteLength !== buffer.byteLength) return undefined
  return buffer
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
  if (obj instanceof Promise || obj instanceof WeakMap || obj instanceof WeakSet || obj instanceof WeakRef || obj instanceof MessagePort ||
    obj instanceof ReadableStream || obj instanceof WritableStream || obj instanceof TransformStream) {
    return `a ${obj.constructor.name} cannot be cloned`
  }
  const tag = Object.prototype.toString.call(obj)
  if (tag === '[object Generator]' || tag === '[object AsyncGenerator]') {
    return `a ${tag.slice(8, -1)} cannot be cloned (a generator handler streams only when it is the handler itself)`
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

