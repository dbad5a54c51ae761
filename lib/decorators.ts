// What the plugin adds to Fastify's objects: `app.blocking`, `request.blocking`,
// `request.readMultipart()`, `reply.background()`, and the private request and
// reply state (symbols.ts), declared once with its starting value.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { BlockingDecorator, BlockingStats, ReadMultipartOptions, RequestBlocking } from './common/types.js'
import type { Background } from './background.js'
import { enqueue, type Durable } from './durable.js'
import { readMultipart } from './multipart.js'
import type { ResolvedOptions } from './options.js'
import type { Pools } from './pools/index.js'
import type { BlockingRoutes } from './routes.js'
import { run } from './run.js'
import type { Scheduler } from './scheduler.js'
import { replyState, requestState } from './symbols.js'

export interface Parts {
  options: ResolvedOptions
  scheduler: Scheduler
  pools: Pools
  routes: BlockingRoutes
  background: Background
  durable: Durable | undefined
}

export function decorate (fastify: FastifyInstance, { options, scheduler, pools, routes, background, durable }: Parts): void {
  const { taskTimeout } = options
  const app = { log: fastify.log }
  const decorator: BlockingDecorator = {
    run: (fn, ...args) => run(scheduler, taskTimeout, app, fn, args) as never,
    runWith: (runOptions, fn, ...args) => run(scheduler, taskTimeout, app, fn, args, runOptions) as never,
    stats (): BlockingStats {
      const { request, background, utilization } = scheduler.stats()
      const byRoute: BlockingStats['routes'] = {}
      for (const route of routes.list) byRoute[route.label] = route.meter.stats()
      return {
        threads: pools.threads(),
        ...request,
        utilization,
        background,
        routes: byRoute,
        ...(durable === undefined ? {} : { queue: durable.queue.stats() })
      }
    },
    enqueue: (task, args, jobOptions) => enqueue(durable, background, task, args, jobOptions),
    isUnderPressure: () => scheduler.underPressure()
  }
  fastify.decorate('blocking', decorator)
  fastify.decorateRequest('blocking', {
    getter (this: FastifyRequest): RequestBlocking {
      const caller = { log: this.log, request: this }
      return {
        run: (fn, ...args) => run(scheduler, taskTimeout, caller, fn, args) as never,
        runWith: (runOptions, fn, ...args) => run(scheduler, taskTimeout, caller, fn, args, runOptions) as never
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
  for (const key of requestState) fastify.decorateRequest(key, null)
  for (const key of replyState) fastify.decorateReply(key, null)
}
