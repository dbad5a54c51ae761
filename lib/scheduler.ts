// The queue in front of the pool: lanes, limits, cancellation, timeouts, stats.
//
// A thread is handed a task when it runs nothing else (streams waiting for
// their clients aside), or, for a task known to be short, when it runs only
// short tasks (PIPELINE_DEPTH at most): those wait on the thread, not on a
// round trip. Everything else waits here, in one of two lanes: requests
// first, background tasks only when no request waits. Each task handed to a
// thread gets a slot in a shared table (see lib/common/protocol.ts) through which
// the main thread cancels it without terminating its thread, and the worker
// says when it started it, so that a timeout counts from the start, not from
// the submission. Tasks travel on the threads' channels (threads.ts).
import {
  FST_BLOCKING_CLOSED,
  FST_BLOCKING_NOT_CLONEABLE,
  FST_BLOCKING_QUEUE_FULL,
  FST_BLOCKING_TIMEOUT,
  FST_BLOCKING_UNDER_PRESSURE,
  FST_BLOCKING_WORKER_CRASHED
} from './common/errors.js'
import type { PoolAdapter } from './pools/adapter.js'
import { Threads, type Channel } from './threads.js'
import { writeLine } from './logs.js'
import { errorOf, observed, publishTask, type TaskOutcome } from './diagnostics.js'
import { Pressure, type PressureThresholds } from './pressure.js'
import { Entry, EntryState, Lane, type Job, type LaneName } from './lane.js'
import type { LaneStats } from './common/types.js'
import {
  GAUGE_BACKGROUND_LIMIT,
  GAUGE_BACKGROUND_QUEUED,
  GAUGE_INTS,
  PayloadKind,
  type LogLine,
  type Outcome,
  type SerializedError
} from './common/protocol.js'
import { now, SlotState, SlotTable } from './common/slots.js'

/** How long a timed-out task may take to stop by itself (its request.signal is aborted) before its thread is terminated. */
export const TIMEOUT_GRACE_MS = 100

/** A route whose tasks ran under this many ms on average is short: its tasks may queue on a thread. */
export const SHORT_TASK_MS = 1
/** Tasks a route must have completed before its average says anything. */
const SHORT_TASK_SAMPLES = 16

/** How the scheduler reaches the pools' threads (see attach()). */
export interface AttachConfig {
  /** Request threads kept serving however idle. */
  minThreads: number
  idleTimeout: number
  /** Modules a thread imports before it takes work. */
  modules: () => string[]
  priorityRefused: (threads: string, why: string) => void
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
  readonly slots: SlotTable
  readonly gauges: SharedArrayBuffer
  private readonly gauge: Int32Array
  /** Background tasks promised a place in their queue (reply.background called, response not sent yet). */
  private reserved = 0
  private readonly free: number[] = []
  /** The entry each slot in use belongs to. */
  private readonly bySlot: Array<Entry | undefined>
  /** Tasks counted against capacity: dispatched, minus streams paused for their clients. */
  private active = 0
  private streams = 0
  private readonly maxStreams: number
  private readonly lanes: Record<LaneName, Lane>
  private threads: Threads | undefined
  /** Threads of their own for background tasks, at a lower priority; else they share `threads`. */
  private backgroundThreads: Threads | undefined
  /** The thread chosen by the last placeOf() that found one. */
  private placed: Channel | undefined
  private closing = false
  private stopped = false
  private idleWaiters: Array<() => void> = []
  private readonly createdAt = now()
  private busyMs = 0
  private readonly pressure: Pressure

