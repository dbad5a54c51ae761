// The blocking routes of an app: found in onRoute, where their handler is
// swapped for one that runs it on the pool (route.ts), and checked in onReady
// against what the pool's threads can load.
import type { FastifyInstance, RouteOptions } from 'fastify'
import { cloneablePart } from './common/clone.js'
import { definedIn, definitionOf, moduleOf } from './common/define.js'
import { FST_BLOCKING_HANDLER_NOT_DEFINED } from './common/errors.js'
import type { Background } from './background.js'
import { detectBlocking } from './detect.js'
import { Meter } from './lane.js'
import { interceptMultipart } from './multipart.js'
import { resolveRouteOptions, type ResolvedOptions } from './options.js'
import type { BlockingRoute } from './request.js'
import { createBlockingHandler } from './route.js'
import type { Scheduler } from './scheduler.js'
import { kBlockingHandler } from './symbols.js'
import { handlerNumbers, routeConfigs } from './threads.js'
import { markSeen, routeLabel } from './unseen.js'

export class BlockingRoutes {
  readonly list: BlockingRoute[] = []
  /** What is wrong with the routes declared so far: said at once, in onReady. */
  private readonly problems: string[] = []

  constructor (
    private readonly options: ResolvedOptions,
    private readonly scheduler: Scheduler,
    private readonly background: Background
  ) {}

  /** The modules of every blocking handler: a thread imports them before it takes work. */
  modules (): string[] {
    return [...new Set(this.list.map((r) => moduleOf(r.fn)))]
  }

  /** The onRoute hook: a route marked `blocking` gets a handler that runs its own on the pool. */
  onRoute (app: FastifyInstance, route: RouteOptions): void {
    markSeen(route)
    const handler = route.handler as unknown as Function & { [kBlockingHandler]?: BlockingRoute }
    if (handler[kBlockingHandler] !== undefined) return
    const label = routeLabel(route)
    const given = (route as { blocking?: unknown }).blocking ?? (route.config as { blocking?: unknown } | undefined)?.blocking
    const routeOptions = resolveRouteOptions(label, given, this.options)
    if (this.options.detectBlocking > 0) detectBlocking(route, label, this.options.detectBlocking, routeOptions !== undefined, app.log)
    const methods = Array.isArray(route.method) ? route.method : [route.method]
    // Fastify reads no body for GET and HEAD.
    const takesBody = methods.some((m) => m !== 'GET' && m !== 'HEAD')
    if (routeOptions === undefined) {
      // request.readMultipart() needs the body unread: where @fastify/multipart
      // does not leave it so, routes that can carry a body get our parser.
      if (takesBody) interceptMultipart(route, !app.hasContentTypeParser('multipart/form-data'))
      return
    }
    const definition = definitionOf(handler)
    if (definition === undefined) {
      // The automatic HEAD route of a GET route has the same problem: say it once.
      if (route.method === 'HEAD' && !this.list.some((r) => r.url === route.url) && this.problems.some((p) => p.startsWith(`GET ${route.url}:`))) return
      this.problems.push(
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
    this.list.push(record)
    if (takesBody && !definition.generator) interceptMultipart(route, true)
    route.handler = createBlockingHandler(record, this.scheduler, this.background)
  }

  /**
   * The onReady hook: the threads minThreads keeps start now and import every
   * handler's module before they take work, so that the first requests do not
   * pay for it; a handler a worker cannot find is reported now, not on the
   * first request.
   */
  async check (): Promise<void> {
    const { problems, scheduler } = this
    if (problems.length > 0) throw new FST_BLOCKING_HANDLER_NOT_DEFINED(problems.join('\n'))
    const threads = scheduler.requestThreads
    await threads.start(Math.max(1, this.options.minThreads))
    if (this.list.length > 0) {
      const fns = [...new Set(this.list.map((r) => r.fn))]
      // Once more on a fresh thread if the one asked died meanwhile (a thread that
      // ended itself between tasks); a module that kills its thread fails twice.
      const { missing, counts } = await threads.check(fns).catch(async () => {
        await threads.start(1)
        return await threads.check(fns)
      })
      for (const route of this.list) {
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
    if (problems.length > 0) throw new FST_BLOCKING_HANDLER_NOT_DEFINED(problems.join('\n'))
    // Said once, as for the request threads: one background thread starts now.
    await scheduler.ownBackgroundThreads?.start(1)
  }
}
