// The queue in front of the pool: lanes, limits, cancellation, timeouts, stats.
//
// The pool is never handed more tasks than it has threads. Everything else
// waits here, in one of two lanes: requests first, background tasks only when
// no request waits. Each task handed to the pool gets a slot in a shared table
// (see workers/protocol.ts) through which the main thread cancels it without
// terminating its thread, and the worker says when it started it, so that a
// timeout counts from the start, not from the submission.
import {
  FST_BLOCKING_CLOSED,
  FST_BLOCKING_NOT_CLONEABLE,
  FST_BLOCKING_QUEUE_FULL,
  FST_BLOCKING_TIMEOUT,
  FST_BLOCKING_UNDER_PRESSURE,
  FST_BLOCKING_WORKER_CRASHED
} from './errors.js'
import { createHistogram } from 'node:perf_hooks'
import type { Transferable } from 'node:worker_threads'
import type { PoolAdapter } from './pools/adapter.js'
import { errorOf, observed, publishTask, type TaskOutcome } from './diagnostics.js'
import { Entry, Lane, Phase, record, type Meter } from './lane.js'
import type { LaneStats } from './types.js'
import {
  GAUGE_BACKGROUND_LIMIT,
  GAUGE_BACKGROUND_QUEUED,
  GAUGE_INTS,
  now,
  PayloadKind,
  SLOT_INTS,
  SLOT_BEGIN_F64,
  SLOT_START_F64,
  SLOT_STATE,
  SLOT_THREAD,
  SlotState,
  type Outcome,
  type SerializedError,
  type Task
} from '../workers/protocol.js'

/** How long a timed-out task may take to stop by itself (its request.signal is aborted) before its thread is terminated. */
export const TIMEOUT_GRACE_MS = 100

/** The window over which the queue wait's p99 is taken for the pressure check. */
export const PRESSURE_WINDOW_MS = 1000

export type LaneName = 'request' | 'background'

/** A task with a slot: everything but checks at startup. */
export type SlottedTask = Exclude<Task, { type: 'blocking:check' }>

export interface Job {
  readonly task: SlottedTask
  readonly lane: LaneName
  /** A streaming handler: it holds a thread only while it produces (see pause/resume). */
  readonly stream?: boolean
  /** What the task is, for errors and logs: `GET /route` or a task's name. */
  readonly label: string
  /** ms from the start of the run; 0 = none. */
  readonly timeout: number
  readonly transferList?: Transferable[] | undefined
  /** The route's own counts (stats().routes), for a task that serves a blocking route. */
  readonly meter?: Meter | undefined
}

/** When the request lane counts as under pressure; 0 turns a threshold off. */
export interface PressureThresholds {
  /** ms: p99 of the queue waits over the last second, or the wait of the oldest queued request. */
  maxQueueWait: number
  /** Requests waiting for a thread. */
  maxQueued: number
}

export interface SchedulerOptions {
  /** Tasks that run at once: maxThreads. */
  capacity: number
  /** Tasks a thread holds at once: one running, the rest streams waiting for their clients. */
  concurrency: number
  maxQueue: number
  backgroundQueue: number
  pressure: PressureThresholds
  /**
   * Background tasks that run at once when they have a pool of their own
   * (a lower `priority.background`); 0 = they share the request pool.
   */
  backgroundCapacity: number
}

export class Scheduler {
  readonly slots: SharedArrayBuffer
  readonly gauges: SharedArrayBuffer
  private readonly gauge: Int32Array
  /** Background tasks promised a place in their queue (reply.background called, response not sent yet). */
  private reserved = 0
  private readonly state: Int32Array
  private readonly start: Float64Array
  private readonly free: number[] = []
  /** Entries handed to the pool and not settled (the balancer asks which threads are busy). */
  private readonly inFlight = new Set<Entry>()
  /** Tasks counted against capacity: dispatched, minus streams paused for their clients. */
  private active = 0
  private streams = 0
  private readonly maxStreams: number
  private readonly lanes: Record<LaneName, Lane>
  private pool: PoolAdapter | undefined
  /** Threads of their own for background tasks, at a lower priority; else they share `pool`. */
  private backgroundPool: PoolAdapter | undefined
  private closing = false
  private stopped = false
  private idleWaiters: Array<() => void> = []
  private readonly createdAt = now()
  private busyMs = 0
  /** Queue waits of requests in the current pressure window, and the p99 of the window before it. */
  private readonly recentWaits = createHistogram()
  private windowStart = now()
  private previousWaitP99 = 0

