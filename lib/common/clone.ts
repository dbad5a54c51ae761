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

/**
 * A returned value as the plain data that goes back to be serialized as
 * JSON: objects whose prototype is Object.prototype or null, arrays,
 * primitives, Dates, typed arrays, Maps and Sets (whose JSON is `{}`, as
 * inline). A value with a `toJSON()` method (a class instance, a nested
 * Buffer) is replaced by what it returns, as JSON.stringify would do, so the
 * main thread serializes the same thing. Any other object (a class instance
 * without toJSON, a socket, a stream nested in the value) is refused: its
 * fields, internals included, are never sent. Returns the value (the same
 * reference unless something was replaced) or throws a NotPlainData.
 */
export function plainData (value: unknown): unknown {
  const path: string[] = []
  try {
    return plain(value, '', path, undefined)
  } catch (err) {
    if (err instanceof NotPlainData) {
      err.message = path.length === 0 ? err.message : `at ${path.reverse().join('')}: ${err.message}`
    }
    throw err
  }
}

export class NotPlainData extends Error {}

function describe (obj: object): string {
  const name = (obj.constructor as Function | undefined)?.name
  return name === undefined || name === '' ? 'an object with a prototype' : `a ${name}`
}

function plain (value: unknown, key: string, path: string[], seen: Set<object> | undefined): unknown {
  if (typeof value !== 'object' || value === null) {
    if (typeof value === 'function' || typeof value === 'symbol') throw new NotPlainData(find(value, path, undefined)!)
    return value
  }
  const obj = value as Record<string, unknown>
  if (Buffer.isBuffer(obj)) return obj.toJSON()
  if (ArrayBuffer.isView(obj) || obj instanceof ArrayBuffer || obj instanceof Date) return obj
  if (obj instanceof Map || obj instanceof Set || obj instanceof RegExp || obj instanceof Error) {
    const problem = find(obj, path, undefined)
    if (problem !== undefined) throw new NotPlainData(problem)
    return obj
  }
  const proto = Object.getPrototypeOf(obj) as object | null
  const isArray = Array.isArray(obj)
  if (typeof obj.toJSON === 'function') return plain(obj.toJSON(key), key, path, seen)
  if (!isArray && proto !== Object.prototype && proto !== null) {
    const problem = find(obj, [], undefined)
    if (problem !== undefined && !problem.startsWith('at ')) throw new NotPlainData(problem)
    const stream = typeof obj.pipe === 'function' || typeof obj.getReader === 'function'
    throw new NotPlainData(`${describe(obj)} is not plain data` + (stream
      ? ' (a stream is streamed only when it is the value returned)'
      : ': return a plain object, or give its class a toJSON() method'))
  }
  seen ??= new Set()
  if (seen.has(obj)) return obj
  seen.add(obj)
  if (isArray) {
    let copy: unknown[] | undefined
    const array = obj as unknown as unknown[]
    for (let i = 0; i < array.length; i++) {
      const item = array[i]
      let out: unknown
      try {
        out = plain(item, String(i), path, seen)
      } catch (err) {
        path.push(`[${i}]`)
        throw err
      }
      if (out !== item) (copy ??= array.slice())[i] = out
    }
    return copy ?? obj
  }
  let copy: Record<string, unknown> | undefined
  for (const k in obj) {
    if (!Object.hasOwn(obj, k)) continue
    const item = obj[k]
    let out: unknown
    try {
      out = plain(item, k, path, seen)
    } catch (err) {
      path.push(`.${k}`)
      throw err
    }
    if (out !== item) (copy ??= proto === null ? Object.assign(Object.create(null) as Record<string, unknown>, obj) : { ...obj })[k] = out
  }
  return copy ?? obj
}

/**
 * What of a route's `config` can cross threads: values that cannot (functions,
 * class instances holding them) are left out, key by key, at any depth.
 */
export function cloneablePart (value: unknown): unknown {
  if (uncloneable(value) === undefined) return value
  if (value === null || typeof value !== 'object') return undefined
  if (Array.isArray(value)) return value.map((item) => cloneablePart(item))
  const out: Record<string, unknown> = {}
  for (const key of Object.keys(value)) {
    const part = cloneablePart((value as Record<string, unknown>)[key])
    if (part !== undefined) out[key] = part
  }
  return out
}
