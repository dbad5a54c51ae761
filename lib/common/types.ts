// Public types: what a handler sees in the worker, the plugin's options and
// decorators. The `declare module 'fastify'` augmentation lives in index.ts.
import type { FastifyContextConfig, RouteGenericInterface } from 'fastify'

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal'

export interface WorkerLogFn {
  (msg: string): void
  (obj: object, msg?: string): void
}

/** pino-like logger in the worker: lines reach the app's logger with the request's reqId. */
export type WorkerLogger = Record<LogLevel, WorkerLogFn>

interface WorkerFileBase {
  fieldname: string
  filename: string
  mimetype: string
  encoding: string
  size: number
}

/**
 * A file of a multipart request, parsed in the worker (see the multipart
 * docs): in memory (`buffer`) up to `spoolThreshold` bytes, else spooled to a
 * temporary file (`path`). Check one to narrow: `file.buffer ?? await readFile(file.path)`.
 */
export type WorkerFile =
  | (WorkerFileBase & { buffer: Buffer, path?: undefined })
  | (WorkerFileBase & { path: string, buffer?: undefined })

/**
 * The body of a multipart route as it arrives: a field whose name is repeated
 * gives an array. Declare a multipart route's body with it:
 * `defineHandler<{ Body: MultipartBody<{ tag: string }> }>(...)` types
 * `request.body.tag` as `string | string[]`.
 */
export type MultipartBody<T> = { [K in keyof T]: T[K] | Array<T[K]> }

/** @fastify/cookie's options, as far as they cross threads (no `encode` function). */
export interface CookieOptions {
  domain?: string
  path?: string
  expires?: Date
  maxAge?: number
  httpOnly?: boolean
  secure?: boolean | 'auto'
  sameSite?: boolean | 'lax' | 'strict' | 'none'
  priority?: 'low' | 'medium' | 'high'
  partitioned?: boolean
  /** Signed on the main thread with the secret given to @fastify/cookie. */
  signed?: boolean
}

type Or<T, D> = unknown extends T ? D : T

/** The request a blocking handler receives in the worker: a snapshot of Fastify's. */
/**
 * Request properties sent to the worker (`requestProperties`), for their
 * types: `declare module 'fastify-blocking' { interface WorkerRequestProperties { user?: User } }`.
 */

export interface WorkerRequestProperties {}

export interface WorkerRequest<G extends RouteGenericInterface = RouteGenericInterface> extends WorkerRequestProperties {
  id: string
  method: string
  url: string
  /** The route's pattern, e.g. `/users/:id`. */
  routeUrl: string
  params: Or<G['Params'], Record<string, string>>
  query: Or<G['Querystring'], Record<string, string | string[]>>
  headers: Or<G['Headers'], Record<string, string | string[] | undefined>>
  body: G['Body']
  ip: string
  hostname: string
  protocol: 'http' | 'https'
  /** Aborted when the client goes away or the task times out. */
  signal: AbortSignal
  log: WorkerLogger
  /** Files of a multipart request. */
  files?: WorkerFile[]
  /** The route's `config` (what can cross threads), with its `url` and `method`, as Fastify builds it. */
  routeOptions: { config: FastifyContextConfig & { url: string, method: string | string[] } }
  /**
   * Properties named by `requestProperties` are here too: type them by
   * augmenting `WorkerRequestProperties`.
   */
}

/** The reply a blocking handler receives in the worker. Every method returns the reply. */
export interface WorkerReply {
  code (statusCode: number): WorkerReply
  status (statusCode: number): WorkerReply
  header (name: string, value: string | number | string[]): WorkerReply
  headers (values: Record<string, string | number | string[]>): WorkerReply
  type (contentType: string): WorkerReply
  redirect (url: string, statusCode?: number): WorkerReply
  background<A extends unknown[]> (task: BlockingTask<A>, ...args: A): WorkerReply
  /** With @fastify/cookie registered on the app: set on the main thread, signed there. Throws otherwise. */
  setCookie (name: string, value: string, options?: CookieOptions): WorkerReply
  /** With @fastify/cookie registered on the app. Throws otherwise. */
  clearCookie (name: string, options?: CookieOptions): WorkerReply
}

/** What a blocking handler may return (or resolve to, or yield when it is a generator). */
export type HandlerResult = unknown

