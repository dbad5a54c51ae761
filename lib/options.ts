// Defaults and validation of the plugin's options and of `blocking` on a route.
// Every check names the option and what it must be: a wrong option is found at
// register time, never on the first request.
import { availableParallelism } from 'node:os'
import { FST_BLOCKING_INVALID_OPTION } from './common/errors.js'
import type { PressureThresholds } from './pressure.js'
import type { BlockingPluginOptions, BlockingRouteOptions, MultipartLimits, QueueOptions } from './common/types.js'

export interface ResolvedOptions {
  pool: 'piscina' | 'tinypool'
  maxThreads: number
  minThreads: number
  idleTimeout: number
  maxQueue: number
  taskTimeout: number
  /** ms a stream or upload may wait for its client without progress; 0 = no limit. */
  stallTimeout: number
  closeTimeout: number
  backgroundQueue: number
  resourceLimits: NonNullable<BlockingPluginOptions['resourceLimits']>
  /** Nice increment of the threads that run requests (and background tasks, unless they have their own). */
  priority: number
  /** Nice increment of background tasks' threads: when it differs from `priority`, they get a pool of their own. */
  backgroundPriority: number
  multipart: { limits: MultipartLimits, spoolThreshold: number }
  serverTiming: boolean
  pressure: PressureThresholds
  /** ms; 0 = off. */
  detectBlocking: number
  /** Request properties cloned into the worker's request. */
  requestProperties: string[]
  /** The durable queue, when `queue` is given. */
  queue: ResolvedQueueOptions | undefined
}

export interface ResolvedQueueOptions {
  connection: QueueOptions['connection']
  name: string
  prefix: string | undefined
  work: boolean
  concurrency: number
  jobs: Record<string, unknown>
  worker: Record<string, unknown>
  timeout: number
  whenDown: 'fail' | 'local'
}

export interface ResolvedRouteOptions {
  timeout: number
  serverTiming: boolean
  highWaterMark: number
  multipartLimits: MultipartLimits
  spoolThreshold: number
  stallTimeout: number
  requestProperties: string[]
}

const LIMIT_NAMES = ['fieldNameSize', 'fieldSize', 'fields', 'fileSize', 'files', 'parts', 'headerPairs'] as const
/**
 * Safe by default (see docs/security.md): one request holds at most about
 * 16 MiB in a worker (10 files of 1 MiB, 100 fields of 64 KiB). fileSize is
 * the contract's; parts is @fastify/multipart's; fieldNameSize and
 * headerPairs are busboy's own defaults, made explicit.
 */
export const DEFAULT_MULTIPART_LIMITS: MultipartLimits = {
  fileSize: 1_048_576,
  files: 10,
  fields: 100,
  fieldSize: 65_536,
  parts: 1000,
  fieldNameSize: 100,
  headerPairs: 2000
}

function invalid (message: string): Error {
  return new FST_BLOCKING_INVALID_OPTION(message)
}

export function resolveInteger (name: string, value: unknown): number {
  return integer(name, value, 0, 0)
}

export function resolveLimits (name: string, value: unknown): MultipartLimits {
  return limits(name, value)
}

function integer (name: string, value: unknown, fallback: number, min: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
    throw invalid(`${name} must be ${min === 0 ? 'a non-negative' : 'a positive'} integer, got ${String(value)}`)
  }
  return value
}

function object (name: string, value: unknown): Record<string, unknown> {
  if (value === undefined) return {}
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw invalid(`${name} must be an object`)
  }
  return value as Record<string, unknown>
}

function limits (name: string, value: unknown): MultipartLimits {
  const given = object(name, value)
  const out: MultipartLimits = {}
  for (const key of Object.keys(given)) {
    if (!(LIMIT_NAMES as readonly string[]).includes(key)) {
      throw invalid(`${name}.${key} is not a multipart limit (one of ${LIMIT_NAMES.join(', ')})`)
    }
    out[key as keyof MultipartLimits] = integer(`${name}.${key}`, given[key], 0, 0)
  }
  return out
}

/** A nice increment, 0 (normal) to 19 (lowest). */
function niceIncrement (name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 19) {
    throw invalid(`options.${name} must be an integer from 0 (normal) to 19 (lowest), got ${String(value)}`)
  }
  return value
}

/**
 * The default nice increment of pool threads. In the priority benchmark
 * (docs/benchmarks.md) 10 and 19 cut /ping's p99 alike and cost the CPU-bound
 * route nothing; 10 leaves pool threads about a tenth of a core against a
 * busy thread at normal priority of another process (cluster workers, a
 * database in the same container), where 19 leaves them about 1.5%.
 */
export const DEFAULT_PRIORITY = 10

