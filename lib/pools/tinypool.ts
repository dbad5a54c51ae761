import { Tinypool } from 'tinypool'
import { poolOptions, type PoolAdapter, type PoolConfig } from './adapter.js'

interface TinypoolThread {
  threadId: number
  on: (event: 'exit', listener: (code: number) => void) => void
  emit: (event: 'error', err: Error) => boolean
  terminate: () => Promise<unknown>
}

export function create (config: PoolConfig): PoolAdapter {
  const pool = new Tinypool({
    ...poolOptions(config),
    // tinypool places a task beside a busy thread's tasks whenever it has no
    // idle thread ready, even while it starts a new one. With every thread
    // kept alive, a thread without a session is there whenever one opens.
    minThreads: config.maxThreads
  })
  pool.on('error', config.onError)

  // tinypool does not notice a thread that ends itself (process.exit()): its
  // task would hang and the dead thread would stay in the pool. So we watch
  // every thread's exit; one that exits while tinypool still counts it as its
  // own was not terminated by tinypool, and we report it as tinypool reports
  // a thread error, which fails its task and replaces the thread.
  const watched = new WeakSet<object>()
  const threads = (): TinypoolThread[] => pool.threads as unknown as TinypoolThread[]
  function watch (): void {
    for (const thread of threads()) {
      if (watched.has(thread)) continue
      watched.add(thread)
      thread.on('exit', (code) => {
        if (threads().includes(thread)) {
          thread.emit('error', new Error(`the thread exited with code ${code}`))
        }
      })
    }
  }
  watch()

  return {
    run (task, transferList) {
      const result = pool.run(task, { transferList: transferList as never })
      // Threads are only created inside run() (and right after a removal,
      // which is always followed by our next run()).
      watch()
      return result
    },
    terminate (threadId) {
      // Its exit is reported to tinypool by watch() above, as for any thread that dies.
      for (const thread of threads()) if (thread.threadId === threadId) void thread.terminate()
    },
    threads: () => pool.threads.length,
    destroy: () => pool.destroy()
  }
}
