#!/usr/bin/env node
// fastify-blocking-worker: runs the durable jobs of an app (its `queue`
// option) on a machine without HTTP, on the same kind of pool. SIGTERM or
// SIGINT stop it gracefully: no new job is taken, the running ones finish
// within --close-timeout, then every connection closes and the process exits 0.
import { parseArgs } from 'node:util'
import { startQueueWorker } from '../lib/index.js'
import type { QueueWorkerOptions } from '../lib/common/types.js'

const USAGE = `usage: fastify-blocking-worker --tasks <module or glob>... [--connection redis://host:port]
       [--queue name] [--prefix bull] [--pool piscina|tinypool] [--threads n] [--concurrency n]
       [--lock-duration ms] [--stalled-interval ms] [--max-stalled-count n] [--task-timeout ms] [--close-timeout ms]

  --tasks         task modules (paths, file: URLs or quoted globs such as 'tasks/**/*.js');
                  more may follow as plain arguments
  --connection    default: $REDIS_URL, else redis://127.0.0.1:6379
  the log level is $LOG_LEVEL (default info)`

function integer (name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined
  const n = Number(value)
  if (!Number.isInteger(n) || n < 0) throw new TypeError(`--${name} must be a non-negative integer, got ${value}`)
  return n
}

let args
try {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      tasks: { type: 'string', multiple: true },
      connection: { type: 'string' },
      queue: { type: 'string' },
      prefix: { type: 'string' },
      pool: { type: 'string' },
      threads: { type: 'string' },
      concurrency: { type: 'string' },
      'lock-duration': { type: 'string' },
      'stalled-interval': { type: 'string' },
      'max-stalled-count': { type: 'string' },
      'task-timeout': { type: 'string' },
      'close-timeout': { type: 'string' },
      help: { type: 'boolean', short: 'h' }
    }
  })
  if (values.help === true) {
    console.log(USAGE)
    process.exit(0)
  }
  const tasks = [...(values.tasks ?? []), ...positionals]
  if (tasks.length === 0) throw new TypeError('--tasks is required')
  if (values.pool !== undefined && values.pool !== 'piscina' && values.pool !== 'tinypool') throw new TypeError(`--pool must be piscina or tinypool, got ${values.pool}`)
  const worker: QueueWorkerOptions = {}
  const lockDuration = integer('lock-duration', values['lock-duration'])
  const stalledInterval = integer('stalled-interval', values['stalled-interval'])
  const maxStalledCount = integer('max-stalled-count', values['max-stalled-count'])
  if (lockDuration !== undefined) worker.lockDuration = lockDuration
  if (stalledInterval !== undefined) worker.stalledInterval = stalledInterval
  if (maxStalledCount !== undefined) worker.maxStalledCount = maxStalledCount
  const threads = integer('threads', values.threads)
  const concurrency = integer('concurrency', values.concurrency)
  const taskTimeout = integer('task-timeout', values['task-timeout'])
  const closeTimeout = integer('close-timeout', values['close-timeout'])
  args = {
    tasks,
    connection: values.connection ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
    worker,
    ...(values.queue === undefined ? {} : { name: values.queue }),
    ...(values.prefix === undefined ? {} : { prefix: values.prefix }),
    ...(values.pool === undefined ? {} : { pool: values.pool as 'piscina' | 'tinypool' }),
    ...(threads === undefined ? {} : { maxThreads: threads }),
    ...(concurrency === undefined ? {} : { concurrency }),
    ...(taskTimeout === undefined ? {} : { taskTimeout }),
    ...(closeTimeout === undefined ? {} : { closeTimeout })
  }
} catch (err) {
  console.error(`fastify-blocking-worker: ${(err as Error).message}\n${USAGE}`)
  process.exit(2)
}

const running = await startQueueWorker(args)
let stopping = false
function stop (signal: string): void {
  if (stopping) return
  stopping = true
  running.close().then(() => {
    // Nothing should be left to keep the process alive; if something is, say so and leave anyway.
    setTimeout(() => {
      console.error(`fastify-blocking-worker: closed after ${signal}, but something kept the process alive; exiting`)
      process.exit(0)
    }, 2000).unref()
  }, (err: Error) => {
    console.error(`fastify-blocking-worker: closing after ${signal} failed: ${err.stack ?? err.message}`)
    process.exit(1)
  })
}
process.once('SIGTERM', () => stop('SIGTERM'))
process.once('SIGINT', () => stop('SIGINT'))
