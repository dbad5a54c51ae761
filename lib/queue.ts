// The durable queue, producer side. With the `queue` option a background task
// is a BullMQ job in Redis: `reply.background()` adds it at once and the
// response waits (onSend) until Redis has taken it, so a client that sees 2xx
// knows the job exists. Redis that does not answer within `queue.timeout`
// never holds a response longer: `whenDown` says what happens then ('fail':
// 503 FST_BLOCKING_QUEUE_UNAVAILABLE, 'local': the task runs in this process).
// The jobs themselves are run by queue-worker.ts, here or on other machines.
//
// bullmq and ioredis are optional peer dependencies: imported only here, and
// only when `queue` is set.
import type { FastifyBaseLogger, FastifyReply } from 'fastify'
import type { JobsOptions, Queue } from 'bullmq'
import type { Redis, RedisOptions } from 'ioredis'
import type { Definition } from './common/define.js'
import { errorOf, observed, publishTask } from './diagnostics.js'
import { FST_BLOCKING_INVALID_OPTION, FST_BLOCKING_NOT_SERIALIZABLE, FST_BLOCKING_QUEUE_UNAVAILABLE } from './common/errors.js'
import type { ResolvedQueueOptions } from './options.js'
import { stableName, TaskTable } from './task-names.js'
import type { QueueCounts, QueueJobOptions, QueueStats } from './common/types.js'
import { encodeArgs, type JobData } from './common/json.js'
import { now } from './common/slots.js'
import { addToReply, kQueueAdds } from './symbols.js'

export type BullMQ = typeof import('bullmq')
type RedisCtor = typeof import('ioredis').Redis

export interface Drivers {
  bullmq: BullMQ
  Redis: RedisCtor
}

/** Loads bullmq and ioredis, or says how to install them. */
export async function loadDrivers (): Promise<Drivers> {
  try {
    const [bullmq, ioredis] = await Promise.all([import('bullmq'), import('ioredis')])
    return { bullmq, Redis: ioredis.Redis }
  } catch (err) {
    throw new FST_BLOCKING_INVALID_OPTION(
      `options.queue needs the packages bullmq and ioredis, which could not be loaded (npm install bullmq ioredis): ${(err as Error).message}`
    )
  }
}

/**
 * A connection of our own, made from what the user gave: we own and close
 * it, and never change or close theirs. (bullmq's ESM build cannot load
 * ioredis by itself, so it always gets an instance.)
 */
export function redisClient (Redis: RedisCtor, connection: ResolvedQueueOptions['connection'], override: Record<string, unknown>): Redis {
  if (typeof connection === 'string') return new Redis(connection, override)
  if (typeof (connection as { duplicate?: unknown }).duplicate === 'function') {
    return (connection as { duplicate (o: object): Redis }).duplicate(override)
  }
  return new Redis({ ...connection as RedisOptions, ...override })
}

/** Runs a task in this process instead (whenDown 'local'): after the response when there is one, else now. */
export type RunLocally = (reply: FastifyReply | undefined, fn: string, name: string, args: unknown[], buffers: number[] | undefined) => void

type Added = { id: string } | { err: Error }

interface PendingAdd {
  readonly name: string
  readonly added: Promise<Added>
  readonly local: () => void
  /** onSend (or the response's end) has taken charge of its outcome. */
  claimed: boolean
}

type ReplyWithAdds = FastifyReply & { [kQueueAdds]?: PendingAdd[] | null }

/** How often at most stats() asks Redis for the queue's counts. */
const COUNTS_EVERY_MS = 1000
const COUNT_STATES = ['waiting', 'active', 'delayed', 'prioritized', 'completed', 'failed'] as const

export class DurableQueue {
  readonly tasks = new TaskTable()
  readonly connection: Redis
  private readonly queue: Queue
  private counts: QueueCounts | undefined
  private countsAt = 0
  private added = 0
  private ranLocally = 0
  private unavailable = 0
  private localIds = 0
  /** Redis is down: its errors have been logged once. */
  private down = false
  private whenReady: Promise<void> | undefined
  /** Filled in by queue-worker.ts when this process runs jobs. */
  consumed: () => { running: number, completed: number, failed: number } = () => ({ running: 0, completed: 0, failed: 0 })

  constructor (
    drivers: Drivers,
    readonly options: ResolvedQueueOptions,
    private readonly log: FastifyBaseLogger,
    private readonly runLocally: RunLocally
  ) {
    // Fails fast when Redis is unreachable (no offline queue, one retry of a
    // command cut by a reconnect): add() bounds the wait itself.
    this.connection = redisClient(drivers.Redis, options.connection, { enableOfflineQueue: false, maxRetriesPerRequest: 1 })
    this.connection.on('error', (err: Error) => this.onConnectionError(err))
    this.connection.on('ready', () => { this.down = false })
    this.queue = new drivers.bullmq.Queue(options.name, {
      connection: this.connection,
      ...(options.prefix === undefined ? {} : { prefix: options.prefix }),
      defaultJobOptions: options.jobs
    })
    this.queue.on('error', (err: Error) => this.onConnectionError(err))
  }

