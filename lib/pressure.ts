// When the request lane is under pressure (the `pressure` option): how many
// requests wait, and how long they wait, over a window of PRESSURE_WINDOW_MS.
import { now } from './common/slots.js'
import { Timings, type Lane } from './lane.js'

/** The window over which the queue wait's p99 is taken for the pressure check. */
export const PRESSURE_WINDOW_MS = 1000

/** When the request lane counts as under pressure; 0 turns a threshold off. */
export interface PressureThresholds {
  /** ms: p99 of the queue waits over the last second, or the wait of the oldest queued request. */
  maxQueueWait: number
  /** Requests waiting for a thread. */
  maxQueued: number
}

export class Pressure {
  /** Queue waits of requests in the current window, and the p99 of the window before it. */
  private readonly recentWaits = new Timings()
  private windowStart = now()
  private previousWaitP99 = 0

  constructor (private readonly thresholds: PressureThresholds, private readonly lane: Lane) {}

  /** A request got a thread after waiting `waited` ms (recorded only when a threshold looks at waits). */
  waited (at: number, waited: number): void {
    if (this.thresholds.maxQueueWait === 0) return
    this.rotate(at)
    this.recentWaits.record(waited)
  }

  /** Starts a new window when the current one is over. */
  private rotate (at: number): void {
    const age = at - this.windowStart
    if (age < PRESSURE_WINDOW_MS) return
    // The window just over counts only if it was the last one (no gap since).
    this.previousWaitP99 = age < 2 * PRESSURE_WINDOW_MS && this.recentWaits.count > 0 ? this.recentWaits.percentile(99) : 0
    this.recentWaits.reset()
    this.windowStart = at
  }

  /** ms: the larger of the recent queue waits' p99 and the wait of the oldest request still queued. */
  queueWait (): number {
    const at = now()
    this.rotate(at)
    const current = this.recentWaits.count > 0 ? this.recentWaits.percentile(99) : 0
    const head = this.lane.peek()
    return Math.max(this.previousWaitP99, current, head === undefined ? 0 : at - head.enqueuedAt)
  }

  /** Why the lane is under pressure, or undefined when it is not (or no threshold is set). */
  why (): string | undefined {
    const { maxQueued, maxQueueWait } = this.thresholds
    const waiting = this.lane.waiting
    if (maxQueued > 0 && waiting >= maxQueued) return `${waiting} requests are waiting (pressure.maxQueued is ${maxQueued})`
    if (maxQueueWait > 0) {
      const wait = this.queueWait()
      if (wait >= maxQueueWait) return `requests wait ${wait.toFixed(1)} ms for a thread (pressure.maxQueueWait is ${maxQueueWait} ms)`
    }
    return undefined
  }
}