  constructor (readonly options: SchedulerOptions) {
    const slots = options.capacity * options.concurrency + options.backgroundCapacity
    this.maxStreams = options.capacity * (options.concurrency - 1)
    this.slots = new SharedArrayBuffer(slots * SLOT_INTS * Int32Array.BYTES_PER_ELEMENT)
    this.state = new Int32Array(this.slots)
    this.start = new Float64Array(this.slots)
    for (let i = slots - 1; i >= 0; i--) this.free.push(i)
    this.lanes = {
      request: new Lane(options.maxQueue),
      background: new Lane(options.backgroundQueue)
    }
    this.gauges = new SharedArrayBuffer(GAUGE_INTS * Int32Array.BYTES_PER_ELEMENT)
    this.gauge = new Int32Array(this.gauges)
    Atomics.store(this.gauge, GAUGE_BACKGROUND_LIMIT, options.backgroundQueue)
  }

  /** Keeps the workers' view of the background queue current (reply.background checks it). */
  private publish (): void {
    Atomics.store(this.gauge, GAUGE_BACKGROUND_QUEUED, this.lanes.background.waiting + this.reserved)
  }

  /**
   * Promises a background task a place in its queue, to be taken by submit()
   * once the response has been sent. Throws when the queue (with what is
   * already promised) is full or the scheduler is closed.
   */
  reserve (label: string, name = label): void {
    const lane = this.lanes.background
    let refused: Error | undefined
    if (this.closing) refused = new FST_BLOCKING_CLOSED(`${label} was not queued`)
    else if (lane.waiting + this.reserved >= lane.limit) refused = new FST_BLOCKING_QUEUE_FULL(`${label}: ${lane.waiting + this.reserved} background tasks are waiting`)
    if (refused !== undefined) {
      if (observed()) publishTask({ lane: 'background', name, outcome: 'rejected', waitTime: 0, runTime: 0, error: errorOf(refused as Error & { code: string, statusCode: number }) })
      throw refused
    }
    this.reserved++
    this.publish()
  }

  /** Gives back a place promised by reserve() that will not be used. */
  unreserve (): void {
    this.reserved--
    this.publish()
  }

  attach (pool: PoolAdapter, backgroundPool?: PoolAdapter): void {
    this.pool = pool
    this.backgroundPool = backgroundPool
  }

  /** Whether a job runs on the background tasks' own pool (it then never counts against capacity). */
  private ownPool (job: Job): boolean {
    return job.lane === 'background' && this.backgroundPool !== undefined
  }

  /**
   * Runs a job as soon as a thread is free; `entry.promise` resolves to the
   * worker's outcome, or rejects with an FST_BLOCKING_* error when the job
   * times out, its thread dies or a value cannot cross threads. Throws at once
   * when the lane's queue is full or the scheduler is closed.
   */
  submit (job: Job, reserved = false): Entry {
    const lane = this.lanes[job.lane]
    if (reserved) this.unreserve()
    const entry = new Entry(job)
    // A task promised a place before close() began still gets it, until close() gives up waiting.
    if (this.stopped || (this.closing && !reserved)) {
      this.maybeIdle()
      throw this.refuse(entry, new FST_BLOCKING_CLOSED(`${job.label} was not started`))
    }
    entry.promise = new Promise<Outcome>((resolve, reject) => {
      entry.resolve = resolve
      entry.reject = reject
    })
    entry.enqueuedAt = now()
    // Nothing may overtake what waits ahead of it: requests go before background tasks that share their threads.
    const ahead = job.lane === 'request' ? lane.waiting : lane.waiting + (this.ownPool(job) ? 0 : this.lanes.request.waiting)
    if (ahead === 0 && this.canDispatch(job)) {
      this.dispatch(entry)
      return entry
    }
    if (lane.waiting >= lane.limit && !reserved) {
      throw this.refuse(entry, new FST_BLOCKING_QUEUE_FULL(`${lane.waiting} ${job.lane === 'request' ? 'requests' : 'background tasks'} are waiting`))
    }
    // Shed before the queue fills: only work that has to wait for a thread is refused
    // (not a request that waits only behind streams held back by their cap).
    const pressure = job.lane === 'request' && !this.canDispatch(job) ? this.pressured() : undefined
    if (pressure !== undefined) throw this.refuse(entry, new FST_BLOCKING_UNDER_PRESSURE(pressure))
    lane.push(entry)
    if (job.lane === 'background') this.publish()
    // Threads may be free while the queue's head waits for the streams' cap.
    this.next()
    return entry
  }