  /** Said once per outage, then again only after Redis has been back. */
  private onConnectionError (err: Error): void {
    if (this.down) return
    this.down = true
    this.log.warn({ err }, `fastify-blocking: the task queue's Redis connection failed (${this.options.name}); it reconnects by itself`)
  }

  /** The stable name of a task, checked against the other tasks of this process. */
  nameOf (definition: Definition, caller: string): string {
    const clash = this.tasks.add(definition)
    if (clash !== undefined) throw new FST_BLOCKING_INVALID_OPTION(`${caller}: ${clash}`)
    return stableName(definition)
  }

  private encode (label: string, args: unknown[], reqId: string | undefined): JobData {
    const encoded = encodeArgs(args)
    if (encoded.problem !== undefined) {
      throw new FST_BLOCKING_NOT_SERIALIZABLE(`${label}: ${encoded.problem} (a durable task's arguments are stored as JSON)`)
    }
    if (reqId !== undefined) encoded.data.reqId = reqId
    return encoded.data
  }

  /** Resolves when the connection is ready; one promise per outage, whoever waits. */
  private connected (): Promise<void> {
    if (this.connection.status === 'ready') return Promise.resolve()
    this.whenReady ??= new Promise((resolve) => {
      this.connection.once('ready', () => {
        this.whenReady = undefined
        resolve()
      })
    })
    return this.whenReady
  }

