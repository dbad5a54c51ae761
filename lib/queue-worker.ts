// The durable queue, consumer side: a BullMQ Worker whose processor is a plain
// function that hands each job to this process's pool through the scheduler,
// like any background task. The CPU work happens on a pool thread, so the
// event loop stays free to renew the job's lock: a long task is not taken for
// a dead one and run twice (a sandboxed or inline processor would block it or
// cost a process per job).
//
// Semantics are BullMQ's: at least once. A task that throws, or whose thread
// dies, is a failed attempt (retried per `attempts` and `backoff`); a process
// that dies leaves its jobs to the stalled check of another worker; a job whose
// name no loaded module defines fails at once, without retries.
import type { FastifyBaseLogger } from 'fastify'
import type { Job, Worker } from 'bullmq'
import type { Redis } from 'ioredis'
import { submitTask } from './background.js'
import type { ResolvedQueueOptions } from './options.js'
import { redisClient, type DurableQueue, type Drivers } from './queue.js'
import { loggedPayloadOf } from './reply.js'
import type { Scheduler } from './scheduler.js'
import type { LaneName } from './lane.js'
import { bufferIndexes } from './common/clone.js'
import { decodeArgs, type JobData } from './common/json.js'
import { PayloadKind } from './common/protocol.js'

export interface ConsumerOptions {
  /** ms a task may run; 0 = none (the plugin's taskTimeout). */
  taskTimeout: number
  /**
   * The scheduler lane jobs run in: 'background' in an HTTP app (requests go
   * first), 'request' in a process that only runs jobs (every thread may take one).
   */
  lane: LaneName
}

export class QueueConsumer {
  private readonly base: Redis
  private worker: Worker | undefined
  private closing: Promise<void> | undefined
  private running = 0
  private completed = 0
  private failed = 0

  constructor (
    private readonly drivers: Drivers,
    private readonly options: ResolvedQueueOptions,
    private readonly durable: DurableQueue,
    private readonly scheduler: Scheduler,
    private readonly log: FastifyBaseLogger,
    private readonly settings: ConsumerOptions
  ) {
    // BullMQ makes the worker's two connections from this one (and closes
    // them); a worker's commands must wait out a Redis outage, not fail.
    this.base = redisClient(drivers.Redis, options.connection, { maxRetriesPerRequest: null, lazyConnect: true })
    durable.consumed = () => ({ running: this.running, completed: this.completed, failed: this.failed })
  }

  /**
   * Starts fetching jobs; resolves once the worker is connected, or after
   * `queue.timeout` when Redis is not there yet (it connects when it comes).
   */
  async start (): Promise<void> {
    const { bullmq } = this.drivers
    const { name, prefix, concurrency, worker } = this.options
    // Three parameters: BullMQ then passes an AbortSignal (a job cancelled through the queue).
    const processor = (job: Job, token: string | undefined, signal: AbortSignal | undefined): Promise<unknown> => this.process(job, token, signal)
    this.worker = new bullmq.Worker(name, processor, {
      concurrency,
      // BullMQ waits 15 s before it fetches again after losing Redis; jobs should drain sooner once it is back.
      runRetryDelay: 2000,
      ...worker,
      ...(prefix === undefined ? {} : { prefix }),
      connection: this.base
    })
    let down = false
    this.worker.on('error', (err: Error) => {
      // A Redis outage makes BullMQ say so every few seconds: once is enough.
      if (down) return
      down = true
      this.log.warn({ err }, `fastify-blocking: the task queue's worker lost Redis (${name}); it reconnects by itself`)
    })
    this.worker.on('ready', () => { down = false })
    this.worker.on('stalled', (jobId: string) => {
      this.log.warn({ jobId }, `fastify-blocking: job ${jobId} stalled (the process running it died or stopped renewing its lock); it runs again`)
    })
    let timer: NodeJS.Timeout | undefined
    const connected = await Promise.race([
      this.worker.waitUntilReady().then(() => true),
      new Promise<false>((resolve) => { timer = setTimeout(() => resolve(false), this.options.timeout) })
    ]).finally(() => clearTimeout(timer))
    if (!connected) this.log.warn(`fastify-blocking: the task queue's worker is not connected to Redis yet (${name}); it runs jobs once it is`)
  }