  private canDispatch (job: Job): boolean {
    if (this.free.length === 0) return false
    if (this.ownPool(job)) return this.lanes.background.running < this.options.backgroundCapacity
    if (this.active >= this.options.capacity) return false
    if (job.stream === true) return this.streams < this.maxStreams
    // Background tasks leave one thread to requests (when there are two or more):
    // a request then waits for no background task at all.
    if (job.lane === 'background') return this.lanes.background.running < Math.max(1, this.options.capacity - 1)
    return true
  }

  /** A job refused at submission: said on the diagnostics channel, then thrown by the caller. */
  private refuse (entry: Entry, err: Error): Error {
    entry.endedAt = now()
    entry.enqueuedAt = entry.endedAt
    this.report(entry, 'rejected', err)
    return err
  }

  /** Says on the diagnostics channel how a job ended, if anyone listens. */
  private report (entry: Entry, outcome: TaskOutcome, error?: Parameters<typeof errorOf>[0]): void {
    if (!observed()) return
    const { job } = entry
    const ended = entry.endedAt === 0 ? now() : entry.endedAt
    const started = entry.startedAt
    publishTask({
      lane: job.lane,
      name: job.label,
      ...(job.meter === undefined ? {} : { route: job.label }),
      outcome,
      waitTime: (started === 0 ? ended : started) - entry.enqueuedAt,
      runTime: started === 0 ? 0 : ended - started,
      ...(error === undefined ? {} : { error: errorOf(error) })
    })
  }

  /** Starts a new pressure window when the current one is over. */
  private rotateWindow (at: number): void {
    const age = at - this.windowStart
    if (age < PRESSURE_WINDOW_MS) return
    // The window just over counts only if it was the last one (no gap since).
    this.previousWaitP99 = age < 2 * PRESSURE_WINDOW_MS && this.recentWaits.count > 0 ? this.recentWaits.percentile(99) / 1000 : 0
    this.recentWaits.reset()
    this.windowStart = at
  }

  /** ms: the larger of the recent queue waits' p99 and the wait of the oldest request still queued. */
  queueWait (): number {
    const at = now()
    this.rotateWindow(at)
    const current = this.recentWaits.count > 0 ? this.recentWaits.percentile(99) / 1000 : 0
    const head = this.lanes.request.peek()
    return Math.max(this.previousWaitP99, current, head === undefined ? 0 : at - head.enqueuedAt)
  }

  /** Why the request lane is under pressure, or undefined when it is not (or no threshold is set). */
  pressured (): string | undefined {
    const { maxQueued, maxQueueWait } = this.options.pressure
    const waiting = this.lanes.request.waiting
    if (maxQueued > 0 && waiting >= maxQueued) return `${waiting} requests are waiting (pressure.maxQueued is ${maxQueued})`
    if (maxQueueWait > 0) {
      const wait = this.queueWait()
      if (wait >= maxQueueWait) return `requests wait ${wait.toFixed(1)} ms for a thread (pressure.maxQueueWait is ${maxQueueWait} ms)`
    }
    return undefined
  }

  /** Under pressure by a configured threshold, or with the request queue full (with maxQueue 0: every thread busy). */
  underPressure (): boolean {
    const lane = this.lanes.request
    const full = lane.limit > 0 ? lane.waiting >= lane.limit : this.active >= this.options.capacity
    return full || this.pressured() !== undefined
  }

