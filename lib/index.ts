// fastify-blocking: route handlers, tasks and uploads on a shared worker pool.
//
// This file is the table of contents. A request goes: options (options.ts) ->
// a route marked `blocking` is found in onRoute (routes.ts), which swaps its
// handler (route.ts) -> the request's snapshot (request.ts) is queued by the
// scheduler (scheduler.ts, lane.ts) -> handed to a thread on its channel
// (threads.ts; the pools in pools/ only start and end threads) -> the worker
// runs it (workers/worker.ts) -> its outcome is replayed on the reply
// (reply.ts). Streams, uploads, background tasks and durable jobs have a file
// each (stream.ts, multipart.ts, background.ts, durable.ts). What both threads
// speak is in lib/common/ (protocol.ts first).
import type {
  ContextConfigDefault,
  FastifyBaseLogger,
  FastifyPluginAsync,
  FastifySchema,
  FastifyTypeProvider,
  FastifyTypeProviderDefault,
  RawReplyDefaultExpression,
  RawRequestDefaultExpression,
  RawServerBase,
  RawServerDefault,
  RouteGenericInterface,
  RouteOptions
} from 'fastify'
import fp from 'fastify-plugin'
import { defineHandlerUntyped, defineTaskUntyped, type DefineOptions } from './common/define.js'
import { errors, FST_BLOCKING_INVALID_OPTION, FST_BLOCKING_REGISTERED_IN_WORKER } from './common/errors.js'
import { kWorkerContext, type WorkerContext } from './common/protocol.js'
import type {
  BlockingHandler,
  BlockingPluginOptions,
  BlockingRouteOptions,
  BlockingTask,
  QueueWorker,
  ReadMultipartOptions,
  ReadMultipartResult,
  RequestBlocking,
  StartQueueWorkerOptions,
  BlockingDecorator
} from './common/types.js'
import { Background } from './background.js'
import { decorate } from './decorators.js'
import { attachQueue, type Durable } from './durable.js'
import { registerParser } from './multipart.js'
import { resolveOptions } from './options.js'
import { createPools } from './pools/index.js'
import { startWorkerProcess } from './queue-process.js'
import { BlockingRoutes } from './routes.js'
import { Scheduler } from './scheduler.js'
import { STREAMS_PER_THREAD } from './threads.js'
import { watchRoutes } from './unseen.js'

export * from './common/errors.js'
export type * from './common/types.js'
export { channels } from './diagnostics.js'
export type { TaskMessage, TaskOutcome } from './diagnostics.js'

/**
 * Tags a route handler so that a worker can find it: `moduleUrl` is the
 * module's own `import.meta.url` (or `__filename`). Returns `fn` itself.
 */
export function defineHandler<G extends RouteGenericInterface = RouteGenericInterface, F extends BlockingHandler<G> = BlockingHandler<G>> (
  moduleUrl: string | URL,
  fn: F
): F {
  return defineHandlerUntyped(moduleUrl, fn)
}

/** Tags a background task (or any function for `app.blocking.run`). Returns `fn` itself. */
export function defineTask<F extends BlockingTask<never[]>> (moduleUrl: string | URL, fn: F, options?: DefineOptions): F {
  return defineTaskUntyped(moduleUrl, fn, options)
}

const fastifyBlocking: FastifyPluginAsync<BlockingPluginOptions> = async (fastify, opts) => {
  refuseInWorker()
  if (fastify.hasDecorator('blocking')) {
    throw new FST_BLOCKING_INVALID_OPTION('fastify-blocking is already registered: register it once, at the root of the app')
  }
  const options = resolveOptions(opts)
  // Background tasks at a lower priority than requests need threads of their
  // own: an unprivileged thread cannot raise its priority back after a task.
  const ownBackgroundThreads = options.backgroundPriority !== options.priority
  const scheduler = new Scheduler({
    capacity: options.maxThreads,
    concurrency: STREAMS_PER_THREAD + 1,
    maxQueue: options.maxQueue,
    backgroundQueue: options.backgroundQueue,
    pressure: options.pressure,
    backgroundCapacity: ownBackgroundThreads ? options.maxThreads : 0
  })
  const pools = await createPools(options, scheduler, fastify.log)
  const background = new Background(scheduler, options.taskTimeout, fastify.log)
  const routes = new BlockingRoutes(options, scheduler, background)
  /** A priority the threads could not take is said once, at debug level: they run at normal priority. */
  const refusedPriority = new Set<string>()
  scheduler.attach(pools.request, pools.background, {
    minThreads: options.minThreads,
    idleTimeout: options.idleTimeout,
    modules: () => routes.modules(),
    priorityRefused (threads, why) {
      if (refusedPriority.has(threads)) return
      refusedPriority.add(threads)
      const priority = threads === 'pool threads' ? options.priority : options.backgroundPriority
      fastify.log.debug({ priority }, `fastify-blocking: ${threads} run at normal priority: ${why}`)
    }
  })

  registerParser(fastify)
  // An app made before this module was imported: routes from here on are watched.
  watchRoutes(fastify)
  fastify.addHook('onRoute', function (route) { routes.onRoute(this, route) })
  fastify.addHook('onReady', () => routes.check())

  // With `queue`, background tasks are durable jobs (durable.ts); closed below, once the pool is.
  const durable: Durable | undefined = options.queue === undefined ? undefined : await attachQueue(fastify, opts, options, scheduler, background)

  fastify.addHook('onClose', async () => {
    await scheduler.close(options.closeTimeout, (job) => {
      // Background tasks are logged with their request's reqId by background.ts.
      if (job.lane === 'request') fastify.log.error({ task: job.label }, `fastify-blocking: closing, dropped ${job.label}, which had not started`)
    })
    await pools.destroy()
    await durable?.close()
  })

  decorate(fastify, { options, scheduler, pools, routes, background, durable })
}