  private async process (job: Job, token: string | undefined, signal: AbortSignal | undefined): Promise<unknown> {
    const data = job.data as Partial<JobData> | undefined
    const attempts = job.opts.attempts ?? 1
    const attempt = job.attemptsMade + 1
    const log = this.log.child({
      jobId: job.id,
      task: job.name,
      attempt,
      ...(typeof data?.reqId === 'string' ? { reqId: data.reqId } : {})
    })
    let definition = this.durable.tasks.get(job.name)
    if (definition === undefined) {
      // A module imported since startup may define it.
      await this.durable.tasks.refresh()
      definition = this.durable.tasks.get(job.name)
    }
    const { UnrecoverableError, WaitingError } = this.drivers.bullmq
    if (definition === undefined) {
      this.failed++
      log.error(`fastify-blocking: job ${job.id ?? '?'} names task '${job.name}', which no module loaded by this process defines; it fails without retries`)
      throw new UnrecoverableError(`no module loaded by this worker defines the task '${job.name}'`)
    }
    let args: unknown[]
    try {
      args = decodeArgs(data)
    } catch (err) {
      this.failed++
      log.error({ err }, `fastify-blocking: job ${job.id ?? '?'} (${job.name}) has data it cannot read; it fails without retries`)
      throw new UnrecoverableError((err as Error).message)
    }
    this.running++
    try {
      let entry
      try {
        entry = submitTask(this.scheduler, { fn: definition.id, name: job.name, args, buffers: bufferIndexes(args) }, this.settings.taskTimeout, this.settings.lane)
      } catch (err) {
        return await this.putBack(job, token, log, err as Error)
      }
      const submitted = entry
      signal?.addEventListener('abort', () => this.scheduler.cancel(submitted), { once: true })
      const outcome = await entry.promise.catch((err: Error & { code?: string }) => {
        if (err.code === 'FST_BLOCKING_CLOSED') return err
        throw err
      })
      if (outcome instanceof Error) return await this.putBack(job, token, log, outcome)
      if (outcome.kind === PayloadKind.Skipped) throw new Error('the job was cancelled before it started')
      const value = loggedPayloadOf(log, outcome)
      this.completed++
      log.debug(`fastify-blocking: job ${job.id ?? '?'} (${job.name}) done`)
      return value
    } catch (err) {
      if (err instanceof WaitingError) throw err
      this.failed++
      const retry = attempt < attempts && !(err instanceof UnrecoverableError)
      log.error({ err, attempts }, `fastify-blocking: job ${job.id ?? '?'} (${job.name}) failed, attempt ${attempt} of ${attempts}${retry ? '; it will be retried' : ''}`)
      throw err
    } finally {
      this.running--
    }
  }

  /**
   * The pool is closing (or full) and did not start the job: it goes back to
   * the queue, for this process or another, without using up an attempt.
   */
  private async putBack (job: Job, token: string | undefined, log: FastifyBaseLogger, why: Error): Promise<never> {
    log.info({ err: why }, `fastify-blocking: job ${job.id ?? '?'} (${job.name}) was not started here; it goes back to the queue`)
    await job.moveToWait(token)
    throw new this.drivers.bullmq.WaitingError()
  }

  /** Stops fetching jobs; the running ones go on (close() waits for them). */
  stopFetching (): void {
    if (this.worker !== undefined) this.closing ??= this.worker.close()
  }

  /**
   * Waits until the running jobs have ended (the pool is closed by then) and
   * BullMQ's connections are closed (`base` is BullMQ's main connection, ours
   * to close). While Redis refuses connections BullMQ's close cannot end: it
   * is waited for up to `queue.timeout`, and ends by itself when Redis answers.
   */
  async close (): Promise<void> {
    this.stopFetching()
    const closing = (this.closing ?? Promise.resolve()).finally(() => this.base.disconnect())
    let timer: NodeJS.Timeout | undefined
    const closed = await Promise.race([
      closing.then(() => true),
      new Promise<false>((resolve) => { timer = setTimeout(() => resolve(false), this.options.timeout) })
    ]).finally(() => clearTimeout(timer))
    if (!closed) {
      this.log.warn(`fastify-blocking: the task queue's worker did not close within queue.timeout (${this.options.timeout} ms): Redis is unreachable; it closes when Redis answers again`)
    }
  }
}
