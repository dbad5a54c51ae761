// Loading the user's modules in a worker: TypeScript through tsx, and the trap
// of a module that starts the app when it is imported.

import { learnNames } from '../lib/common/define.js'
import { kWorkerContext, type WorkerContext } from '../lib/common/protocol.js'

const context: WorkerContext = { loading: undefined, registeredBy: undefined }
;(globalThis as Record<symbol, unknown>)[kWorkerContext] = context

const TS = /\.(?:[mc]?ts|tsx)$/
const loads = new Map<string, Promise<void>>()
let tsx: Promise<void> | undefined

/**
 * Worker threads do not inherit module hooks registered with module.register(),
 * which is what tsx does, even with `--import tsx` in their execArgv. So a
 * worker handed a .ts module registers tsx itself before it imports the module
 * (a failed import is cached: registering after one would be too late).
 */
function registerTsx (moduleUrl: string): Promise<void> {
  tsx ??= (async () => {
    let api: { register: () => unknown }
    try {
      api = await import('tsx/esm/api')
    } catch (err) {
      throw new Error(`${moduleUrl} is TypeScript: install tsx (npm i -D tsx) to load it in worker threads (${(err as Error).message})`)
    }
    api.register()
  })()
  return tsx
}

async function importModule (moduleUrl: string): Promise<void> {
  context.loading = moduleUrl
  try {
    if (TS.test(moduleUrl)) await registerTsx(moduleUrl)
    learnNames(moduleUrl, await import(moduleUrl) as Record<string, unknown>)
    // A module that starts the app may register the plugin after its import
    // settles (app.listen() without await): give it a turn of the event loop.
    await new Promise<void>((resolve) => setImmediate(resolve))
  } catch (err) {
    if (context.registeredBy === undefined) throw err
  } finally {
    context.loading = undefined
  }
  if (context.registeredBy !== undefined) {
    const by = context.registeredBy
    context.registeredBy = undefined
    const err = new Error(
      `${by} registers fastify-blocking (it builds or starts the app) and was imported by a worker thread. ` +
      'Move blocking handlers and tasks into their own module that does not build the app, ' +
      'and import that module from the app.'
    )
    builtTheApp.add(err)
    throw err
  }
}

/** Failures that stay: importing the module again would not say that it builds the app. */
const builtTheApp = new WeakSet<Error>()

/**
 * Imports a module once per thread; a failed import is retried on the next
 * call, except for a module that builds the app.
 */
export function load (moduleUrl: string): Promise<void> {
  let p = loads.get(moduleUrl)
  if (p === undefined) {
    p = importModule(moduleUrl)
    loads.set(moduleUrl, p)
    p.catch((err: Error) => { if (!builtTheApp.has(err)) loads.delete(moduleUrl) })
  }
  return p
}
