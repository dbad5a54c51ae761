// defineHandler / defineTask: the identity of work across threads.
//
// A function cannot be sent to another thread; its module can. So each
// definition is recorded as `moduleUrl#n`, where n counts the definitions made
// by that module in the order it makes them. A worker that imports the same
// module runs the same definitions in the same order and so finds the same
// function at the same n: unexported and anonymous functions work too.
//
// The registry lives on globalThis under a Symbol.for() key, so that every copy
// of this file in a thread (ESM and require(esm), or two installs of the
// package) shares one table.
import { isAbsolute } from 'node:path'
import { pathToFileURL } from 'node:url'
import { isMainThread } from 'node:worker_threads'

export type DefinitionKind = 'handler' | 'task'

export interface Definition {
  /** `moduleUrl#n`: what a task message names. */
  readonly id: string
  readonly moduleUrl: string
  readonly index: number
  readonly kind: DefinitionKind
  /** `function*` or `async function*`: the handler streams (see the streaming docs). */
  readonly generator: boolean
  /** Its export name, else its function name, else `file#n` (the export name is known once the module has loaded). */
  name: string
  /** A task's name given with `defineTask(url, fn, { name })`: the name of its durable jobs (lib/task-names.ts). */
  readonly given?: string | undefined
}

export interface DefineOptions {
  /** The task's stable name, the same on every machine (the name of its jobs in the durable queue). */
  name?: string
}

interface Registry {
  /** moduleUrl -> the functions it defined, in order. */
  readonly modules: Map<string, Function[]>
}

const kRegistry = Symbol.for('fastify-blocking.registry')
export const kDefinition = Symbol.for('fastify-blocking.definition')

type GlobalWithRegistry = typeof globalThis & { [kRegistry]?: Registry }

function registry (): Registry {
  const g = globalThis as GlobalWithRegistry
  let r = g[kRegistry]
  if (r === undefined) {
    r = { modules: new Map() }
    g[kRegistry] = r
  }
  return r
}

/**
 * Accepts what a module knows about itself: `import.meta.url` (a `file:` URL
 * string), a `URL`, or `__filename` (an absolute path). Anything else is a
 * mistake that would make the worker load the wrong module, so it throws.
 */
export function normalizeModuleUrl (moduleUrl: unknown, fnName: string): string {
  if (moduleUrl instanceof URL) {
    if (moduleUrl.protocol === 'file:') return moduleUrl.href
  } else if (typeof moduleUrl === 'string') {
    if (moduleUrl.startsWith('file:')) return new URL(moduleUrl).href
    if (isAbsolute(moduleUrl)) return pathToFileURL(moduleUrl).href
  }
  throw new TypeError(
    `${fnName}(moduleUrl, fn): moduleUrl must be import.meta.url, __filename or a file: URL, got ${String(moduleUrl)}`
  )
}

function define<F extends Function> (kind: DefinitionKind, moduleUrl: unknown, fn: F, options?: DefineOptions): F {
  const caller = kind === 'handler' ? 'defineHandler' : 'defineTask'
  const url = normalizeModuleUrl(moduleUrl, caller)
  if (typeof fn !== 'function') {
    throw new TypeError(`${caller}(moduleUrl, fn): fn must be a function, got ${typeof fn}`)
  }
  const given = options?.name
  if (given !== undefined && (typeof given !== 'string' || given.trim() === '')) {
    throw new TypeError(`${caller}(moduleUrl, fn, { name }): name must be a non-empty string, got ${String(given)}`)
  }
  const existing = definitionOf(fn)
  if (existing !== undefined) {
    throw new TypeError(`${caller}: this function is already defined as ${existing.id}; define each function once`)
  }
  const modules = registry().modules
  let list = modules.get(url)
  if (list === undefined) {
    list = []
    modules.set(url, list)
  }
  const index = list.length
  list.push(fn)
  const ctor = fn.constructor.name
  const definition: Definition = {
    id: `${url}#${index}`,
    moduleUrl: url,
    index,
    kind,
    generator: ctor === 'GeneratorFunction' || ctor === 'AsyncGeneratorFunction',
    name: given ?? (fn.name !== '' && fn.name !== 'default' ? fn.name : `${url.slice(url.lastIndexOf('/') + 1)}#${index}`),
    given
  }
  Object.defineProperty(fn, kDefinition, { value: definition })
  if (index === 0 && isMainThread) learnExportNames(url)
  return fn
}

/**
 * Names come from the module's exports, which exist only once the module has
 * finished loading: look them up right after, on the main thread (where names
 * appear in logs and errors). The import returns the module already loaded.
 */
function learnExportNames (url: string): void {
  setImmediate(() => {
    import(url).then((namespace: Record<string, unknown>) => learnNames(url, namespace), () => {
      // The module failed to load: its definitions keep their function names.
    })
  })
}

/** Names the definitions a module exports after their export names. */
export function learnNames (url: string, namespace: Record<string, unknown>): void {
  for (const key of Object.keys(namespace)) {
    const definition = definitionOf(namespace[key])
    if (key !== 'default' && definition !== undefined && definition.moduleUrl === url && definition.given === undefined) definition.name = key
  }
}

/** The definition a function was tagged with, if any. */
export function definitionOf (fn: unknown): Definition | undefined {
  if (typeof fn !== 'function') return undefined
  return (fn as { [kDefinition]?: Definition })[kDefinition]
}

/** The module an identity `moduleUrl#n` names. */
export function moduleOf (id: string): string {
  return id.slice(0, id.lastIndexOf('#'))
}

/** The function a worker should run for `id`, once its module has been imported. */
export function lookup (id: string): Function | undefined {
  const list = registry().modules.get(moduleOf(id))
  return list?.[Number(id.slice(id.lastIndexOf('#') + 1))]
}

/** How many definitions a module made in this thread (0 if it was never imported here). */
export function definedIn (moduleUrl: string): number {
  return registry().modules.get(moduleUrl)?.length ?? 0
}

export function defineHandlerUntyped<F extends Function> (moduleUrl: string | URL, fn: F): F {
  return define('handler', moduleUrl, fn)
}

export function defineTaskUntyped<F extends Function> (moduleUrl: string | URL, fn: F, options?: DefineOptions): F {
  return define('task', moduleUrl, fn, options)
}

/** Every module's definitions in this thread, in order: for the durable queue's table of task names. */
export function allDefinitions (): Array<{ moduleUrl: string, fns: readonly Function[] }> {
  return [...registry().modules].map(([moduleUrl, fns]) => ({ moduleUrl, fns }))
}
