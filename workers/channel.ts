// The worker half of a thread's channel (lib/threads.ts is the main thread's):
// tasks come in batches, outcomes go back in batches. The outcomes of a
// batch's synchronous tasks go together when the batch is done, unless the
// first of them has waited FLUSH_AFTER_MS (a batch never holds a finished
// task back behind a long one); outcomes that settle later go at the end of
// their microtask checkpoint. Nothing waits for a later turn of the event
// loop, which a handler's own setImmediate() could end first.
import type { MessagePort } from 'node:worker_threads'
import { kFollow, kTransfer, type Outbound } from './outcome.js'
import { PayloadKind, type ChannelDown, type ChannelUp, type CheckOutcome, type Outcome, type Task, unknownMessage } from '../lib/common/protocol.js'
import type { SlotTable } from '../lib/common/slots.js'

/** ms an outcome may wait for others to go with it. */
export const FLUSH_AFTER_MS = 0.5

export class Outbox {
  private outcomes: Array<number | Outcome | CheckOutcome> = []
  private transfer: ArrayBuffer[] = []
  private since = 0
  private scheduled = false
  private readonly flushNow = (): void => {
    this.scheduled = false
    this.flush()
  }

  /** `slots`: where the end of each task is written. */
  constructor (private readonly port: MessagePort, private readonly slots: SlotTable) {}

  /** Queues a task's outcome; sends what waits if it has waited long enough. */
  add (slot: number, outcome: Outbound | CheckOutcome): void {
    if (slot >= 0) this.slots.setEnd(slot)
    this.outcomes.push(slot, outcome)
    const transfer = (outcome as Outbound)[kTransfer]
    if (transfer !== undefined) for (const buffer of transfer) this.transfer.push(buffer)
    if (this.outcomes.length === 2) this.since = performance.now()
    else this.flushIfStale()
  }

  /** Sends what waits at the end of this microtask checkpoint (outcomes of async tasks). */
  flushSoon (): void {
    if (this.scheduled) return
    this.scheduled = true
    queueMicrotask(this.flushNow)
  }

  /** Sends what waits if the first of it has waited FLUSH_AFTER_MS (called before a task starts, too). */
  flushIfStale (): void {
    if (this.outcomes.length > 0 && performance.now() - this.since >= FLUSH_AFTER_MS) this.flush()
  }

  flush (): void {
    if (this.outcomes.length === 0) return
    const outcomes = this.outcomes
    const transfer = this.transfer
    this.outcomes = []
    this.transfer = []
    try {
      this.port.postMessage({ type: 'channel:outcomes', outcomes } satisfies ChannelUp, transfer)
    } catch {
      // Checked values never fail to clone; should one still, only its own task fails.
      for (let i = 0; i < outcomes.length; i += 2) {
        const outcome = outcomes[i + 1] as Outbound
        try {
          this.port.postMessage({ type: 'channel:outcomes', outcomes: [outcomes[i]!, outcome] } satisfies ChannelUp, outcome[kTransfer])
        } catch (err) {
          const failed: Outcome = { kind: PayloadKind.Error, value: { name: 'DataCloneError', message: (err as Error).message } }
          this.port.postMessage({ type: 'channel:outcomes', outcomes: [outcomes[i]!, failed] } satisfies ChannelUp)
        }
      }
    }
  }
}

export interface Session {
  /** Names handler numbers `from`, `from + 1`, ... */
  name: (from: number, names: string[]) => void
  /** Sets the configs of route numbers `from`, `from + 1`, ... */
  configure: (from: number, configs: unknown[]) => void
  /** Starts a task: its outcome now, or a promise of it. */
  start: (task: Task) => unknown
}

/**
 * Serves a channel until the main thread releases the thread (or closes the
 * channel): each batch's tasks start in order, and their outcomes go back
 * through the outbox.
 */
export function serve (port: MessagePort, slots: SlotTable, session: Session, ready: ChannelUp): Promise<void> {
  const outbox = new Outbox(port, slots)
  return new Promise<void>((resolve) => {
    const settle = (slot: number) => (outcome: unknown) => {
      outbox.add(slot, outcome as Outbound)
      outbox.flushSoon()
      follow(slot, outcome)
    }
    // A returned stream's task ends at the stream's end: a second outcome for its slot.
    const follow = (slot: number, outcome: unknown): void => {
      const end = (outcome as Outbound | undefined)?.[kFollow]
      if (end !== undefined) void end.then(settle(slot))
    }
    port.on('message', (message: ChannelDown) => {
      switch (message.type) {
        case 'channel:tasks':
          if (message.names !== undefined) session.name(message.from ?? 0, message.names)
          if (message.configs !== undefined) session.configure(message.configsFrom ?? 0, message.configs)
          for (const task of message.tasks) {
            outbox.flushIfStale()
            const result = session.start(task)
            if (isPromise(result)) result.then(settle(task.slot))
            else {
              outbox.add(task.slot, result as Outbound)
              follow(task.slot, result)
            }
          }
          outbox.flush()
          break
        case 'channel:release':
          outbox.flush()
          port.close()
          break
        default:
          // A bug on one side of the protocol: this thread dies loudly (its tasks fail with this error).
          throw unknownMessage('worker channel', message)
      }
    })
    port.on('close', () => resolve())
    port.postMessage(ready)
  })
}

function isPromise (value: unknown): value is Promise<unknown> {
  return value instanceof Promise
}
