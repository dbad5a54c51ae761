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
  FST_BLOCKING_WORKER_CRASHED
} from './errors.js'
import type { Transferable } from 'node:worker_threads'
import type { PoolAdapter } from './pools/adapter.js'
import { Entry, Lane, Phase, record } from './lane.js'
import type { LaneStats } from './types.js'
import {
  GAUGE_BACKGROUND_LIMIT,
  GAUGE_BACKGROUND_QUEUED,
  GAUGE_INTS,
  now,
  PayloadKind,
  SLOT_INTS,
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
}

export interface SchedulerOptions {
  /** Tasks that run at once: maxThreads. */
  capacity: number
  /** Tasks a thread holds at once: one running, the rest streams waiting for their clients. */
  concurrency: number
  maxQueue: number
  backgroundQueue: number
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
  private closing = false
  private stopped = false
  private idleWaiters: Array<() => void> = []
  private readonly createdAt = now()
  private busyMs = 0

  constructor (readonly options: SchedulerOptions) {
    const slots = options.capacity * options.concurrency
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
  reserve (label: string): void {
    if (this.closing) throw new FST_BLOCKING_CLOSED(`${label} was not queued`)
    const lane = this.lanes.background
    if (lane.waiting + this.reserved >= lane.limit) {
      throw new FST_BLOCKING_QUEUE_FULL(`${label}: ${lane.waiting + this.reserved} background tasks are waiting`)
    }
    this.reserved++
    this.publish()
  }

  /** Gives back a place promised by reserve() that will not be used. */
  unreserve (): void {
    this.reserved--
    this.publish()
  }

  attach (pool: PoolAdapter): void {
    this.pool = pool
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
    // A task promised a place before close() began still gets it, until close() gives up waiting.
    if (this.stopped || (this.closing && !reserved)) {
      this.maybeIdle()
      throw new FST_BLOCKING_CLOSED(`${job.label} was not started`)
    }
    const entry = new Entry(job)
    entry.promise = new Promise<Outcome>((resolve, reject) => {
      entry.resolve = resolve
      entry.reject = reject
    })
    entry.enqueuedAt = now()
    if (this.canDispatch(job) && this.lanes.request.waiting === 0 && (job.lane === 'request' || lane.waiting === 0)) {
      this.dispatch(entry)
    } else if (lane.waiting >= lane.limit && !reserved) {
      throw new FST_BLOCKING_QUEUE_FULL(`${lane.waiting} ${job.lane === 'request' ? 'requests' : 'background tasks'} are waiting`)
    } else {
      lane.push(entry)
      if (job.lane === 'background') this.publish()
      // Threads may be free while the queue's head waits for the streams' cap.
      if (this.active < this.options.capacity && this.free.length > 0) this.next()
    }
    return entry
  }

  private canDispatch (job: Job): boolean {
    if (this.active >= this.options.capacity || this.free.length === 0) return false
    if (job.stream === true) return this.streams < this.maxStreams
    // Background tasks leave one thread to requests (when there are two or more):
    // a request then waits for no background task at all.
    if (job.lane === 'background') return this.lanes.background.running < Math.max(1, this.options.capacity - 1)
    return true
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
      this.lanes[entry.job.lane].waiting--
      this.publish()
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

  private dispatch (entry: Entry): void {
    const pool = this.pool
    /* c8 ignore next */
    if (pool === undefined) throw new Error('fastify-blocking: the scheduler has no pool yet')
    const slot = this.free.pop() as number
    const { job } = entry
    entry.phase = Phase.Running
    entry.slot = slot
    entry.dispatchedAt = now()
    this.active++
    if (job.stream === true) this.streams++
    this.lanes[job.lane].running++
    record(this.lanes[job.lane].waitTime, entry.dispatchedAt - entry.enqueuedAt)
    Atomics.store(this.state, slot * SLOT_INTS + SLOT_STATE, SlotState.Posted)
    Atomics.store(this.state, slot * SLOT_INTS + SLOT_THREAD, 0)
    this.start[slot * (SLOT_INTS / 2) + SLOT_START_F64] = 0
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
    entry.reject(new FST_BLOCKING_TIMEOUT(job.label, job.timeout))
    const thread = Atomics.load(this.state, slot * SLOT_INTS + SLOT_THREAD)
    entry.timer = setTimeout(() => { if (thread !== 0) this.pool?.terminate(thread) }, TIMEOUT_GRACE_MS)
    entry.timer.unref()
  }

  private settle (entry: Entry, outcome: Outcome | undefined, err: Error | undefined): void {
    const { job, slot } = entry
    const lane = this.lanes[job.lane]
    if (entry.timer !== undefined) clearTimeout(entry.timer)
    const started = this.start[slot * (SLOT_INTS / 2) + SLOT_START_F64]!
    const ended = now()
    if (started > 0) {
      record(lane.runTime, ended - started)
      this.busyMs += ended - started
    }
    Atomics.store(this.state, slot * SLOT_INTS + SLOT_STATE, SlotState.Free)
    // Wakes a worker-side Atomics.waitAsync() on this slot, if any (see workers/signal.ts).
    Atomics.notify(this.state, slot * SLOT_INTS + SLOT_STATE)
    this.free.push(slot)
    this.inFlight.delete(entry)
    entry.phase = Phase.Done
    if (!entry.paused) this.active--
    if (job.stream === true) this.streams--
    lane.running--
    if (err !== undefined && started === 0 && !entry.answered && !entry.retried && !this.closing && err.name !== 'DataCloneError') {
      // Its thread died (another task on it timed out or crashed) before it
      // started it: it has not run, so it goes back to the head of its queue, once.
      entry.retried = true
      entry.phase = Phase.Queued
      lane.unshift(entry)
      this.next()
      return
    }
    if (!entry.answered) {
      if (err === undefined && outcome !== undefined && outcome.kind !== PayloadKind.Error) {
        lane.completed++
        entry.resolve(outcome)
      } else {
        lane.failed++
        if (err !== undefined) entry.reject(this.translate(job, err))
        else if ((outcome!.value as SerializedError).name === 'DataCloneError') entry.reject(this.translate(job, outcome!.value as Error))
        else entry.resolve(outcome!)
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
    while (this.active < this.options.capacity && this.free.length > 0) {
      const entry = this.lanes.request.take(fits) ?? this.lanes.background.take(fits)
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
        entry.reject(new FST_BLOCKING_CLOSED(`${entry.job.label} was not started`))
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

  /** Seconds a client should wait before it retries, from what the queue holds now. */
  retryAfter (): number {
    const lane = this.lanes.request
    const perTask = lane.runTime.count === 0 ? 0 : lane.runTime.percentile(50) / 1e6
    return Math.max(1, Math.ceil(perTask * lane.waiting / this.options.capacity))
  }
}