  /** Whether a thread runs a task now, as opposed to holding only tasks that wait for their clients. */
  isBusy (threadId: number): boolean {
    for (const entry of this.inFlight) {
      if (entry.paused) continue
      const thread = Atomics.load(this.state, entry.slot * SLOT_INTS + SLOT_THREAD)
      // A task no thread has claimed yet may be on any of them.
      if (thread === threadId || thread === 0) return true
    }
    return false
  }

  /** A stream has produced all its client allowed: it waits, and its thread may run other work. */
  pause (entry: Entry): void {
    if (entry.paused || entry.phase !== Phase.Running) return
    entry.paused = true
    this.active--
    this.next()
  }

  /** Its client wants more: the stream counts against maxThreads again (briefly over it, at worst). */
  resume (entry: Entry): void {
    if (!entry.paused || entry.phase !== Phase.Running) return
    entry.paused = false
    this.active++
  }

  /**
   * The caller no longer wants the outcome (its client went away). A queued
   * job is dropped without running and resolves as Skipped; a running one
   * sees its `request.signal` abort and runs on to its end.
   */
  cancel (entry: Entry): void {
    if (entry.phase === Phase.Queued) {
      entry.phase = Phase.Done
      this.lanes[entry.job.lane].forget(entry)
      this.publish()
      this.report(entry, 'skipped')
      entry.resolve({ kind: PayloadKind.Skipped })
      this.maybeIdle()
    } else if (entry.phase === Phase.Running) {
      const i = entry.slot * SLOT_INTS + SLOT_STATE
      for (;;) {
        const state = Atomics.load(this.state, i)
        if (state !== SlotState.Posted && state !== SlotState.Running && state !== SlotState.Waiting) break
        if (Atomics.compareExchange(this.state, i, state, SlotState.Cancelled) === state) break
      }
      Atomics.notify(this.state, i)
    }
  }

  private poolOf (job: Job): PoolAdapter {
    const pool = this.ownPool(job) ? this.backgroundPool : this.pool
    /* c8 ignore next */
    if (pool === undefined) throw new Error('fastify-blocking: the scheduler has no pool yet')
    return pool
  }

  private dispatch (entry: Entry): void {
    const { job } = entry
    const pool = this.poolOf(job)
    const slot = this.free.pop() as number
    entry.phase = Phase.Running
    entry.slot = slot
    entry.dispatchedAt = now()
    if (!this.ownPool(job)) this.active++
    if (job.stream === true) this.streams++
    const lane = this.lanes[job.lane]
    const waited = entry.dispatchedAt - entry.enqueuedAt
    lane.running++
    record(lane.waitTime, waited)
    if (job.meter !== undefined) {
      job.meter.running++
      record(job.meter.waitTime, waited)
    }
    if (job.lane === 'request') {
      this.rotateWindow(entry.dispatchedAt)
      record(this.recentWaits, waited)
    }
    Atomics.store(this.state, slot * SLOT_INTS + SLOT_STATE, SlotState.Posted)
    Atomics.store(this.state, slot * SLOT_INTS + SLOT_THREAD, 0)
    this.start[slot * (SLOT_INTS / 2) + SLOT_START_F64] = 0
    this.start[slot * (SLOT_INTS / 2) + SLOT_BEGIN_F64] = 0
    job.task.slot = slot
    if (job.timeout > 0) {
      entry.timer = setTimeout(() => this.checkTimeout(entry), job.timeout)
      entry.timer.unref()
    }
    let ran: Promise<unknown>
    try {
      ran = pool.run(job.task, job.transferList)
      // Added after run(): piscina's balancer, which asks isBusy() inside
      // run(), must not count the task it is placing.
      this.inFlight.add(entry)
    } catch (err) {
      // piscina and tinypool clone the task synchronously: an argument that
      // cannot cross threads throws here.
      ran = Promise.reject(err)
    }
    ran.then(
      (outcome) => this.settle(entry, outcome as Outcome, undefined),
      (err: Error) => this.settle(entry, undefined, err)
    )
  }