export type BlockingHandler<G extends RouteGenericInterface = RouteGenericInterface> =
  (this: void, request: WorkerRequest<G>, reply: WorkerReply) => HandlerResult

export type BlockingTask<A extends unknown[] = unknown[], R = unknown> = (this: void, ...args: A) => R

/** Per-route options: `blocking: true` or this object. */
export interface BlockingRouteOptions {
  /** ms the handler may run once a thread has started it; 0 = no limit. Overrides `taskTimeout`. */
  timeout?: number
  /** Streaming routes: bytes in flight per stream. Default 1 MiB (1048576). */
  highWaterMark?: number
  /** Multipart parsing limits for this route. */
  multipart?: { limits?: MultipartLimits }
  /** Add a `Server-Timing` header with the queue wait and run time. Overrides the plugin's `serverTiming`. */
  serverTiming?: boolean
  /** Request properties cloned into the worker's request; replaces the plugin's `requestProperties`. */
  requestProperties?: string[]
}

export interface MultipartLimits {
  fieldNameSize?: number
  fieldSize?: number
  fields?: number
  fileSize?: number
  files?: number
  parts?: number
  headerPairs?: number
}

/** ioredis connection options, as far as this plugin reads them (any other ioredis option passes through). */
export interface QueueRedisOptions {
  host?: string
  port?: number
  username?: string
  password?: string
  db?: number
  tls?: object
  [option: string]: unknown
}

/** An ioredis instance: the plugin makes its own connections from it with `duplicate()`, and never closes it. */
export interface QueueRedisClient {
  duplicate (override?: object): unknown
  options: object
}

/** BullMQ's job options (any other BullMQ job option passes through). */
export interface QueueJobOptions {
  /** A job added twice with the same id is one job (while the first is kept in Redis). */
  jobId?: string
  /** ms before the job may run. */
  delay?: number
  /** Runs in all, the first included. Default 1. */
  attempts?: number
  /** ms between attempts, or `{ type: 'fixed' | 'exponential', delay }`. */
  backoff?: number | { type: 'fixed' | 'exponential' | (string & {}), delay?: number, jitter?: number }
  /** 1 (highest) to 2 097 152; jobs without a priority run first. */
  priority?: number
  removeOnComplete?: boolean | number | { age?: number, count?: number }
  removeOnFail?: boolean | number | { age?: number, count?: number }
  [option: string]: unknown
}

/** BullMQ's WorkerOptions for the jobs a process runs (any other BullMQ worker option passes through). */
export interface QueueWorkerOptions {
  /** ms a job's lock lasts; it is renewed every lockDuration / 2 while the job runs. BullMQ's default 30000. */
  lockDuration?: number
  /** ms between checks for jobs whose lock expired (their worker died). BullMQ's default 30000. */
  stalledInterval?: number
  /** Times a job may stall before it fails. BullMQ's default 1. */
  maxStalledCount?: number
  [option: string]: unknown
}

/** `queue`: background tasks become BullMQ jobs in Redis (see "Durable background tasks" in docs/api.md). */
export interface QueueOptions {
  /** A `redis://` URL, ioredis options, or an ioredis instance (duplicated, never closed). */
  connection: string | QueueRedisOptions | QueueRedisClient
  /** The BullMQ queue. Default `'fastify-blocking'`. */
  name?: string
  /** BullMQ's key prefix. Default `'bull'`. */
  prefix?: string
  /** This process also runs queued jobs on its pool. Default true; false = enqueue only. */
  work?: boolean
  /** Jobs this process runs at once. Default `maxThreads`. */
  concurrency?: number
  /** Default job options. Default `{ attempts: 1 }`. */
  jobs?: QueueJobOptions
  /** BullMQ WorkerOptions for the jobs this process runs. */
  worker?: QueueWorkerOptions
  /** ms an enqueue may wait for Redis before `whenDown` applies. Default 2000. */
  timeout?: number
  /** Redis unreachable: `'fail'` (503 `FST_BLOCKING_QUEUE_UNAVAILABLE`) or `'local'` (run in this process, logged at warn). Default `'fail'`. */
  whenDown?: 'fail' | 'local'
}

