import { Piscina } from 'piscina'
import type { Task } from '../../workers/protocol.js'
import { poolOptions, type PoolAdapter, type PoolConfig } from './adapter.js'

export function create (config: PoolConfig): PoolAdapter {
  const pool = new Piscina({
    ...poolOptions(config),
    // Timing histograms cost a little per task; we measure waits and runs ourselves.
    recordTiming: false
  })
  pool.on('error', config.onError)
  return {
    run: (task: Task, transferList, signal) => pool.run(task, { transferList: transferList as never, signal }),
    threads: () => pool.threads.length,
    destroy: () => pool.destroy()
  }
}