  private checkTimeout (entry: Entry): void {
    const { slot, job } = entry
    const state = Atomics.load(this.state, slot * SLOT_INTS + SLOT_STATE)
    const started = this.start[slot * (SLOT_INTS / 2) + SLOT_START_F64]!
    if (state === SlotState.Posted || state === SlotState.Waiting || started === 0) {
      // No thread has started it yet (one is booting, or it was cancelled and
      // will be skipped), or it waits for its client: the clock is not running.
      entry.timer = setTimeout(() => this.checkTimeout(entry), job.timeout)
      entry.timer.unref()
      return
    }
    const elapsed = now() - started
    if (state === SlotState.Running && elapsed < job.timeout) {
      entry.timer = setTimeout(() => this.checkTimeout(entry), Math.ceil(job.timeout - elapsed))
      entry.timer.unref()
      return
    }
    // Answer now; ask the handler to stop (request.signal); terminate its thread
    // if it has not stopped within the grace period.
    Atomics.store(this.state, slot * SLOT_INTS + SLOT_STATE, SlotState.TimedOut)
    Atomics.notify(this.state, slot * SLOT_INTS + SLOT_STATE)
    entry.answered = true
    this.lanes[job.lane].failed++
    if (job.meter !== undefined) job.meter.failed++
    entry.startedAt = this.start[slot * (SLOT_INTS / 2) + SLOT_BEGIN_F64]!
    entry.endedAt = now()
    const err = new FST_BLOCKING_TIMEOUT(job.label, job.timeout)
    this.report(entry, 'timeout', err)
    entry.reject(err)
    const thread = Atomics.load(this.state, slot * SLOT_INTS + SLOT_THREAD)
    entry.timer = setTimeout(() => { if (thread !== 0) this.poolOf(job).terminate(thread) }, TIMEOUT_GRACE_MS)
    entry.timer.unref()
  }

  private settle (entry: Entry, outcome: Outcome | undefined, err: Error | undefined): void {
    const { job, slot } = entry
    const lane = this.lanes[job.lane]
    if (entry.timer !== undefined) clearTimeout(entry.timer)
    const { meter } = job
    // The timeout clock's last start (0: no thread started it), and the task's first.
    const started = this.start[slot * (SLOT_INTS / 2) + SLOT_START_F64]!
    const began = this.start[slot * (SLOT_INTS / 2) + SLOT_BEGIN_F64]!
    const ended = now()
    if (started > 0) {
      // A stream or upload runs from its start, its waits for the client included;
      // utilization counts only the stretch since its last wait.
      record(lane.runTime, ended - began)
      if (meter !== undefined) record(meter.runTime, ended - began)
      if (!this.ownPool(job)) this.busyMs += ended - started
    }
    Atomics.store(this.state, slot * SLOT_INTS + SLOT_STATE, SlotState.Free)
    // Wakes a worker-side Atomics.waitAsync() on this slot, if any (see workers/signal.ts).
    Atomics.notify(this.state, slot * SLOT_INTS + SLOT_STATE)
    this.free.push(slot)
    this.inFlight.delete(entry)
    entry.phase = Phase.Done
    if (!entry.paused && !this.ownPool(job)) this.active--
    if (job.stream === true) this.streams--
    lane.running--
    if (meter !== undefined) meter.running--
    if (err !== undefined && started === 0 && !entry.answered && !entry.retried && !this.closing && err.name !== 'DataCloneError' &&
      job.transferList === undefined) {
      // Its thread died (another task on it timed out or crashed) before it
      // started it: it has not run, so it goes back to the head of its queue, once.
      // (Not a stream or an upload: the port it carried went to the dead thread.)
      entry.retried = true
      entry.phase = Phase.Queued
      lane.unshift(entry)
      this.next()
      return
    }
    if (!entry.answered) {
      // A task that timed out was reported then, with its own times.
      entry.startedAt = began
      entry.endedAt = ended
      if (err === undefined && outcome !== undefined && outcome.kind !== PayloadKind.Error) {
        lane.completed++
        if (meter !== undefined) meter.completed++
        this.report(entry, outcome.kind === PayloadKind.Skipped ? 'skipped' : 'completed')
        entry.resolve(outcome)
      } else {
        lane.failed++
        if (meter !== undefined) meter.failed++
        const value = outcome?.value as SerializedError | undefined
        if (err !== undefined || value?.name === 'DataCloneError') {
          const translated = this.translate(job, err ?? value)
          this.report(entry, translated instanceof FST_BLOCKING_NOT_CLONEABLE ? 'failed' : 'crashed', translated)
          entry.reject(translated)
        } else {
          this.report(entry, 'failed', value)
          entry.resolve(outcome!)
        }
      }
    }
    this.next()
  }