/** `priority`: one increment for every thread, or `{ requests, background }`. */
function priority (value: unknown): { requests: number, background: number } {
  if (value === undefined || typeof value !== 'object' || value === null || Array.isArray(value)) {
    const requests = niceIncrement('priority', value, DEFAULT_PRIORITY)
    return { requests, background: requests }
  }
  const given = value as Record<string, unknown>
  onlyKeys('options.priority', given, ['requests', 'background'])
  const requests = niceIncrement('priority.requests', given.requests, DEFAULT_PRIORITY)
  const background = niceIncrement('priority.background', given.background, requests)
  if (background < requests) {
    throw invalid(`options.priority.background (${background}) must not be below options.priority.requests (${requests}): background tasks never run ahead of requests`)
  }
  return { requests, background }
}

function boolean (name: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback
  if (typeof value !== 'boolean') throw invalid(`${name} must be a boolean, got ${String(value)}`)
  return value
}

/** Keys of an options object that are not among `known`: a typo is an error, not a silent default. */
function onlyKeys (name: string, given: Record<string, unknown>, known: readonly string[]): void {
  for (const key of Object.keys(given)) {
    if (!known.includes(key)) throw invalid(`${name}.${key} is not an option (${known.join(', ')})`)
  }
}

function pressure (value: unknown): PressureThresholds {
  const given = object('options.pressure', value)
  onlyKeys('options.pressure', given, ['maxQueueWait', 'maxQueued'])
  return {
    maxQueueWait: integer('options.pressure.maxQueueWait', given.maxQueueWait, 0, 0),
    maxQueued: integer('options.pressure.maxQueued', given.maxQueued, 0, 0)
  }
}

/** `detectBlocking`: true (100 ms) or `{ thresholdMs }`; resolved to the threshold, 0 = off. */
function detectBlocking (value: unknown): number {
  if (value === undefined || value === false) return 0
  if (value === true) return 100
  const given = object('options.detectBlocking', value)
  onlyKeys('options.detectBlocking', given, ['thresholdMs'])
  return integer('options.detectBlocking.thresholdMs', given.thresholdMs, 100, 1)
}

/** The worker's request has these already: a request property of the same name would hide one. */
const WORKER_REQUEST_NAMES = ['id', 'method', 'url', 'routeUrl', 'params', 'query', 'headers', 'body', 'ip', 'hostname', 'protocol', 'signal', 'log', 'files', 'routeOptions']

/** `requestProperties`: names of request properties (set by hooks) that are cloned into the worker's request. */
function requestProperties (name: string, value: unknown, fallback: string[]): string[] {
  if (value === undefined) return fallback
  if (!Array.isArray(value)) throw invalid(`${name} must be an array of request property names, got ${String(value)}`)
  for (const item of value) {
    if (typeof item !== 'string' || item === '') throw invalid(`${name} must hold non-empty strings, got ${String(item)}`)
    if (WORKER_REQUEST_NAMES.includes(item)) throw invalid(`${name}: '${item}' is already on the worker's request (${WORKER_REQUEST_NAMES.join(', ')})`)
    // A name such as 'constructor' or '__proto__' would change the request, not add to it.
    if (item in Object.prototype) throw invalid(`${name}: '${item}' is not a request property that can be sent`)
  }
  return [...new Set(value as string[])]
}

/**
 * Bytes a stream may have in flight (blocking.highWaterMark): measured on
 * 64 KiB chunks and on row-per-yield exports, 1 MiB streams at the speed of
 * the generator where 64 KiB waited for a credit message every chunk.
 */
export const DEFAULT_STREAM_WINDOW = 1_048_576

