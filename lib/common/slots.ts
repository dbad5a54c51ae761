// The slot table: shared memory through which the main thread and the workers
// follow each task handed to the pool, without a message. One slot per task
// in flight; the main thread owns allocation (it picks a free slot, resets it
// and writes its number into the task), a worker writes only the fields said
// below. This class is the only code that knows the layout.
//
// Layout of a slot: SLOT_INTS Int32 fields; the Float64 fields overlay pairs
// of them (aligned, since SLOT_INTS is even).
//   [0]     state    a SlotState                       both, as in SlotState
//   [1]     thread   threadId of the worker that claimed it (the main thread
//                    terminates it if the task times out)
//   [2..3]  start    when the timeout clock last started: at the claim, after
//                    each chunk of a stream, when a wait for the client ends;
//                    while the state is Waiting, when the wait began
//   [4..5]  begin    when a thread claimed the task, written once
//   [6..7]  end      when the worker had the outcome ready (run time without
//                    the trip back: which tasks are short)
//   [8..9]  waited   ms the task waited for its client (a stream's credit, an
//                    upload's body, less the parsing meanwhile), added when
//                    each wait ends: utilization counts the run less this
// Times are now() (wall-clock ms, comparable across threads).

/** Int32 fields per slot (even: the Float64 fields are aligned). */
export const SLOT_INTS = 10
const F64 = SLOT_INTS / 2
const STATE = 0
const THREAD = 1
const START = 1
const BEGIN = 2
const END = 3
const WAITED = 4

export const SlotState = {
  /** Not in use. */
  Free: 0,
  /** Handed to the pool, not started by a thread yet. */
  Posted: 1,
  /** A thread is running it. */
  Running: 2,
  /** The client went away: skip it if not started, abort `request.signal` if running. */
  Cancelled: 3,
  /** It ran past its timeout: abort `request.signal`; the thread is terminated soon after. */
  TimedOut: 4,
  /** A stream or upload waiting for its client: its timeout clock is stopped. */
  Waiting: 5
} as const
export type SlotState = typeof SlotState[keyof typeof SlotState]

/** A wall-clock time in ms, comparable across threads (unlike `performance.now()`). */
export function now (): number {
  return performance.timeOrigin + performance.now()
}

export class SlotTable {
  private readonly ints: Int32Array
  private readonly times: Float64Array

  /** The main thread makes the table; a worker gets `buffer` in its workerData. */
  static create (slots: number): SlotTable {
    return new SlotTable(new SharedArrayBuffer(slots * SLOT_INTS * Int32Array.BYTES_PER_ELEMENT))
  }

  constructor (readonly buffer: SharedArrayBuffer) {
    this.ints = new Int32Array(buffer)
    this.times = new Float64Array(buffer)
  }

  // -- main thread ----------------------------------------------------------

  /** Hands the slot to a new task: Posted, no thread, no times. */
  post (slot: number): void {
    Atomics.store(this.ints, slot * SLOT_INTS + STATE, SlotState.Posted)
    Atomics.store(this.ints, slot * SLOT_INTS + THREAD, 0)
    const at = slot * F64
    this.times[at + START] = 0
    this.times[at + BEGIN] = 0
    this.times[at + END] = 0
    this.times[at + WAITED] = 0
  }

  /** Sets the state and wakes a worker waiting on it (workers/signal.ts). */
  set (slot: number, state: SlotState): void {
    Atomics.store(this.ints, slot * SLOT_INTS + STATE, state)
    Atomics.notify(this.ints, slot * SLOT_INTS + STATE)
  }

  /** Wakes a worker waiting on the slot's state (workers/signal.ts). */
  notify (slot: number): void {
    Atomics.notify(this.ints, slot * SLOT_INTS + STATE)
  }

  // -- both -----------------------------------------------------------------

  state (slot: number): SlotState {
    return Atomics.load(this.ints, slot * SLOT_INTS + STATE) as SlotState
  }

  /** Moves the state from `from` to `to` if it is still `from`; says whether it did. */
  swap (slot: number, from: SlotState, to: SlotState): boolean {
    return Atomics.compareExchange(this.ints, slot * SLOT_INTS + STATE, from, to) === from
  }

  thread (slot: number): number {
    return Atomics.load(this.ints, slot * SLOT_INTS + THREAD)
  }

  /** When the timeout clock last started (0: no thread has started the task). */
  start (slot: number): number {
    return this.times[slot * F64 + START]!
  }

  begin (slot: number): number {
    return this.times[slot * F64 + BEGIN]!
  }

  end (slot: number): number {
    return this.times[slot * F64 + END]!
  }

  waited (slot: number): number {
    return this.times[slot * F64 + WAITED]!
  }

  // -- worker ---------------------------------------------------------------

  /** Says the task has started on `threadId`, unless the main thread cancelled it first. */
  claim (slot: number, threadId: number): boolean {
    const at = now()
    this.times[slot * F64 + START] = at
    this.times[slot * F64 + BEGIN] = at
    // Read by the main thread to terminate this thread if the task times out.
    Atomics.store(this.ints, slot * SLOT_INTS + THREAD, threadId)
    return this.swap(slot, SlotState.Posted, SlotState.Running)
  }

  /** Restarts the timeout clock (a stream's chunk went out). */
  restartClock (slot: number): void {
    this.times[slot * F64 + START] = now()
  }

  /** The task waits for its client from now: its clock stops, the wait's start is kept. */
  startWaiting (slot: number): void {
    this.times[slot * F64 + START] = now()
    this.swap(slot, SlotState.Running, SlotState.Waiting)
  }

  /** The wait is over: its length, less `busyMs` of work done meanwhile, is added to `waited`, and the clock starts again. */
  stopWaiting (slot: number, busyMs = 0): void {
    const at = now()
    const base = slot * F64
    this.times[base + WAITED] = this.times[base + WAITED]! + Math.max(0, at - this.times[base + START]! - busyMs)
    this.times[base + START] = at
    // Fails if the task was cancelled meanwhile: the caller sees it in the state.
    this.swap(slot, SlotState.Waiting, SlotState.Running)
  }

  /** The outcome is ready. */
  setEnd (slot: number): void {
    this.times[slot * F64 + END] = now()
  }

  /** Resolves when the state stops being `state` (Atomics.waitAsync), or says it already has. */
  waitWhile (slot: number, state: SlotState): ReturnType<typeof Atomics.waitAsync> {
    return Atomics.waitAsync(this.ints, slot * SLOT_INTS + STATE, state)
  }
}
