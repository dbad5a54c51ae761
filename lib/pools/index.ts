// The threads behind the scheduler: one pool for requests (and background
// tasks), and a second one for background tasks when they run at a lower
// priority. Each backend is loaded only when chosen, so an app that uses one
// never imports the other.
import type { FastifyBaseLogger } from 'fastify'
import type { ResolvedOptions } from '../options.js'
import type { Scheduler } from '../scheduler.js'
import type { PoolAdapter, PoolConfig } from './adapter.js'

export async function createPool (kind: 'piscina' | 'tinypool', config: PoolConfig): Promise<PoolAdapter> {
  const mod = kind === 'piscina' ? await import('./piscina.js') : await import('./tinypool.js')
  return mod.create(config)
}

export interface Pools {
  request: PoolAdapter
  /** Threads of their own for background tasks (a lower `priority.background`); else they share `request`. */
  background: PoolAdapter | undefined
  /** Threads alive now, in both pools. */
  threads: () => number
  destroy: () => Promise<void>
}

export async function createPools (options: ResolvedOptions, scheduler: Scheduler, log: FastifyBaseLogger): Promise<Pools> {
  const config: PoolConfig = {
    maxThreads: options.maxThreads,
    minThreads: options.minThreads,
    idleTimeout: options.idleTimeout,
    resourceLimits: options.resourceLimits,
    workerData: { slots: scheduler.slots.buffer, gauges: scheduler.gauges, priority: options.priority },
    onError: (err: Error) => log.error({ err }, 'fastify-blocking: a worker thread failed while idle; it was replaced')
  }
  const request = await createPool(options.pool, config)
  const background = options.backgroundPriority === options.priority
    ? undefined
    : await createPool(options.pool, {
      ...config,
      // Started when background tasks come.
      minThreads: 0,
      workerData: { ...config.workerData, priority: options.backgroundPriority }
    })
  return {
    request,
    background,
    threads: () => request.threads() + (background?.threads() ?? 0),
    destroy: async () => { await Promise.all([request.destroy(), background?.destroy()]) }
  }
}