/** A module imported by a worker thread that builds the app would start a pool inside the pool. */
function refuseInWorker (): void {
  const inWorker = (globalThis as Record<symbol, WorkerContext | undefined>)[kWorkerContext]
  if (inWorker === undefined) return
  inWorker.registeredBy = inWorker.loading ?? 'a module'
  throw new FST_BLOCKING_REGISTERED_IN_WORKER(
    `fastify-blocking was registered inside one of its worker threads, by ${inWorker.registeredBy}: ` +
    'move blocking handlers and tasks into their own module that does not build the app'
  )
}

const plugin = fp(fastifyBlocking, { name: 'fastify-blocking', fastify: '5.x' })

/**
 * Runs durable jobs without HTTP (the `queue` option's workers on other
 * machines): imports the task modules, then runs their jobs on a pool until
 * `close()`. The bin `fastify-blocking-worker` calls it.
 */
export function startQueueWorker (options: StartQueueWorkerOptions): Promise<QueueWorker> {
  return startWorkerProcess(plugin, options)
}

export { plugin as fastifyBlocking, errors }
export default plugin

type BlockingFlag = true | BlockingRouteOptions

// The type parameters below must repeat Fastify's own declarations for the interfaces to merge, used or not.
/* eslint-disable @typescript-eslint/no-unused-vars */
declare module 'fastify' {
  interface RouteShorthandOptions<
    RawServer extends RawServerBase = RawServerDefault,
    RawRequest extends RawRequestDefaultExpression<RawServer> = RawRequestDefaultExpression<RawServer>,
    RawReply extends RawReplyDefaultExpression<RawServer> = RawReplyDefaultExpression<RawServer>,
    RouteGeneric extends RouteGenericInterface = RouteGenericInterface,
    ContextConfig = ContextConfigDefault,
    SchemaCompiler extends FastifySchema = FastifySchema,
    TypeProvider extends FastifyTypeProvider = FastifyTypeProviderDefault,
    Logger extends FastifyBaseLogger = FastifyBaseLogger
  > {
    /** Run this route's handler on the worker pool; the handler must be made with `defineHandler`. */
    blocking?: boolean | BlockingRouteOptions
  }

  interface FastifyReply {
    /** Runs `task` (made with defineTask) in the pool once the response has been sent. */
    background<A extends unknown[]> (task: BlockingTask<A>, ...args: A): FastifyReply
  }

  interface FastifyRequest {
    /** `run()` and `runWith()` bound to this request: cancelled when its client goes away, logged with its reqId. */
    blocking: RequestBlocking
    /** Parses this request's multipart body in the pool; spooled files are deleted once the response has been sent. */
    readMultipart (options?: ReadMultipartOptions): Promise<ReadMultipartResult>
  }

  interface FastifyContextConfig {
    /** Same as the route option `blocking`. */
    blocking?: boolean | BlockingRouteOptions
  }

  interface RouteShorthandMethod<
    RawServer extends RawServerBase = RawServerDefault,
    RawRequest extends RawRequestDefaultExpression<RawServer> = RawRequestDefaultExpression<RawServer>,
    RawReply extends RawReplyDefaultExpression<RawServer> = RawReplyDefaultExpression<RawServer>,
    TypeProvider extends FastifyTypeProvider = FastifyTypeProviderDefault,
    Logger extends FastifyBaseLogger = FastifyBaseLogger
  > {
    /** A blocking route: its handler runs in a worker and gets the worker-side request and reply. */
    <RouteGeneric extends RouteGenericInterface = RouteGenericInterface, ContextConfig = ContextConfigDefault,
      const SchemaCompiler extends FastifySchema = FastifySchema>(
      path: string,
      opts: RouteShorthandOptions<RawServer, RawRequest, RawReply, RouteGeneric, ContextConfig, SchemaCompiler, TypeProvider, Logger> &
        ({ blocking: BlockingFlag } | { config: { blocking: BlockingFlag } }),
      handler: BlockingHandler<RouteGeneric>
    ): FastifyInstance<RawServer, RawRequest, RawReply, Logger, TypeProvider>
  }

  interface FastifyInstance<
    RawServer extends RawServerBase = RawServerDefault,
    RawRequest extends RawRequestDefaultExpression<RawServer> = RawRequestDefaultExpression<RawServer>,
    RawReply extends RawReplyDefaultExpression<RawServer> = RawReplyDefaultExpression<RawServer>,
    Logger extends FastifyBaseLogger = FastifyBaseLogger,
    TypeProvider extends FastifyTypeProvider = FastifyTypeProviderDefault
  > {
    /** The worker pool: `run()` a defined function in it, read its `stats()`. */
    blocking: BlockingDecorator
    /** A blocking route given as a whole: its handler runs in a worker. */
    route<RouteGeneric extends RouteGenericInterface = RouteGenericInterface, ContextConfig = ContextConfigDefault,
      const SchemaCompiler extends FastifySchema = FastifySchema>(
      opts: Omit<RouteOptions<RawServer, RawRequest, RawReply, RouteGeneric, ContextConfig, SchemaCompiler, TypeProvider, Logger>, 'handler'> &
        { blocking: BlockingFlag, handler: BlockingHandler<RouteGeneric> }
    ): FastifyInstance<RawServer, RawRequest, RawReply, Logger, TypeProvider>
  }
}
/* eslint-enable @typescript-eslint/no-unused-vars */