export function resolveOptions (opts: BlockingPluginOptions): ResolvedOptions {
  const given = object('options', opts) as BlockingPluginOptions
  const pool = given.pool ?? 'piscina'
  if (pool !== 'piscina' && pool !== 'tinypool') {
    throw invalid(`options.pool must be 'piscina' or 'tinypool', got ${String(pool)}`)
  }
  const maxThreads = integer('options.maxThreads', given.maxThreads, availableParallelism(), 1)
  const minThreads = integer('options.minThreads', given.minThreads, maxThreads, 0)
  if (minThreads > maxThreads) {
    throw invalid(`options.minThreads (${minThreads}) must not exceed options.maxThreads (${maxThreads})`)
  }
  const multipart = object('options.multipart', given.multipart)
  const priorities = priority(given.priority)
  return {
    pool,
    maxThreads,
    minThreads,
    idleTimeout: integer('options.idleTimeout', given.idleTimeout, 30_000, 0),
    maxQueue: integer('options.maxQueue', given.maxQueue, maxThreads * 64, 0),
    taskTimeout: integer('options.taskTimeout', given.taskTimeout, 0, 0),
    stallTimeout: integer('options.stallTimeout', given.stallTimeout, 60_000, 0),
    closeTimeout: integer('options.closeTimeout', given.closeTimeout, 10_000, 0),
    backgroundQueue: integer('options.backgroundQueue', given.backgroundQueue, 10_000, 0),
    resourceLimits: object('options.resourceLimits', given.resourceLimits),
    priority: priorities.requests,
    backgroundPriority: priorities.background,
    multipart: {
      limits: { ...DEFAULT_MULTIPART_LIMITS, ...limits('options.multipart.limits', multipart.limits) },
      spoolThreshold: integer('options.multipart.spoolThreshold', multipart.spoolThreshold, 1_048_576, 0)
    },
    serverTiming: boolean('options.serverTiming', given.serverTiming, false),
    pressure: pressure(given.pressure),
    detectBlocking: detectBlocking(given.detectBlocking),
    requestProperties: requestProperties('options.requestProperties', given.requestProperties, []),
    queue: queue(given.queue, maxThreads)
  }
}

const QUEUE_KEYS = ['connection', 'name', 'prefix', 'work', 'concurrency', 'jobs', 'worker', 'timeout', 'whenDown'] as const

function queueName (name: string, value: unknown, fallback: string): string {
  if (value === undefined) return fallback
  // BullMQ builds Redis keys as prefix:name:...
  if (typeof value !== 'string' || value === '' || value.includes(':')) {
    throw invalid(`options.${name} must be a non-empty string without ':', got ${String(value)}`)
  }
  return value
}

/** `queue`: undefined (background tasks stay in process) or the durable queue's settings. */
export function queue (value: unknown, maxThreads: number): ResolvedQueueOptions | undefined {
  if (value === undefined) return undefined
  const given = object('options.queue', value)
  onlyKeys('options.queue', given, QUEUE_KEYS)
  const { connection } = given
  const url = typeof connection === 'string' && /^rediss?:\/\//.test(connection)
  if (!url && (connection === null || typeof connection !== 'object' || Array.isArray(connection))) {
    throw invalid(`options.queue.connection must be a redis:// URL, ioredis options or an ioredis instance, got ${String(connection)}`)
  }
  const whenDown = given.whenDown ?? 'fail'
  if (whenDown !== 'fail' && whenDown !== 'local') {
    throw invalid(`options.queue.whenDown must be 'fail' or 'local', got ${String(whenDown)}`)
  }
  return {
    connection: connection as QueueOptions['connection'],
    name: queueName('queue.name', given.name, 'fastify-blocking'),
    prefix: given.prefix === undefined ? undefined : queueName('queue.prefix', given.prefix, ''),
    work: boolean('options.queue.work', given.work, true),
    concurrency: integer('options.queue.concurrency', given.concurrency, maxThreads, 1),
    jobs: { attempts: 1, ...object('options.queue.jobs', given.jobs) },
    worker: object('options.queue.worker', given.worker),
    timeout: integer('options.queue.timeout', given.timeout, 2000, 1),
    whenDown
  }
}

/**
 * `blocking` of a route (or of its config), resolved against the plugin's
 * options. Returns undefined for a route that is not blocking.
 */
export function resolveRouteOptions (
  route: string,
  value: unknown,
  plugin: ResolvedOptions
): ResolvedRouteOptions | undefined {
  if (value === undefined || value === false) return undefined
  if (value !== true && (value === null || typeof value !== 'object' || Array.isArray(value))) {
    throw invalid(`${route}: blocking must be true or an object, got ${String(value)}`)
  }
  const given = (value === true ? {} : value) as BlockingRouteOptions & Record<string, unknown>
  onlyKeys(`${route}: blocking`, given, ['timeout', 'highWaterMark', 'multipart', 'serverTiming', 'requestProperties'])
  const multipart = object(`${route}: blocking.multipart`, given.multipart)
  return {
    timeout: integer(`${route}: blocking.timeout`, given.timeout, plugin.taskTimeout, 0),
    serverTiming: boolean(`${route}: blocking.serverTiming`, given.serverTiming, plugin.serverTiming),
    highWaterMark: integer(`${route}: blocking.highWaterMark`, given.highWaterMark, DEFAULT_STREAM_WINDOW, 1),
    multipartLimits: { ...plugin.multipart.limits, ...limits(`${route}: blocking.multipart.limits`, multipart.limits) },
    spoolThreshold: plugin.multipart.spoolThreshold,
    stallTimeout: plugin.stallTimeout,
    requestProperties: requestProperties(`${route}: blocking.requestProperties`, given.requestProperties, plugin.requestProperties)
  }
}
