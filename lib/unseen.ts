// A route declared with `blocking` that the plugin never saw would run its
// handler on the main thread, silently: the plugin was registered without
// `await` (its onRoute hook came after the route), or in a context that does
// not reach the route. Fastify publishes every new instance on the
// 'fastify.initialization' diagnostics channel before any route can be
// declared on it: a hook added there sees every route of the app, and the
// app's ready() fails for those the plugin did not wrap.
import { channel } from 'node:diagnostics_channel'
import type { FastifyInstance, RouteOptions } from 'fastify'
import { FST_BLOCKING_HANDLER_NOT_DEFINED } from './common/errors.js'
import { kDeclared } from './symbols.js'

type Watched = FastifyInstance & { [kDeclared]?: RouteOptions[] }

/** Routes the plugin's own onRoute hook has seen. */
const seen = new WeakSet<RouteOptions>()

export function markSeen (route: RouteOptions): void {
  seen.add(route)
}

export function routeLabel (route: RouteOptions): string {
  const method = Array.isArray(route.method) ? route.method.join(',') : route.method
  return `${method} ${route.url}`
}

function declaresBlocking (route: RouteOptions): boolean {
  const given = (route as { blocking?: unknown }).blocking ?? (route.config as { blocking?: unknown } | undefined)?.blocking
  return given !== undefined && given !== false
}

/**
 * Watches the routes of `fastify` and of the contexts it makes from now on
 * (they inherit the hooks it has): once per app, when Fastify creates it, or
 * where the plugin is registered if the app was made before this module loaded.
 */
export function watchRoutes (fastify: FastifyInstance): void {
  const app = fastify as Watched
  if (app[kDeclared] !== undefined) return
  const declared: RouteOptions[] = []
  // Encapsulated contexts inherit it (they are made with Object.create()).
  app[kDeclared] = declared
  app.addHook('onRoute', (route) => {
    if (declaresBlocking(route)) declared.push(route)
  })
  app.addHook('onReady', async () => {
    const unseen = declared.filter((route) => !seen.has(route))
    if (unseen.length === 0) return
    throw new FST_BLOCKING_HANDLER_NOT_DEFINED(unseen.map((route) =>
      `${routeLabel(route)}: declared with blocking, but fastify-blocking never saw the route, so its handler would run on the main thread. ` +
      'Register the plugin with await before declaring routes (await app.register(blocking)), at the root of the app or in a context that contains the route'
    ).join('\n'))
  })
}

channel('fastify.initialization').subscribe((message) => {
  watchRoutes((message as { fastify: FastifyInstance }).fastify)
})