export interface BlockingPluginOptions {
  /** Which pool runs the work. Default `'piscina'`. */
  pool?: 'piscina' | 'tinypool'
  /** Default `os.availableParallelism()`. */
  maxThreads?: number
  /** Default: maxThreads (every thread starts with the app and stays). */
  minThreads?: number
  /** ms a spare thread lives. Default 30000. */
  idleTimeout?: number
  /** Requests that may wait for a thread; beyond it: 503. Default `maxThreads * 64`. */
  maxQueue?: number
  /** ms a handler may run; 0 = no limit. Default 0. */
  taskTimeout?: number
  /**
   * ms a stream or upload that has started may wait for its client without
   * progress (a stream's client reads nothing, an upload's client sends
   * nothing) before its connection is closed, which frees its place; 0 = no
   * limit. Default 60000.
   */
  stallTimeout?: number
  /** ms `app.close()` waits for running work and queued background tasks. Default 10000. */
  closeTimeout?: number
  /** Background tasks that may wait; beyond it `reply.background` throws. Default 10000. */
  backgroundQueue?: number
  /** Passed to every worker thread. */
  resourceLimits?: {
    maxOldGenerationSizeMb?: number
    maxYoungGenerationSizeMb?: number
    codeRangeSizeMb?: number
    stackSizeMb?: number
  }
  multipart?: { limits?: MultipartLimits, spoolThreshold?: number }
  /**
   * Lowers the OS scheduling priority of pool threads by this nice increment
   * (0 normal, up to 19), so that the event loop wins the CPU when the pool
   * saturates the cores. `{ requests, background }` sets the two kinds of work
   * apart: background tasks with a larger increment get threads of their own
   * (up to `maxThreads`, started when needed), which yield the CPU to request
   * handlers too. Needs the optional `@napi-rs/nice`; without it (or where the
   * OS refuses) threads run at normal priority and it is logged once at debug
   * level. Default 10 (see docs/benchmarks.md, "Priority", for why).
   */
  priority?: number | { requests?: number, background?: number }
  /**
   * Add a `Server-Timing` header to the responses of blocking routes:
   * `blocking-wait` (queue wait) and `blocking-run` (run time in the worker,
   * until the first chunk for a stream), in ms. Default false; a route's
   * `blocking: { serverTiming }` overrides it.
   */
  serverTiming?: boolean
  /**
   * Shed load before the queue fills: past a threshold, a blocking request
   * that would have to wait for a thread gets 503 `FST_BLOCKING_UNDER_PRESSURE`
   * with `Retry-After`, and `app.blocking.isUnderPressure()` is true.
   * 0 (the default) turns a threshold off.
   */
  pressure?: {
    /** ms: p99 of the queue waits over the last second, or the wait of the oldest queued request. */
    maxQueueWait?: number
    /** Requests waiting for a thread. */
    maxQueued?: number
  }
  /**
   * Log once per route (at warn level) a handler or route hook that holds the
   * event loop for longer than `thresholdMs` (default 100) without yielding,
   * with a hint to make it `blocking`. `true` uses the default. Off by default.
   */
  detectBlocking?: boolean | { thresholdMs?: number }
  /**
   * Request properties set by hooks (`request.user` of @fastify/jwt,
   * `request.cookies` of @fastify/cookie, ...) cloned into the worker's
   * request when a blocking handler is sent; an absent one is undefined.
   * A route's `blocking: { requestProperties }` replaces this list.
   */
  requestProperties?: string[]
  /** Background tasks become durable BullMQ jobs in Redis, run by any process of the app (needs `bullmq` and `ioredis`). */
  queue?: QueueOptions
}

export interface Percentiles {
  p50: number
  p99: number
}

export interface LaneStats {
  queued: number
  running: number
  completed: number
  failed: number
  waitTime: Percentiles
  runTime: Percentiles
}

export interface BlockingStats extends LaneStats {
  threads: number
  /** Share of the request threads' time spent running tasks since the pool started, 0..1 (background threads of their own are not counted). */
  utilization: number
  background: LaneStats
  /** Each blocking route's share of the request counts, by `METHOD /pattern`. */
  routes: Record<string, LaneStats>
  /** With the `queue` option: the durable queue. */
  queue?: QueueStats
}