  constructor (readonly options: SchedulerOptions) {
    const slots = options.capacity * options.concurrency + options.backgroundCapacity
    this.maxStreams = options.capacity * (options.concurrency - 1)
    this.slots = SlotTable.create(slots)
    for (let i = slots - 1; i >= 0; i--) this.free.push(i)
    this.bySlot = new Array<Entry | undefined>(slots).fill(undefined)
    this.lanes = {
      request: new Lane(options.maxQueue),
      background: new Lane(options.backgroundQueue)
    }
    this.pressure = new Pressure(options.pressure, this.lanes.request)
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

  /** Opens channels to the pools' threads (threads.ts); `backgroundPool`: background tasks' own threads, if any. */
  attach (pool: PoolAdapter, backgroundPool: PoolAdapter | undefined, config: AttachConfig): void {
    const common = {
      idleTimeout: config.idleTimeout,
      modules: config.modules,
      settle: (slot: number, outcome: Outcome | undefined, err: Error | undefined) => this.received(slot, outcome, err),
      line: (slot: number, line: LogLine) => this.logged(slot, line),
      changed: () => this.next()
    }
    this.threads = new Threads(pool, {
      ...common,
      min: config.minThreads,
      max: this.options.capacity,
      startFailed: (err) => this.failQueued(err, (job) => !this.ownPool(job)),
      priorityRefused: (why) => config.priorityRefused('pool threads', why)
    })
    if (backgroundPool !== undefined) {
      this.backgroundThreads = new Threads(backgroundPool, {
        ...common,
        min: 0,
        max: this.options.backgroundCapacity,
        startFailed: (err) => this.failQueued(err, (job) => this.ownPool(job)),
        priorityRefused: (why) => config.priorityRefused('background threads', why)
      })
    }
  }

  /** The request threads' channels, once attached. */
  get requestThreads (): Threads {
    /* c8 ignore next */
    if (this.threads === undefined) throw new Error('fastify-blocking: the scheduler has no pool yet')
    return this.threads
  }

  /** The background tasks' own threads, if they have some. */
  get ownBackgroundThreads (): Threads | undefined {
    return this.backgroundThreads
  }

  /** Whether a job runs on the background tasks' own pool (it then never counts against capacity). */
  private ownPool (job: Job): boolean {
    return job.lane === 'background' && this.backgroundThreads !== undefined
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
    const place = ahead === 0 ? this.placeOf(job) : undefined
    if (place !== undefined) {
      this.dispatch(entry, place)
      return entry
    }
    // Only work that has to wait for a thread is refused, for a full queue or
    // for pressure: not a request that waits only behind streams held back by
    // their cap (next() takes it at once, below).
    const waits = job.lane === 'background' || ahead === 0 || this.placeOf(job) === undefined
    if (waits && lane.waiting >= lane.limit && !reserved) {
      throw this.refuse(entry, new FST_BLOCKING_QUEUE_FULL(`${lane.waiting} ${job.lane === 'request' ? 'requests' : 'background tasks'} are waiting`))
    }
    const pressure = job.lane === 'request' && waits ? this.pressure.why() : undefined
    if (pressure !== undefined) throw this.refuse(entry, new FST_BLOCKING_UNDER_PRESSURE(pressure))
    lane.push(entry)
    if (job.lane === 'background') this.publish()
    // Threads may be free while the queue's head waits for the streams' cap.
    this.next()
    return entry
  }

  /** The thread a job can go to now, if any (threads.ts place()). */
  private placeOf (job: Job): Channel | undefined {
    if (this.free.length === 0) return undefined
    if (this.ownPool(job)) {
      if (this.lanes.background.running >= this.options.backgroundCapacity) return undefined
      return this.backgroundThreads!.place(false, false)
    }
    if (job.stream === true && this.streams >= this.maxStreams) return undefined
    // Background tasks leave one thread to requests (when there are two or more):
    // a request then waits for no background task at all.
    if (job.lane === 'background' && this.lanes.background.running >= Math.max(1, this.options.capacity - 1)) return undefined
    return this.requestThreads.place(job.stream === true, this.isShort(job))
  }

  /** A request of a route whose tasks are known to be short (see SHORT_TASK_MS). */
  private isShort (job: Job): boolean {
    const meter = job.meter
    return meter !== undefined && job.stream !== true && meter.samples >= SHORT_TASK_SAMPLES && meter.averageRun < SHORT_TASK_MS
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

  /** Under pressure by a configured threshold, or with the request queue full (with maxQueue 0: every thread busy). */
  underPressure (): boolean {
    const lane = this.lanes.request
    const full = lane.limit > 0 ? lane.waiting >= lane.limit : this.active >= this.options.capacity
    return full || this.pressure.why() !== undefined
  }

  /** A stream has produced all its client allowed: it waits, and its thread may run other work. */
  pause (entry: Entry): void {
    if (entry.state !== EntryState.Running) return
    entry.state = EntryState.Waiting
    this.active--
    entry.channel!.running--
    entry.channel!.long--
    this.next()
  }

  /** Its client wants more: the stream counts against maxThreads again (briefly over it, at worst). */
  resume (entry: Entry): void {
    if (entry.state !== EntryState.Waiting) return
    entry.state = EntryState.Running
    this.active++
    entry.channel!.running++
    entry.channel!.long++
  }

  /**
   * The caller no longer wants the outcome (its client went away). A queued
   * job is dropped without running and resolves as Skipped; a running one
   * sees its `request.signal` abort and runs on to its end.
   */
  cancel (entry: Entry): void {
    if (entry.state === EntryState.Queued) {
      entry.state = EntryState.Done
      this.lanes[entry.job.lane].forget(entry)
      this.publish()
      this.report(entry, 'skipped')
      entry.resolve({ kind: PayloadKind.Skipped })
      this.maybeIdle()
    } else if (entry.onThread) {
      const { slots } = this
      for (;;) {
        const state = slots.state(entry.slot)
        if (state !== SlotState.Posted && state !== SlotState.Running && state !== SlotState.Waiting) break
        if (slots.swap(entry.slot, state, SlotState.Cancelled)) break
      }
      slots.notify(entry.slot)
    }
  }

  private threadsOf (job: Job): Threads {
    return this.ownPool(job) ? this.backgroundThreads! : this.requestThreads
  }

  private dispatch (entry: Entry, channel: Channel): void {
    const { job } = entry
    const slot = this.free.pop() as number
    entry.state = EntryState.Running
    entry.attempts++
    entry.slot = slot
    entry.dispatchedAt = now()
    entry.channel = channel
    entry.short = this.isShort(job)
    this.bySlot[slot] = entry
    channel.running++
    if (!entry.short) channel.long++
    if (!this.ownPool(job)) this.active++
    if (job.stream === true) {
      this.streams++
      channel.held++
    }
    const lane = this.lanes[job.lane]
    const waited = entry.dispatchedAt - entry.enqueuedAt
    lane.running++
    lane.waitTime.record(waited)
    if (job.meter !== undefined) {
      job.meter.running++
      job.meter.waitTime.record(waited)
    }
    if (job.lane === 'request') this.pressure.waited(entry.dispatchedAt, waited)
    this.slots.post(slot)
    job.task.slot = slot
    if (job.timeout > 0) {
      entry.timer = setTimeout(() => this.checkTimeout(entry), job.timeout)
      entry.timer.unref()
    }
    this.threadsOf(job).post(channel, job.task, job.transferList)
  }

  /** A line the task in `slot` wrote: to its request's log, also once the task has timed out. */
  private logged (slot: number, line: LogLine): void {
    const log = this.bySlot[slot]?.job.log
    if (log !== undefined) writeLine(log, line)
  }

  /** Writes the lines a running task's thread has posted so far (a stream's, before its end is handled). */
  drainLogs (entry: Entry): void {
    if (entry.onThread) this.threadsOf(entry.job).drainLogs(entry.channel!)
  }

  /** An outcome (or why there is none) came back on a channel for a slot. */
  private received (slot: number, outcome: Outcome | undefined, err: Error | undefined): void {
    const entry = this.bySlot[slot]
    if (entry === undefined || !entry.onThread) return
    if (outcome?.kind === PayloadKind.Stream && !entry.returned) this.streaming(entry, outcome)
    else this.settle(entry, outcome, err)
  }

  /**
   * The handler returned a stream: its task goes on as a stream while the
   * stream is read, as a generator's does (its place among the streams and on
   * its thread, its timeout between chunks, pause/resume, cancel), until the
   * worker sends the task's second outcome at the stream's end. The caller
   * gets the outcome (and the port it carries) now; `entry.promise` then
   * stands for the stream's end: it rejects on a timeout or a thread that died.
   */
  private streaming (entry: Entry, outcome: Outcome): void {
    entry.returned = true
    const channel = entry.channel!
    if (entry.short) {
      entry.short = false
      channel.long++
    }
    // Counted even past the cap (briefly over it, at worst): the stream is open already.
    // An upload's task counts as a stream from its start.
    if (entry.job.stream !== true) {
      this.streams++
      channel.held++
    }
    const answer = entry.resolve
    entry.promise = new Promise<Outcome>((resolve, reject) => {
      entry.resolve = resolve
      entry.reject = reject
    })
    // Its caller may look at it a turn later (after an upload's cleanup): a timeout meanwhile is not unhandled.
    entry.promise.catch(() => {})
    if (entry.state === EntryState.TimedOut) {
      // Timed out before the handler returned: nobody reads the stream. Closing
      // its port ends it in the worker (the source is destroyed).
      if (outcome.kind === PayloadKind.Stream) outcome.value.close()
      return
    }
    answer(outcome)
  }

  /**
   * No thread could start (threads.ts): what waits for one fails now, with
   * the reason, rather than for ever.
   */
  private failQueued (err: Error, uses: (job: Job) => boolean): void {
    for (const lane of [this.lanes.request, this.lanes.background]) {
      for (let entry = lane.peek(); entry !== undefined && uses(entry.job); entry = lane.peek()) {
        lane.shift()
        entry.state = EntryState.Done
        lane.failed++
        if (entry.job.meter !== undefined) entry.job.meter.failed++
        const translated = this.translate(entry.job, err)
        this.report(entry, 'crashed', translated)
        entry.reject(translated)
      }
    }
    this.publish()
    this.maybeIdle()
  }

  private checkTimeout (entry: Entry): void {
    const { slot, job } = entry
    const state = this.slots.state(slot)
    const started = this.slots.start(slot)
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
    this.slots.set(slot, SlotState.TimedOut)
    // Its thread's place counts again until the thread has stopped or is gone.
    this.resume(entry)
    entry.state = EntryState.TimedOut
    this.lanes[job.lane].failed++
    if (job.meter !== undefined) job.meter.failed++
    entry.startedAt = this.slots.begin(slot)
    entry.endedAt = now()
    const err = new FST_BLOCKING_TIMEOUT(job.label, job.timeout)
    this.report(entry, 'timeout', err)
    entry.reject(err)
    const thread = this.slots.thread(slot)
    entry.timer = setTimeout(() => { if (thread !== 0) this.threadsOf(job).pool.terminate(thread) }, TIMEOUT_GRACE_MS)
    entry.timer.unref()
  }

  /** The task is over (its outcome came, or its thread died): it gives back its slot and place, then is answered or, once, queued again. */
  private settle (entry: Entry, outcome: Outcome | undefined, err: Error | undefined): void {
    if (entry.timer !== undefined) clearTimeout(entry.timer)
    // The timeout clock's last start (0: no thread started it), and the task's first.
    const started = this.slots.start(entry.slot)
    const began = this.slots.begin(entry.slot)
    const ended = now()
    if (started > 0) this.measure(entry, began, ended)
    const answered = entry.state === EntryState.TimedOut
    this.release(entry)
    if (err !== undefined && started === 0 && !answered && this.retries(entry, err)) {
      // Its thread died (another task on it timed out or crashed) before it
      // started it: it has not run, so it goes back to the head of its queue.
      entry.state = EntryState.Queued
      this.lanes[entry.job.lane].unshift(entry)
    } else if (!answered) {
      // A task that timed out was reported then, with its own times.
      entry.startedAt = began
      entry.endedAt = ended
      this.answer(entry, outcome, err)
    }
    this.next()
  }

  /** Run times and utilization. A stream or upload runs from its start, its waits for the client included; utilization counts the run less those waits (busyOf()). */
  private measure (entry: Entry, began: number, ended: number): void {
    const { job, slot } = entry
    const finished = this.slots.end(slot)
    this.lanes[job.lane].runTime.record(ended - began)
    if (job.meter !== undefined) {
      job.meter.runTime.record(ended - began)
      job.meter.sample((finished > 0 ? finished : ended) - began)
    }
    if (!this.ownPool(job)) this.busyMs += this.busyOf(slot, finished > 0 ? finished : ended)
  }

  /** Gives back the slot (waking a worker-side Atomics.waitAsync() on it, see workers/signal.ts), the thread's place and the counts. */
  private release (entry: Entry): void {
    const { job, slot } = entry
    this.slots.set(slot, SlotState.Free)
    this.free.push(slot)
    this.bySlot[slot] = undefined
    const waiting = entry.state === EntryState.Waiting
    entry.state = EntryState.Done
    const channel = entry.channel!
    entry.channel = undefined
    if (!waiting) {
      channel.running--
      if (!entry.short) channel.long--
      if (!this.ownPool(job)) this.active--
    }
    if (job.stream === true || entry.returned) {
      this.streams--
      channel.held--
    }
    this.lanes[job.lane].running--
    if (job.meter !== undefined) job.meter.running--
  }

  /** Whether a task whose thread died before it started may be queued again: once, and not one whose port or bytes went with the thread (a stream, an upload). */
  private retries (entry: Entry, err: Error): boolean {
    return entry.attempts === 1 && !this.closing && err.name !== 'DataCloneError' && entry.job.transferList === undefined
  }

  /** Resolves or rejects the caller, and reports the task. */
  private answer (entry: Entry, outcome: Outcome | undefined, err: Error | undefined): void {
    const { job } = entry
    const lane = this.lanes[job.lane]
    const { meter } = job
    if (err === undefined && outcome !== undefined && outcome.kind !== PayloadKind.Error) {
      lane.completed++
      if (meter !== undefined) meter.completed++
      this.report(entry, outcome.kind === PayloadKind.Skipped ? 'skipped' : 'completed')
      entry.resolve(outcome)
      return
    }
    lane.failed++
    if (meter !== undefined) meter.failed++
    const value = outcome?.kind === PayloadKind.Error ? outcome.value : undefined
    if (err !== undefined || value?.name === 'DataCloneError') {
      const translated = this.translate(job, err ?? value)
      this.report(entry, translated instanceof FST_BLOCKING_NOT_CLONEABLE ? 'failed' : 'crashed', translated)
      entry.reject(translated)
    } else {
      this.report(entry, 'failed', value)
      entry.resolve(outcome!)
    }
  }

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

  private readonly fits = (entry: Entry): boolean => {
    this.placed = this.placeOf(entry.job)
    return this.placed !== undefined
  }

  private next (): void {
    if (this.threads === undefined || this.stopped) return
    while (this.free.length > 0) {
      const entry = this.lanes.request.take(this.fits) ?? this.lanes.background.take(this.fits)
      if (entry === undefined) break
      this.dispatch(entry, this.placed!)
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
    this.threads?.close()
    this.backgroundThreads?.close()
    for (const lane of [this.lanes.request, this.lanes.background]) {
      let entry: Entry | undefined
      while ((entry = lane.shift()) !== undefined) {
        entry.state = EntryState.Done
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

  /**
   * ms a thread has spent on the task in `slot` up to `at`: from its start,
   * less its waits for the client (the worker adds each one up when it ends;
   * while it waits, the clock's start is the wait's). A stream's generator
   * counts between its waits, an upload's parse counts, a client that reads
   * slowly does not.
   */
  private busyOf (slot: number, at: number): number {
    const began = this.slots.begin(slot)
    if (began === 0) return 0
    const waiting = this.slots.state(slot) === SlotState.Waiting
    const until = waiting ? this.slots.start(slot) : at
    return Math.max(0, until - began - this.slots.waited(slot))
  }

  stats (): { request: LaneStats, background: LaneStats, utilization: number } {
    const at = now()
    const elapsed = at - this.createdAt
    // Tasks still running count for what they have run so far: a long stream shows before its end.
    let busy = this.busyMs
    for (const entry of this.bySlot) {
      if (entry !== undefined && entry.onThread && !this.ownPool(entry.job)) busy += this.busyOf(entry.slot, at)
    }
    return {
      request: this.lanes.request.stats(),
      background: this.lanes.background.stats(),
      utilization: elapsed > 0 ? Math.min(1, busy / (elapsed * this.options.capacity)) : 0
    }
  }

  /**
   * ms a job waited for a thread and has run so far (or ran), for the
   * Server-Timing header; undefined when no thread has started it.
   */
  timing (entry: Entry): { wait: number, run: number } | undefined {
    let started = entry.startedAt
    if (started === 0 && entry.onThread) started = this.slots.begin(entry.slot)
    if (started === 0) return undefined
    return { wait: started - entry.enqueuedAt, run: (entry.endedAt === 0 ? now() : entry.endedAt) - started }
  }

  /** Seconds a client should wait before it retries, from what the queue holds now. */
  retryAfter (): number {
    const lane = this.lanes.request
    const perTask = lane.runTime.count === 0 ? 0 : lane.runTime.percentile(50) / 1000
    return Math.max(1, Math.ceil(perTask * lane.waiting / this.options.capacity))
  }
}
