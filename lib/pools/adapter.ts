// One small interface in front of the two pools. The scheduler never hands a
// pool more tasks than it has threads, so the pools' own queues stay empty:
// queueing, lanes and cancellation are ours (lib/scheduler.ts).
import type { Transferable } from 'node:worker_threads'
import type { Task, WorkerData } from '../../workers/protocol.js'

export interface PoolConfig {
  maxThreads: number
  minThreads: number | undefined
  idleTimeout: number
  /** Tasks a thread holds at once. */
  concurrency: number
  resourceLimits: Record<string, number | undefined>
  workerData: WorkerData
  /** Whether a thread runs a task now (not only tasks waiting for their clients). */
  isBusy: (threadId: number) => boolean
  /** An error the pool raised outside any task (a thread that died while idle). */
  onError: (err: Error) => void
}

export interface PoolAdapter {
  /** Runs a task on a thread. */
  run: (task: Task, transferList: Transferable[] | undefined) => Promise<unknown>
  /**
   * Ends a thread that runs past its timeout; the pool fails the tasks it
   * held and replaces it. (Not the pools' abort signals: a task that carries
   * one gets a thread to itself, and streams waiting beside it could not.)
   */
  terminate: (threadId: number) => void
  /** Threads alive now. */
  threads: () => number
  /** Terminates every thread. */
  destroy: () => Promise<void>
}

export const workerFilename = new URL('../../workers/worker.js', import.meta.url)

/** The options piscina and tinypool share, from ours. */
export function poolOptions (config: PoolConfig) {
  return {
    filename: workerFilename.href,
    maxThreads: config.maxThreads,
    ...(config.minThreads === undefined ? {} : { minThreads: config.minThreads }),
    idleTimeout: config.idleTimeout,
    resourceLimits: config.resourceLimits,
    workerData: config.workerData,
    // One running task plus streams waiting for their clients (lib/stream.ts).
    concurrentTasksPerWorker: config.concurrency
  }
}

export async function createPool (kind: 'piscina' | 'tinypool', config: PoolConfig): Promise<PoolAdapter> {
  const mod = kind === 'piscina' ? await import('./piscina.js') : await import('./tinypool.js')
  return mod.create(config)
}