/** BullMQ's job counts, as Redis last gave them. */
export interface QueueCounts {
  waiting: number
  active: number
  delayed: number
  prioritized: number
  completed: number
  failed: number
}

export interface QueueStats {
  /** The BullMQ queue. */
  name: string
  /** This process's connection to Redis is up. */
  connected: boolean
  /** The whole queue's counts (every process's jobs), at most about a second old; undefined until Redis has answered. */
  counts: QueueCounts | undefined
  /** Jobs this process added to the queue. */
  added: number
  /** Tasks this process ran in process because Redis was down (`whenDown: 'local'`). */
  ranLocally: number
  /** Tasks refused because Redis was down (`whenDown: 'fail'`), or dropped when no response could say so. */
  unavailable: number
  /** Jobs this process runs now, and has run to an end, since it started. */
  running: number
  completed: number
  failed: number
}

/** `startQueueWorker()`: a process that runs durable jobs, without HTTP. */
export interface StartQueueWorkerOptions {
  /** Task modules: paths (absolute, or from the current directory), `file:` URLs, or globs (`tasks/*.js`). */
  tasks: string | URL | Array<string | URL>
  connection: QueueOptions['connection']
  /** The BullMQ queue. Default `'fastify-blocking'`. */
  name?: string
  prefix?: string
  pool?: 'piscina' | 'tinypool'
  /** Default `os.availableParallelism()`. */
  maxThreads?: number
  /** Jobs run at once. Default `maxThreads`. */
  concurrency?: number
  worker?: QueueWorkerOptions
  /** ms a job may run; 0 = no limit. Default 0. */
  taskTimeout?: number
  /** ms close() waits for running jobs. Default 10000. */
  closeTimeout?: number
  /** Fastify's `logger` option (a pino logger or its options). Default: info level to stdout. */
  logger?: boolean | object
}

export interface QueueWorker {
  /** Stops fetching jobs, lets running ones finish within `closeTimeout`, then closes the pool and every Redis connection. */
  close (): Promise<void>
  stats (): BlockingStats
}

/** Options of one `run`: in the spirit of piscina's `run(task, options)`. */
export interface RunOptions {
  /** Aborting it drops the call if it has not started and rejects the promise with an AbortError. */
  signal?: AbortSignal
  /** ms the call may run once a thread has started it (0 = no limit); replaces `taskTimeout`. */
  timeout?: number
  /** ArrayBuffers (and MessagePorts) in the arguments to move rather than copy: the caller's are emptied. */
  transferList?: ReadonlyArray<ArrayBuffer | import('node:worker_threads').MessagePort>
}

/** Runs defined functions in the pool. */
export interface BlockingRunner {
  /** Runs a function made with defineHandler or defineTask in the pool and resolves to its return value. */
  run<A extends unknown[], R> (fn: (...args: A) => R, ...args: A): Promise<Awaited<R>>
  /** `run()` with options: a signal, a timeout, a transfer list. */
  runWith<A extends unknown[], R> (options: RunOptions, fn: (...args: A) => R, ...args: A): Promise<Awaited<R>>
}

/**
 * `request.blocking`: `run()` and `runWith()` bound to the request, cancelled
 * (AbortError) when its client goes away before the call starts, and logged
 * with its reqId.
 */
export type RequestBlocking = BlockingRunner

export interface BlockingDecorator extends BlockingRunner {
  stats (): BlockingStats
  /**
   * With `queue`: adds a durable job for `task` (made with defineTask), with BullMQ job options
   * (`jobId`, `delay`, `attempts`, `backoff`, `priority`, ...). Without `queue`: runs it in the pool.
   */
  enqueue<A extends unknown[]> (task: BlockingTask<A>, args: A, jobOptions?: QueueJobOptions): Promise<{ id: string }>
  /**
   * True when the request queue is full or past a `pressure` threshold. For
   * `@fastify/under-pressure`: `healthCheck: async () => !app.blocking.isUnderPressure()`.
   */
  isUnderPressure (): boolean
}

export interface ReadMultipartOptions {
  limits?: MultipartLimits
  /** Files larger than this many bytes are spooled to a temporary file. */
  spoolThreshold?: number
}

export interface ReadMultipartResult {
  /** Field values by name; a repeated name gives an array. */
  fields: Record<string, string | string[]>
  files: WorkerFile[]
}
