import { Piscina } from 'piscina'
import { poolOptions, type PoolAdapter, type PoolConfig } from './adapter.js'

interface WorkerView { id: number, currentUsage: number }

export function create (config: PoolConfig): PoolAdapter {
  const pool = new Piscina({
    ...poolOptions(config),
    // Timing histograms cost a little per task; we measure waits and runs ourselves.
    recordTiming: false,
    // A session goes to a thread without one, else to a new thread.
    loadBalancer: (_task: unknown, workers: WorkerView[]) => {
      for (const worker of workers) if (worker.currentUsage === 0) return worker
      return null
    }
  } as ConstructorParameters<typeof Piscina>[0])
  pool.on('error', config.onError)
  return {
    run: (task, transferList) => pool.run(task, { transferList: transferList as never }),
    terminate (threadId) {
      for (const thread of pool.threads) if (thread.threadId === threadId) void thread.terminate()
    },
    threads: () => pool.threads.length,
    destroy: () => pool.destroy()
  }
}