  /** Adds a job; never rejects: a failure is the value. Bounded by `queue.timeout`. */
  private add (name: string, data: JobData, jobOptions: QueueJobOptions | undefined): Promise<Added> {
    const started = now()
    const { timeout } = this.options
    let timedOut = false
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => {
        timedOut = true
        reject(new Error(`Redis did not take the job within ${timeout} ms (queue.timeout)`))
      }, timeout)
      timer.unref()
    })
    // The job is sent only on a ready connection, and never after the caller
    // was told it failed; only a Redis that hangs mid-command can still add it then.
    const adding = this.connected().then(() => timedOut ? undefined : this.queue.add(name, data, jobOptions as JobsOptions | undefined))
    adding.then((job) => { if (timedOut && job !== undefined) this.addedLate(name, job) }, (err: Error) => {
      if (timedOut) this.log.debug({ err, task: name }, 'fastify-blocking: a job that timed out failed later')
    })
    return Promise.race([adding, late]).then(
      (job): Added => {
        clearTimeout(timer)
        this.added++
        const id = job!.id as string
        if (observed()) publishTask({ lane: 'background', name, outcome: 'queued', jobId: id, waitTime: now() - started, runTime: 0 })
        return { id }
      },
      (cause: Error): Added => {
        clearTimeout(timer)
        const err = new FST_BLOCKING_QUEUE_UNAVAILABLE(`${name}: ${cause.message}`)
        if (observed()) publishTask({ lane: 'background', name, outcome: 'rejected', waitTime: now() - started, runTime: 0, error: errorOf(err) })
        return { err }
      }
    )
  }

  /**
   * A Redis that hung took the job after queue.timeout: with 'local' the task
   * already ran here, so the job is removed unless a worker has it already.
   */
  private addedLate (name: string, job: { id?: string | undefined, remove (): Promise<void> }): void {
    const what = `fastify-blocking: job ${job.id ?? '?'} (${name}) reached Redis after queue.timeout`
    if (this.options.whenDown === 'fail') {
      this.log.warn({ jobId: job.id, task: name }, `${what}; it will run although its caller was told it failed`)
      return
    }
    job.remove().then(
      () => this.log.warn({ jobId: job.id, task: name }, `${what}; removed, since it ran in this process`),
      (err: Error) => this.log.warn({ err, jobId: job.id, task: name }, `${what} and could not be removed: it may run twice`)
    )
  }

  /** `app.blocking.enqueue()`: resolves to the job's id, or (whenDown 'local') runs the task here. */
  async enqueue (definition: Definition, args: unknown[], jobOptions: QueueJobOptions | undefined): Promise<{ id: string }> {
    const label = `app.blocking.enqueue(${definition.name})`
    // Called before app.ready(), maybe in the tick that imported the module: its export names first.
    if (!this.tasks.has(definition.moduleUrl)) await this.tasks.refresh()
    const name = this.nameOf(definition, label)
    const added = await this.add(name, this.encode(label, args, undefined), jobOptions)
    if ('id' in added) return added
    if (this.options.whenDown === 'fail') {
      this.unavailable++
      throw added.err
    }
    this.warnLocal(this.log, name, added.err)
    this.runLocally(undefined, definition.id, definition.name, args, undefined)
    return { id: `local:${++this.localIds}` }
  }

  /** `reply.background()` on the main thread: checked now, added now, and the response waits for Redis. */
  fromReply (reply: FastifyReply, definition: Definition, args: unknown[], buffers: number[] | undefined): void {
    const label = `reply.background(${definition.name})`
    const name = this.nameOf(definition, label)
    const data = this.encode(label, args, reply.request.id)
    this.track(reply, name, this.add(name, data, undefined), () => this.runLocally(reply, definition.id, definition.name, args, buffers))
  }

  /**
   * `reply.background()` in a worker handler (its arguments were checked
   * there): the handler has returned, the response has not been sent yet,
   * unless it streams.
   */
  fromWorker (reply: FastifyReply, definition: Definition, args: unknown[], buffers: number[] | undefined): void {
    let data: JobData
    let name: string
    try {
      name = this.nameOf(definition, `reply.background(${definition.name})`)
      data = this.encode(`reply.background(${definition.name})`, args, reply.request.id)
    } catch (err) {
      reply.log.error({ err, task: definition.name }, `fastify-blocking: background task ${definition.name} was dropped`)
      return
    }
    this.track(reply, name, this.add(name, data, undefined), () => this.runLocally(reply, definition.id, definition.name, args, buffers))
  }

  private track (reply: FastifyReply, name: string, added: Promise<Added>, local: () => void): void {
    const pending: PendingAdd = { name, added, local, claimed: false }
    if (reply.raw.headersSent) {
      // Too late to hold the response (a stream, an onResponse hook): the outcome is logged.
      this.afterResponse(reply.log, pending)
      return
    }
    // A response that ends without onSend (the client left, a hijacked reply):
    // whatever onSend did not take is handled at its close.
    addToReply(reply, kQueueAdds, pending, (add) => { if (!add.claimed) this.afterResponse(reply.log, add) })
  }

  private afterResponse (log: FastifyBaseLogger, pending: PendingAdd): void {
    pending.claimed = true
    void pending.added.then((added) => {
      if ('id' in added) return
      if (this.options.whenDown === 'local') {
        this.warnLocal(log, pending.name, added.err)
        pending.local()
        return
      }
      this.unavailable++
      log.error({ err: added.err, task: pending.name }, `fastify-blocking: background task ${pending.name} was dropped: the task queue is unavailable`)
    })
  }

  private warnLocal (log: FastifyBaseLogger, name: string, err: Error): void {
    this.ranLocally++
    log.warn({ err, task: name }, `fastify-blocking: the task queue is unavailable, ${name} runs in this process (queue.whenDown is 'local')`)
  }

  /**
   * onSend: waits for the jobs this response queued. When one could not be
   * added, 'fail' answers 503 instead; 'local' runs it here after the response.
   */
  beforeSend (reply: FastifyReply): Promise<void> | undefined {
    const adds = (reply as ReplyWithAdds)[kQueueAdds]
    if (adds == null || adds.every((add) => add.claimed)) return undefined
    const mine = adds.filter((add) => !add.claimed)
    for (const add of mine) add.claimed = true
    return Promise.all(mine.map((add) => add.added)).then((results) => {
      const failed: Array<{ add: PendingAdd, err: Error }> = []
      results.forEach((added, i) => { if ('err' in added) failed.push({ add: mine[i]!, err: added.err }) })
      if (failed.length === 0) return
      if (this.options.whenDown === 'local') {
        for (const { add, err } of failed) {
          this.warnLocal(reply.log, add.name, err)
          add.local()
        }
        return
      }
      this.unavailable += failed.length
      throw failed[0]!.err
    })
  }

  stats (): QueueStats {
    if (Date.now() - this.countsAt >= COUNTS_EVERY_MS && this.connection.status === 'ready') {
      this.countsAt = Date.now()
      this.queue.getJobCounts(...COUNT_STATES).then(
        (counts) => { this.counts = counts as unknown as QueueCounts },
        (err: Error) => this.log.debug({ err }, 'fastify-blocking: could not read the task queue\'s counts')
      )
    }
    return {
      name: this.options.name,
      connected: this.connection.status === 'ready',
      counts: this.counts,
      added: this.added,
      ranLocally: this.ranLocally,
      unavailable: this.unavailable,
      ...this.consumed()
    }
  }

  /** Reads the counts now (for startup, and tests). */
  async refreshCounts (): Promise<QueueCounts> {
    this.countsAt = Date.now()
    this.counts = await this.queue.getJobCounts(...COUNT_STATES) as unknown as QueueCounts
    return this.counts
  }

  /** Closes the queue and its connection (after the jobs of the responses still being sent are in). */
  async close (): Promise<void> {
    await this.queue.close()
    this.connection.disconnect()
  }
}
