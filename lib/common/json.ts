// The arguments of a durable job (see lib/queue.ts). BullMQ stores a job's
// data as JSON, so what JSON would change is refused at the call, named by its
// path (`args[1].when`), instead of reaching the task as something else.
// Dates and bytes are carried faithfully: they travel as an ISO string and as
// base64, with a list of the paths to revive, so that plain data stays plain
// (and readable in a queue dashboard) and no value of the user's can be
// mistaken for a marker. Used by both threads: the main thread encodes and
// decodes, a worker handler's reply.background checks at the call.

export type ReviveKind = 'date' | 'bytes' | 'undefined'

/** Where a value that JSON cannot hold was, and what it was. */
export type Revive = [path: Array<string | number>, kind: ReviveKind]

/** A job's `data`: what BullMQ stores. */
export interface JobData {
  args: unknown[]
  /** Values to rebuild after JSON.parse, in any order (their paths never nest in one another). */
  revive?: Revive[]
  /** The reqId of the request that queued the job, for the logs. */
  reqId?: string
}

class NotJson extends Error {}

const IDENTIFIER = /^[A-Za-z_$][\w$]*$/

/** `args[1].when`, `args[0]["content-type"]`. */
export function pathToString (path: ReadonlyArray<string | number>): string {
  let out = 'args'
  for (const key of path) {
    out += typeof key === 'number' ? `[${key}]` : IDENTIFIER.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`
  }
  return out
}

function what (value: unknown): string {
  if (typeof value === 'function') return `a function (${(value as Function).name || 'anonymous'})`
  if (typeof value === 'bigint') return 'a BigInt'
  if (typeof value === 'symbol') return 'a symbol'
  if (typeof value === 'number') return String(value)
  const ctor = (value as object).constructor as Function | undefined
  return `a ${typeof ctor === 'function' && ctor.name !== '' ? ctor.name : 'class instance'}`
}

function encode (value: unknown, path: Array<string | number>, ancestors: Set<object>, revive: Revive[]): unknown {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return value
    case 'number':
      if (Number.isFinite(value)) return value
      break
    case 'undefined':
      revive.push([[...path], 'undefined'])
      return null
    case 'object': {
      if (value === null) return null
      if (value instanceof Date) {
        if (Number.isNaN(value.getTime())) throw new NotJson(`${pathToString(path)} is an invalid Date`)
        revive.push([[...path], 'date'])
        return value.toISOString()
      }
      if (value instanceof Uint8Array) {
        revive.push([[...path], 'bytes'])
        return Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64')
      }
      if (ancestors.has(value)) throw new NotJson(`${pathToString(path)} refers back to an object that contains it (a cycle)`)
      if (Array.isArray(value)) {
        ancestors.add(value)
        const out = value.map((item, i) => encode(item, [...path, i], ancestors, revive))
        ancestors.delete(value)
        return out
      }
      const proto = Object.getPrototypeOf(value) as unknown
      if (proto !== Object.prototype && proto !== null) break
      ancestors.add(value)
      const out: Record<string, unknown> = {}
      const record = value as Record<string, unknown>
      for (const key of Object.keys(record)) {
        const item = record[key]
        // As JSON.stringify does: a property whose value is undefined is left out.
        if (item !== undefined) out[key] = encode(item, [...path, key], ancestors, revive)
      }
      ancestors.delete(value)
      return out
    }
  }
  throw new NotJson(`${pathToString(path)} is ${what(value)}, which JSON cannot carry`)
}

/**
 * The job data for these arguments, or why they cannot be stored:
 * `{ problem: 'args[1].when is a Map, which JSON cannot carry' }`.
 */
export function encodeArgs (args: unknown[]): { data: JobData, problem?: undefined } | { problem: string } {
  const revive: Revive[] = []
  try {
    const encoded = args.map((arg, i) => encode(arg, [i], new Set(), revive))
    return { data: revive.length === 0 ? { args: encoded } : { args: encoded, revive } }
  } catch (err) {
    if (err instanceof NotJson) return { problem: err.message }
    throw err
  }
}

/** The arguments a job's data stands for; throws a TypeError when the data was not made by encodeArgs. */
export function decodeArgs (data: unknown): unknown[] {
  const { args, revive } = (data ?? {}) as Partial<JobData>
  if (!Array.isArray(args) || (revive !== undefined && !Array.isArray(revive))) {
    throw new TypeError('the job data is not { args: [...] }: it was not queued by fastify-blocking')
  }
  for (const [path, kind] of revive ?? []) {
    let parent: Record<string | number, unknown> = args as unknown as Record<number, unknown>
    for (let i = 0; i < path.length - 1; i++) parent = parent[path[i]!] as Record<string | number, unknown>
    const key = path[path.length - 1]!
    const raw = parent[key] as string
    parent[key] = kind === 'date' ? new Date(raw) : kind === 'bytes' ? Buffer.from(raw, 'base64') : undefined
  }
  return args
}
