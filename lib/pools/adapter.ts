// One small interface in front of the two pools. A pool only manages threads:
// it starts them (resourceLimits, priority), replaces one that dies and ends
// them. The only task it runs is a thread's session (lib/common/protocol.ts),
// which lasts as long as the thread serves; tasks travel on the session's
// channel (lib/threads.ts), and queueing, lanes and cancellation are ours
// (lib/scheduler.ts).
import type { Transferable } from 'node:worker_threads'
import type { SessionTask, WorkerData } from '../common/protocol.js'

export interface PoolConfig {
  maxThreads: number
  minThreads: number
  idleTimeout: number
  resourceLimits: Record<string, number | undefined>
  workerData: WorkerData
  /** An error the pool raised outside any session (a thread that failed to start). */
  onError: (err: Error) => void
}

export interface PoolAdapter {
  /** Runs a session on a thread that has none (a new thread if need be). */
  run: (task: SessionTask, transferList: Transferable[]) => Promise<unknown>
  /**
   * Ends a thread that runs past its timeout; its session fails, which fails
   * the tasks it held, and the pool replaces it.
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
    minThreads: config.minThreads,
    idleTimeout: config.idleTimeout,
    resourceLimits: config.resourceLimits,
    workerData: config.workerData,
    // One session a thread.
    concurrentTasksPerWorker: 1
  }
}
