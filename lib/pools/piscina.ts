import { Piscina } from 'piscina'
import type { Task } from '../../workers/protocol.js'
import { poolOptions, type PoolAdapter, type PoolConfig } from './adapter.js'

interface WorkerView { id: number, currentUsage: number }

export function create (config: PoolConfig): PoolAdapter {
  const pool = new Piscina({
    ...poolOptions(config),
    // Timing histograms cost a little per task; we measure waits and runs ourselves.
    recordTiming: false,
    // A thread may hold several tasks (streams and uploads waiting for their
    // clients), but a task goes to an idle thread first, then to one whose
    // tasks all wait, then to a new thread, and only then beside a running
    // task. piscina's default would stack tasks on a busy thread before it
    // starts a new one.
    loadBalancer: (_task: unknown, workers: WorkerView[]) => {
      let waiting: WorkerView | null = null
      let best: WorkerView | null = null
      for (const worker of workers) {
        if (worker.currentUsage === 0) return worker
        if (worker.currentUsage >= config.concurrency) continue
        if (waiting === null && !config.isBusy(worker.id)) waiting = worker
        if (best === null || worker.currentUsage < best.currentUsage) best = worker
      }
      if (waiting !== null) return waiting
      if (workers.length < config.maxThreads) return null
      return best
    }
  } as ConstructorParameters<typeof Piscina>[0])
  pool.on('error', config.onError)
  return {
    run: (task: Task, transferList) => pool.run(task, { transferList: transferList as never }),
    terminate (threadId) {
      for (const thread of pool.threads) if (thread.threadId === threadId) void thread.terminate()
    },
    threads: () => pool.threads.length,
    destroy: () => pool.destroy()
  }
}
