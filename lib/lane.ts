// A job's life in the scheduler (Entry) and the queues it waits in (Lane),
// with the measurements stats() reports.
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks'
import type { Transferable } from 'node:worker_threads'
import type { Logger } from './logs.js'
import type { Channel } from './threads.js'
import type { LaneStats } from './common/types.js'
import type { Outcome, Task } from './common/protocol.js'

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
  /** The request's logger, for the lines its handler writes (request.log in the worker). */
  readonly log?: Logger | undefined
}

/**
 * An entry's life, one state at a time:
 *
 *   Queued   → Running   dispatch: handed to a thread, in a slot
 *   Queued   → Done      cancel (its client left), close, or no thread could start
 *   Running  ⇄ Waiting   pause / resume: a stream or upload waiting for its
 *                        client holds a place among the streams, not a thread's
 *   Running, Waiting → TimedOut   its caller is answered; it keeps its slot and
 *                        counts as running until its thread stops or is terminated
 *   Running, Waiting, TimedOut → Done   settle: its outcome came, or its thread died
 *   Running  → Queued    settle, once (see `attempts`): its thread died before it started
 */
export const enum EntryState { Queued, Running, Waiting, TimedOut, Done }

/** A job's life in the scheduler. Created once per submission; no other per-task allocation is ours. */
export class Entry {
  state = EntryState.Queued
  slot = -1
  enqueuedAt = 0
  dispatchedAt = 0
  /** When a thread started it (0 = not started) and when its outcome arrived (0 = not yet), on the main thread's clock. */
  startedAt = 0
  endedAt = 0
  timer: NodeJS.Timeout | undefined = undefined
  /** Times it was handed to a thread (a second time only if its thread died before it started). */
  attempts = 0
  /** The thread it was handed to, while it is there. */
  channel: Channel | undefined = undefined
  /** Handed over as a short task (it may have waited on its thread behind others). */
  short = false
  /**
   * Its handler returned a stream: the task goes on as a stream until the
   * stream ends, and `promise` now stands for that end (see Scheduler.streaming()).
   */
  returned = false
  promise!: Promise<Outcome>
  resolve!: (outcome: Outcome) => void
  reject!: (err: Error) => void
  constructor (readonly job: Job) {}

  /** Handed to a thread, and not settled yet. */
  get onThread (): boolean {
    return this.state === EntryState.Running || this.state === EntryState.Waiting || this.state === EntryState.TimedOut
  }
}

/**
 * Counts and timings of one kind of work: a lane, or one route's share of the
 * request lane (stats().routes).
 */
export class Meter {
  /** Entries in the queue that are still waiting (cancelled ones are left as holes). */
  waiting = 0
  running = 0
  completed = 0
  failed = 0
  readonly waitTime = new Timings()
  readonly runTime = new Timings()
  /** Runs measured, and their moving average in ms (which tasks are short: see the scheduler). */
  samples = 0
  averageRun = 0

  sample (ms: number): void {
    this.averageRun = this.samples === 0 ? ms : this.averageRun * 0.9 + ms * 0.1
    this.samples++
  }

  stats (): LaneStats {
    return {
      queued: this.waiting,
      running: this.running,
      completed: this.completed,
      failed: this.failed,
      waitTime: percentiles(this.waitTime),
      runTime: percentiles(this.runTime)
    }
  }
}

export class Lane extends Meter {
  readonly queue: Array<Entry | undefined> = []
  head = 0
  constructor (readonly limit: number) {
    super()
  }

  /** Puts an entry back at the head of the queue. */
  unshift (entry: Entry): void {
    if (this.head > 0) this.queue[--this.head] = entry
    else this.queue.unshift(entry)
    this.waiting++
    if (entry.job.meter !== undefined) entry.job.meter.waiting++
  }

  push (entry: Entry): void {
    this.queue.push(entry)
    this.waiting++
    if (entry.job.meter !== undefined) entry.job.meter.waiting++
  }

  /** A queued entry leaves the queue without being taken (cancelled, dropped): it stays as a hole. */
  forget (entry: Entry): void {
    this.waiting--
    if (entry.job.meter !== undefined) entry.job.meter.waiting--
  }

  /**
   * Takes the first waiting entry that `fits`, in queue order. Usually the
   * head; past the streams' cap, the first task that is not a stream, so that
   * a stream waiting for a place never holds up the requests behind it.
   */
  take (fits: (entry: Entry) => boolean): Entry | undefined {
    const head = this.peek()
    if (head === undefined) return undefined
    if (fits(head)) return this.shift()
    // Tasks that are not streams all fit or none does: only a stream at the
    // head (held back by the streams' cap) is worth looking past.
    if (head.job.stream !== true) return undefined
    for (let i = this.head + 1; i < this.queue.length; i++) {
      const entry = this.queue[i]
      if (entry !== undefined && entry.state === EntryState.Queued && entry.job.stream !== true && fits(entry)) {
        this.queue[i] = undefined
        this.forget(entry)
        return entry
      }
    }
    return undefined
  }

  /** The next waiting entry, left in the queue. */
  peek (): Entry | undefined {
    while (this.head < this.queue.length) {
      const entry = this.queue[this.head]
      if (entry !== undefined && entry.state === EntryState.Queued) return entry
      this.queue[this.head++] = undefined
    }
    return undefined
  }

  shift (): Entry | undefined {
    while (this.head < this.queue.length) {
      const entry = this.queue[this.head]
      this.queue[this.head++] = undefined
      if (this.head > 1024 && this.head * 2 > this.queue.length) {
        this.queue.splice(0, this.head)
        this.head = 0
      }
      if (entry !== undefined && entry.state === EntryState.Queued) {
        this.forget(entry)
        return entry
      }
    }
    return undefined
  }
}

/**
 * A histogram of durations fed in batches: a sample costs an array store,
 * and the batch goes into the native histogram when it is full or read.
 */
export class Timings {
  private readonly histogram: RecordableHistogram = createHistogram()
  private readonly batch = new Float64Array(256)
  private size = 0

  record (ms: number): void {
    this.batch[this.size++] = ms
    if (this.size === this.batch.length) this.flush()
  }

  private flush (): void {
    // Recorded in microseconds (histograms take integers).
    for (let i = 0; i < this.size; i++) this.histogram.record(Math.max(1, Math.round(this.batch[i]! * 1000)))
    this.size = 0
  }

  get count (): number {
    return this.histogram.count + this.size
  }

  /** The p-th percentile, in ms. */
  percentile (p: number): number {
    this.flush()
    return this.histogram.percentile(p) / 1000
  }

  reset (): void {
    this.size = 0
    this.histogram.reset()
  }
}

function percentiles (h: Timings): { p50: number, p99: number } {
  if (h.count === 0) return { p50: 0, p99: 0 }
  return { p50: h.percentile(50), p99: h.percentile(99) }
}