  /** Maps what a pool rejects with to our errors. */
  private translate (job: Job, err: Error | SerializedError | undefined): Error {
    if (err?.name === 'DataCloneError') {
      // Thrown by the pool while it sent the task (the main thread's side), or
      // found by the worker in what the function returned.
      const what = err instanceof Error
        ? (job.task.type === 'blocking:handle' ? 'the request could not be sent to a worker' : 'an argument could not be sent to a worker')
        : 'the return value could not be sent back from the worker'
      return new FST_BLOCKING_NOT_CLONEABLE(`${job.label}: ${what}: ${err.message}`)
    }
    const why = err?.message ?? `it ended without an error (${String(err)})`
    if (this.closing) return new FST_BLOCKING_CLOSED(`${job.label} was stopped: ${why}`)
    return new FST_BLOCKING_WORKER_CRASHED(job.label, why)
  }

  private next (): void {
    const fits = (entry: Entry): boolean => this.canDispatch(entry.job)
    while (this.free.length > 0) {
      const entry = (this.active < this.options.capacity ? this.lanes.request.take(fits) : undefined) ?? this.lanes.background.take(fits)
      if (entry === undefined) break
      this.dispatch(entry)
    }
    this.publish()
    this.maybeIdle()
  }

  private maybeIdle (): void {
    if (this.idleWaiters.length === 0 || !this.idle()) return
    const waiters = this.idleWaiters
    this.idleWaiters = []
    for (const w of waiters) w()
  }

  idle (): boolean {
    const { request, background } = this.lanes
    return request.running + request.waiting + background.running + background.waiting + this.reserved === 0
  }

  /**
   * Takes no new work; waits up to `timeout` ms for queued and running work to
   * finish; rejects what is still queued then with FST_BLOCKING_CLOSED and hands
   * each dropped job to `onDrop`. Running work is left to the pool's destroy.
   */
  async close (timeout: number, onDrop: (job: Job) => void): Promise<void> {
    this.closing = true
    if (!this.idle()) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, timeout)
        timer.unref()
        this.idleWaiters.push(() => {
          clearTimeout(timer)
          resolve()
        })
      })
    }
    this.stopped = true
    for (const lane of [this.lanes.request, this.lanes.background]) {
      let entry: Entry | undefined
      while ((entry = lane.shift()) !== undefined) {
        entry.phase = Phase.Done
        onDrop(entry.job)
        const err = new FST_BLOCKING_CLOSED(`${entry.job.label} was not started`)
        this.report(entry, 'dropped', err)
        entry.reject(err)
      }
    }
  }

  get closed (): boolean {
    return this.closing
  }

  stats (): { request: LaneStats, background: LaneStats, utilization: number } {
    const elapsed = now() - this.createdAt
    return {
      request: this.lanes.request.stats(),
      background: this.lanes.background.stats(),
      utilization: elapsed > 0 ? Math.min(1, this.busyMs / (elapsed * this.options.capacity)) : 0
    }
  }

  /**
   * ms a job waited for a thread and has run so far (or ran), for the
   * Server-Timing header; undefined when no thread has started it.
   */
  timing (entry: Entry): { wait: number, run: number } | undefined {
    let started = entry.startedAt
    if (started === 0 && entry.phase === Phase.Running) started = this.start[entry.slot * (SLOT_INTS / 2) + SLOT_BEGIN_F64]!
    if (started === 0) return undefined
    return { wait: started - entry.enqueuedAt, run: (entry.endedAt === 0 ? now() : entry.endedAt) - started }
  }

  /** Seconds a client should wait before it retries, from what the queue holds now. */
  retryAfter (): number {
    const lane = this.lanes.request
    const perTask = lane.runTime.count === 0 ? 0 : lane.runTime.percentile(50) / 1e6
    return Math.max(1, Math.ceil(perTask * lane.waiting / this.options.capacity))
  }
}
