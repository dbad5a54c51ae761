// startQueueWorker(): a process that runs durable jobs without HTTP. It is the
// plugin itself, registered on a Fastify instance that never listens, with
// `queue.work` on: the same pool, scheduler, logs and shutdown as in the app,
// and the jobs may take every thread (no request waits for one here). The bin
// fastify-blocking-worker is a command line over it.
import { existsSync, readdirSync, statSync } from 'node:fs'
import { isAbsolute, join, relative, resolve, sep } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import type { FastifyPluginAsync } from 'fastify'
import { kJobsOnly } from './durable.js'
import { FST_BLOCKING_INVALID_OPTION } from './common/errors.js'
import type { BlockingPluginOptions, QueueWorker, StartQueueWorkerOptions } from './common/types.js'

const GLOB = /[*?[\]{}]/

/** A glob as a regular expression over `/`-separated relative paths: `**` any directories, `*` and `?` within one name. */
function globToRegExp (pattern: string): RegExp {
  let out = ''
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!
    if (c === '*' && pattern[i + 1] === '*') {
      // `**/` matches no directory too.
      out += pattern[i + 2] === '/' ? '(?:.*/)?' : '.*'
      i += pattern[i + 2] === '/' ? 2 : 1
    } else if (c === '*') {
      out += '[^/]*'
    } else if (c === '?') {
      out += '[^/]'
    } else {
      out += c.replace(/[.+^${}()|[\]\\]/g, '\\$&')
    }
  }
  return new RegExp(`^${out}$`)
}

function walk (dir: string, into: string[]): void {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.name === 'node_modules' || entry.name.startsWith('.')) continue
    const path = join(dir, entry.name)
    if (entry.isDirectory()) walk(path, into)
    else if (entry.isFile()) into.push(path)
  }
}

/** Task modules as file URLs: paths (from `cwd`), `file:` URLs and globs; a name that matches nothing is an error. */
export function taskModules (tasks: ReadonlyArray<string | URL>, cwd = process.cwd()): string[] {
  const out = new Set<string>()
  for (const task of tasks) {
    const given = task instanceof URL || task.startsWith('file:') ? fileURLToPath(task) : task
    const path = isAbsolute(given) ? given : resolve(cwd, given)
    if (!GLOB.test(given)) {
      if (!existsSync(path) || !statSync(path).isFile()) throw new FST_BLOCKING_INVALID_OPTION(`tasks: ${String(task)} is not a file`)
      out.add(pathToFileURL(path).href)
      continue
    }
    // The directories before the first segment with a wildcard are walked, the rest matched.
    const parts = path.split(sep)
    const first = parts.findIndex((part) => GLOB.test(part))
    const base = parts.slice(0, first).join(sep) || sep
    const match = globToRegExp(parts.slice(first).join('/'))
    const files: string[] = []
    if (existsSync(base)) walk(base, files)
    const found = files.filter((file) => match.test(relative(base, file).split(sep).join('/')))
    if (found.length === 0) throw new FST_BLOCKING_INVALID_OPTION(`tasks: no file matches ${String(task)}`)
    for (const file of found.sort()) out.add(pathToFileURL(file).href)
  }
  return [...out]
}

export async function startWorkerProcess (plugin: FastifyPluginAsync<BlockingPluginOptions>, options: StartQueueWorkerOptions): Promise<QueueWorker> {
  if (options === null || typeof options !== 'object') throw new FST_BLOCKING_INVALID_OPTION('startQueueWorker(options): options must be an object')
  const list = Array.isArray(options.tasks) ? options.tasks : options.tasks === undefined ? [] : [options.tasks]
  if (list.length === 0) throw new FST_BLOCKING_INVALID_OPTION('startQueueWorker(options): options.tasks must name at least one task module')
  // Imported here first, so that the plugin finds their tasks in the registry (lib/common/define.ts).
  for (const url of taskModules(list)) await import(url)
  const { default: Fastify } = await import('fastify')
  const app = Fastify({ logger: options.logger ?? { level: process.env.LOG_LEVEL ?? 'info' } })
  const pluginOptions: BlockingPluginOptions & { [kJobsOnly]: true } = {
    [kJobsOnly]: true,
    queue: {
      connection: options.connection,
      work: true,
      ...(options.name === undefined ? {} : { name: options.name }),
      ...(options.prefix === undefined ? {} : { prefix: options.prefix }),
      ...(options.concurrency === undefined ? {} : { concurrency: options.concurrency }),
      ...(options.worker === undefined ? {} : { worker: options.worker })
    },
    ...(options.pool === undefined ? {} : { pool: options.pool }),
    ...(options.maxThreads === undefined ? {} : { maxThreads: options.maxThreads }),
    ...(options.taskTimeout === undefined ? {} : { taskTimeout: options.taskTimeout }),
    ...(options.closeTimeout === undefined ? {} : { closeTimeout: options.closeTimeout })
  }
  try {
    await app.register(plugin, pluginOptions)
    await app.ready()
  } catch (err) {
    await app.close()
    throw err
  }
  return {
    close: () => app.close(),
    stats: () => app.blocking.stats()
  }
}
