// detectBlocking: finds the routes that should be `blocking`. The handler of
// every other route, and the route-level hooks of every route, are timed from
// call to return, less the timed calls nested in it; a call that held the
// event loop past the threshold is logged once per route and stage. Two clock
// reads per call, nothing else.
//
// What it cannot see: the synchronous stretches of an async function after its
// first `await` (they run from the promise machinery, not from our call), and
// hooks added with `addHook` (Fastify does not hand them to onRoute).
import { performance } from 'node:perf_hooks'
import type { FastifyBaseLogger, RouteOptions } from 'fastify'
import { kTimed } from './symbols.js'

const HOOKS = [
  'onRequest', 'preParsing', 'preValidation', 'preHandler', 'preSerialization',
  'onSend', 'onResponse', 'onError', 'onTimeout', 'onRequestAbort'
] as const

type AnyFunction = ((this: unknown, ...args: unknown[]) => unknown) & { [kTimed]?: true }

/**
 * ms spent in timed calls nested inside the one running now: a callback hook
 * that calls done() synchronously runs the next hook (or the handler) inside
 * its own call, and that time is not its own.
 */
let nested = 0

function timed (fn: AnyFunction, threshold: number, report: (ms: number) => void): AnyFunction {
  if (fn[kTimed] === true) return fn
  const wrapper = function (this: unknown, ...args: unknown[]): unknown {
    const outer = nested
    nested = 0
    const start = performance.now()
    try {
      return fn.apply(this, args)
    } finally {
      const total = performance.now() - start
      const own = total - nested
      nested = outer + total
      if (own >= threshold) report(own)
    }
  }
  // Fastify tells callback hooks from async ones by their arity and kind.
  Object.defineProperty(wrapper, 'length', { value: fn.length })
  Object.defineProperty(wrapper, 'name', { value: fn.name })
  Object.defineProperty(wrapper, kTimed, { value: true })
  return wrapper
}

/**
 * Wraps `route`'s handler (unless it runs in the pool) and route-level hooks
 * so that a call holding the event loop for `threshold` ms or more is logged
 * once, at warn level, on `log`.
 */
export function detectBlocking (route: RouteOptions, label: string, threshold: number, blocking: boolean, log: FastifyBaseLogger): void {
  const reported = new Set<string>()
  const reporter = (stage: string) => (ms: number): void => {
    if (reported.has(stage)) return
    reported.add(stage)
    const hint = stage === 'handler'
      ? 'if this work is CPU-bound or synchronous, make the route blocking: true (its handler then runs in the worker pool)'
      : 'move the work into a blocking handler, or into app.blocking.run()'
    log.warn(
      { route: label, stage, ms: Math.round(ms * 10) / 10, thresholdMs: threshold },
      `fastify-blocking: ${label} held the event loop for ${ms.toFixed(1)} ms in its ${stage}; ${hint}`
    )
  }
  if (!blocking && typeof route.handler === 'function') route.handler = timed(route.handler as AnyFunction, threshold, reporter('handler')) as RouteOptions['handler']
  const hooks = route as unknown as Record<string, AnyFunction | AnyFunction[] | undefined>
  for (const name of HOOKS) {
    const hook = hooks[name]
    // Anything but functions is left for Fastify to reject.
    if (typeof hook === 'function') hooks[name] = timed(hook, threshold, reporter(`${name} hook`))
    else if (Array.isArray(hook)) {
      hooks[name] = hook.map((fn, i) => typeof fn === 'function' ? timed(fn, threshold, reporter(`${name} hook #${i + 1}`)) : fn)
    }
  }
}
