// fastify-blocking: route handlers, tasks and uploads on a shared worker pool.
//
// Read this file as the table of contents: options (options.ts) -> one pool
// (pools/) behind one scheduler (scheduler.ts) -> routes marked `blocking`
// get their handler swapped in onRoute (route.ts) -> the worker entry runs it
// (workers/worker.ts). Startup checks run in onReady; onClose drains and
// destroys the pool.
import type {
  ContextConfigDefault,
  FastifyBaseLogger,
  FastifyInstance,
  FastifyPluginAsync,
  FastifyReply,
  FastifyRequest,
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
import { definedIn, definitionOf, defineHandlerUntyped, defineTaskUntyped, moduleOf, type DefineOptions } from './common/define.js'
import { errors, FST_BLOCKING_HANDLER_NOT_DEFINED, FST_BLOCKING_INVALID_OPTION, FST_BLOCKING_REGISTERED_IN_WORKER } from './common/errors.js'
import { resolveOptions, resolveRouteOptions } from './options.js'
import { createPool } from './pools/index.js'
import { Background } from './background.js'
import { cloneablePart } from './common/clone.js'
import { attachQueue, enqueue, type Durable } from './durable.js'
import { startWorkerProcess } from './queue-process.js'
import { interceptMultipart, readMultipart, registerParser } from './multipart.js'
import { createBlockingHandler, kBlockingHandler } from './route.js'
import type { BlockingRoute } from './request.js'
import { detectBlocking } from './detect.js'
import { markSeen, routeLabel, watchRoutes } from './unseen.js'
import { Meter } from './lane.js'
import { run } from './run.js'
import { Scheduler } from './scheduler.js'
import { handlerNumbers, routeConfigs, STREAMS_PER_THREAD } from './threads.js'
import type {
  BlockingDecorator,
  BlockingHandler,
  BlockingPluginOptions,
  BlockingRouteOptions,
  BlockingStats,
  BlockingTask,
  QueueWorker,
  ReadMultipartOptions,
  ReadMultipartResult,
  RequestBlocking,
  StartQueueWorkerOptions
} from './common/types.js'
import { kWorkerContext, type WorkerContext } from './common/protocol.js'

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
  const inWorker = (globalThis as Record<symbol, WorkerContext | undefined>)[kWorkerContext]
  if (inWorker !== undefined) {
    inWorker.registeredBy = inWorker.loading ?? 'a module'
    throw new FST_BLOCKING_REGISTERED_IN_WORKER(
      `fastify-blocking was registered inside one of its worker threads, by ${inWorker.registeredBy}: ` +
      'move blocking handlers and tasks into their own module that does not build the app'
    )
  }
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
  const poolConfig = {
    maxThreads: options.maxThreads,
    minThreads: options.minThreads,
    idleTimeout: options.idleTimeout,
    resourceLimits: options.resourceLimits,
    workerData: { slots: scheduler.slots, gauges: scheduler.gauges, priority: options.priority },
    onError: (err: Error) => fastify.log.error({ err }, 'fastify-blocking: a worker thread failed while idle; it was replaced')
  }
  const pool = await createPool(options.pool, poolConfig)
  const backgroundPool = ownBackgroundThreads
    ? await createPool(options.pool, {
      ...poolConfig,
      // Started when background tasks come.
      minThreads: 0,
      workerData: { ...poolConfig.workerData, priority: options.backgroundPriority }
    })
    : undefined

  const routes: BlockingRoute[] = []
  const problems: string[] = []

  /** A priority the threads could not take is said once, at debug level: they run at normal priority. */
  const refusedPriority = new Set<string>()
  scheduler.attach(pool, backgroundPool, {
    minThreads: options.minThreads,
    idleTimeout: options.idleTimeout,
    // A thread imports every blocking handler's module before it takes work.
    modules: () => [...new Set(routes.map((r) => moduleOf(r.fn)))],
    priorityRefused (threads, why) {
      if (refusedPriority.has(threads)) return
      refusedPriority.add(threads)
      const priority = threads === 'pool threads' ? options.priority : options.backgroundPriority
      fastify.log.debug({ priority }, `fastify-blocking: ${threads} run at normal priority: ${why}`)
    }
  })
  const background = new Background(scheduler, options.taskTimeout, fastify.log)

  registerParser(fastify)
  // An app made before this module was imported: routes from here on are watched.
  watchRoutes(fastify)
  fastify.addHook('onRoute', function (route) {
    markSeen(route)
    const handler = route.handler as Function & { [kBlockingHandler]?: BlockingRoute }
    if (handler[kBlockingHandler] !== undefined) return
    const label = routeLabel(route)
    const given = (route as { blocking?: unknown }).blocking ?? (route.config as { blocking?: unknown } | undefined)?.blocking
    const routeOptions = resolveRouteOptions(label, given, options)
    if (options.detectBlocking > 0) detectBlocking(route, label, options.detectBlocking, routeOptions !== undefined, this.log)
    const methods = Array.isArray(route.method) ? route.method : [route.method]
    // Fastify reads no body for GET and HEAD.
    const takesBody = methods.some((m) => m !== 'GET' && m !== 'HEAD')
    if (routeOptions === undefined) {
      // request.readMultipart() needs the body unread: where @fastify/multipart
      // does not leave it so, routes that can carry a body get our parser.
      if (takesBody) interceptMultipart(route, !this.hasContentTypeParser('multipart/form-data'))
      return
    }
    const definition = definitionOf(handler)
    if (definition === undefined) {
      // The automatic HEAD route of a GET route has the same problem: say it once.
      if (route.method === 'HEAD' && routes.some((r) => r.url === route.url) === false && problems.some((p) => p.startsWith(`GET ${route.url}:`))) return
      problems.push(
        `${label}: its handler was not made with defineHandler. Move it into a module of its own and wrap it: ` +
        'export const handler = defineHandler(import.meta.url, (request, reply) => { ... })'
      )
      return
    }
    // request.routeOptions.config in the worker: cloned once, here, as Fastify builds it.
    const config = { ...(cloneablePart(route.config ?? {}) as object), url: route.url, method: route.method }
    const record: BlockingRoute = {
      fn: definition.id,
      number: handlerNumbers.numberOf(definition.id),
      label,
      url: route.url,
      route: routeConfigs.push(config) - 1,
      generator: definition.generator,
      options: routeOptions,
      meter: new Meter()
    }
    routes.push(record)
    if (takesBody && !definition.generator) interceptMultipart(route, true)
    route.handler = createBlockingHandler(record, scheduler, background)
  })

  fastify.addHook('onReady', async () => {
    if (problems.length > 0) throw new FST_BLOCKING_HANDLER_NOT_DEFINED(problems.join('\n'))
    // The threads minThreads keeps start now and import every handler's
    // module before they take work: the first requests do not pay for it.
    const threads = scheduler.requestThreads
    await threads.start(Math.max(1, options.minThreads))
    if (routes.length > 0) {
      // A handler a worker cannot find is reported at startup, not on the first request.
      const fns = [...new Set(routes.map((r) => r.fn))]
      // Once more on a fresh thread if the one asked died meanwhile (a thread that
      // ended itself between tasks); a module that kills its thread fails twice.
      const { missing, counts } = await threads.check(fns).catch(async () => {
        await threads.start(1)
        return await threads.check(fns)
      })
      for (const route of routes) {
        const why = missing[route.fn]
        const moduleUrl = moduleOf(route.fn)
        const here = definedIn(moduleUrl)
        if (why !== undefined) {
          problems.push(`${route.label}: a worker thread cannot load its handler (${route.fn}): ${why}`)
        } else if (counts[moduleUrl] !== here) {
          // Identity is the order of definition: a module that defines more or
          // fewer functions in a worker would run the wrong one.
          problems.push(
            `${route.label}: its module makes ${here} definitions on the main thread but ${counts[moduleUrl] ?? 0} in a worker thread; ` +
            'call defineHandler and defineTask at the top level of the module, the same on every thread'
          )
        }
      }
    }
    if (problems.length > 0) {
      throw new FST_BLOCKING_HANDLER_NOT_DEFINED(problems.join('\n'))
    }
    // Said once, as for the request threads: one background thread starts now.
    await scheduler.ownBackgroundThreads?.start(1)
  })

  // With `queue`, background tasks are durable jobs (durable.ts); closed below, once the pool is.
  const durable: Durable | undefined = options.queue === undefined ? undefined : await attachQueue(fastify, opts, options, scheduler, background)

  fastify.addHook('onClose', async () => {
    await scheduler.close(options.closeTimeout, (job) => {
      // Background tasks are logged with their request's reqId by background.ts.
      if (job.lane === 'request') fastify.log.error({ task: job.label }, `fastify-blocking: closing, dropped ${job.label}, which had not started`)
    })
    await Promise.all([pool.destroy(), backgroundPool?.destroy()])
    await durable?.close()
  })

  const decorator: BlockingDecorator = {
    run (fn, ...args) {
      return run(scheduler, options.taskTimeout, { log: fastify.log }, fn, args) as never
    },
    runWith (runOptions, fn, ...args) {
      return run(scheduler, options.taskTimeout, { log: fastify.log }, fn, args, runOptions) as never
    },
    stats (): BlockingStats {
      const { request, background, utilization } = scheduler.stats()
      const byRoute: BlockingStats['routes'] = {}
      for (const route of routes) byRoute[route.label] = route.meter.stats()
      return {
        threads: pool.threads() + (backgroundPool?.threads() ?? 0),
        ...request,
        utilization,
        background,
        routes: byRoute,
        ...(durable === undefined ? {} : { queue: durable.queue.stats() })
      }
    },
    enqueue (task, args, jobOptions) {
      return enqueue(durable, background, task, args, jobOptions)
    },
    isUnderPressure () {
      return scheduler.underPressure()
    }
  }
  fastify.decorate('blocking', decorator)
  fastify.decorateRequest('blocking', {
    getter (this: FastifyRequest): RequestBlocking {
      const caller = { log: this.log, request: this }
      return {
        run: (fn, ...args) => run(scheduler, options.taskTimeout, caller, fn, args) as never,
        runWith: (runOptions, fn, ...args) => run(scheduler, options.taskTimeout, caller, fn, args, runOptions) as never
      }
    }
  })
  fastify.decorateRequest('readMultipart', function (this: FastifyRequest, readOptions?: ReadMultipartOptions) {
    return readMultipart(this, scheduler, options, readOptions)
  })
  fastify.decorateReply('background', function (this: FastifyReply, task: unknown, ...args: unknown[]) {
    background.call(this, task, args)
    return this
  })
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
