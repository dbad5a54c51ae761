// The worker half of a streaming handler (a generator function). Chunks go
// to the main thread over the task's own port; the main thread sends credit
// (bytes its client has read) and the generator waits when it has none, so a
// slow client holds it back. While it waits, the thread runs other tasks: a
// thread holds several streams at once (see STREAMS_PER_THREAD).
import { copyBytes } from './clone.js'
import { errorOutcome } from './outcome.js'
import {
  now,
  PayloadKind,
  SLOT_INTS,
  SLOT_START_F64,
  SLOT_STATE,
  SlotState,
  type Outcome,
  type StreamControl,
  type StreamMessage,
  type StreamTask
} from './protocol.js'
import { WorkerReply, WorkerRequest } from './request.js'

const encoder = new TextEncoder()

/**
 * What a generator yields back to back goes out as one message of up to
 * COALESCE_BYTES: a row-per-yield export then costs a message per 64 KiB,
 * not one per row.
 */
export const COALESCE_BYTES = 256 * 1024
/** ms the first byte of a message may wait for more before it goes anyway. */
export const COALESCE_MS = 2

function typeName (value: unknown): string {
  return value === null ? 'null' : typeof value === 'object' ? (value.constructor?.name ?? 'object') : typeof value
}

/**
 * The bytes a stream has yet to send, gathered in a buffer of its own (a
 * copy: the generator may reuse what it yielded). Each flush hands over the
 * buffer (or, for a few bytes, a copy of them) to be transferred.
 */
class Coalescer {
  private buffer: Uint8Array | undefined
  length = 0
  /** When the first byte waiting was added (performance.now()). */
  since = 0

  /** Adds a yielded value (what waits goes to `flush` first when it does not fit); returns its size in bytes. */
  add (value: unknown, flush: (chunk: Uint8Array) => void): number {
    if (typeof value === 'string') {
      if (value.length === 0) return 0
      const size = Buffer.byteLength(value)
      if (size > COALESCE_BYTES) {
        this.flushTo(flush)
        flush(encoder.encode(value))
        return size
      }
      if (this.length + size > COALESCE_BYTES) this.flushTo(flush)
      return this.append(size, (target) => encoder.encodeInto(value, target).written)
    }
    if (value instanceof Uint8Array) {
      const size = value.byteLength
      if (size === 0) return 0
      if (size > COALESCE_BYTES) {
        this.flushTo(flush)
        flush(copyBytes(value))
        return size
      }
      if (this.length + size > COALESCE_BYTES) this.flushTo(flush)
      return this.append(size, (target) => {
        target.set(value)
        return size
      })
    }
    throw new TypeError(`a streaming handler may yield strings, Buffers or Uint8Arrays, not ${typeName(value)}`)
  }

  private written (): Uint8Array {
    this.buffer ??= new Uint8Array(COALESCE_BYTES)
    return this.buffer.subarray(this.length)
  }

  private append (size: number, write: (target: Uint8Array) => number): number {
    if (this.length === 0) this.since = performance.now()
    this.length += write(this.written())
    return size
  }

  /** Hands what waits to `flush`, if anything, in a buffer of its own that `flush` may transfer. */
  flushTo (flush: (chunk: Uint8Array) => void): void {
    if (this.length === 0) return
    const buffer = this.buffer!
    const length = this.length
    this.length = 0
    if (length < COALESCE_BYTES / 4) {
      // A few bytes: a copy of them goes, the buffer stays for the next ones.
      flush(buffer.slice(0, length))
      return
    }
    this.buffer = undefined
    flush(buffer.subarray(0, length))
  }
}

type Gen = Generator<unknown, unknown, undefined> | AsyncGenerator<unknown, unknown, undefined>

export async function runStream (task: StreamTask, fn: Function, state: Int32Array, start: Float64Array, gauges: Int32Array): Promise<Outcome> {
  const { port, slot } = task
  const stateIndex = slot * SLOT_INTS + SLOT_STATE
  const startIndex = slot * (SLOT_INTS / 2) + SLOT_START_F64
  const reply = new WorkerReply(gauges)
  const request = new WorkerRequest(task.request, reply, state, slot)
  let credit = task.highWaterMark
  let cancelled = false
  let wake: (() => void) | undefined
  let protocolError: Error | undefined

  port.on('message', (message: StreamControl) => {
    if (message.type === 'stream:more') credit += message.credit
    else if (message.type === 'stream:cancel') cancelled = true
    else protocolError = new Error(`fastify-blocking stream: unknown message ${JSON.stringify((message as { type?: unknown }).type)}`)
    wake?.()
  })
  // The main thread closes the port when the client goes away.
  port.on('close', () => {
    cancelled = true
    wake?.()
  })
  const post = (message: StreamMessage, transfer?: ArrayBuffer[]): void => {
    port.postMessage(message, transfer)
  }

  // Yields gather here until a message is worth sending (COALESCE_BYTES),
  // the first of them has waited COALESCE_MS, the credit is spent, the
  // generator waits for something (a turn of the event loop) or ends.
  const pending = new Coalescer()
  let head: Pick<Outcome, 'status' | 'headers'> | undefined
  let sentFirst = false
  const send = (chunk: Uint8Array): void => {
    const message: StreamMessage = { type: 'stream:chunk', chunk }
    if (!sentFirst) {
      sentFirst = true
      message.head = head
    }
    post(message, [chunk.buffer as ArrayBuffer])
  }
  let flushScheduled = false
  const flushLater = (): void => {
    flushScheduled = false
    if (!cancelled) pending.flushTo(send)
  }

  let gen: Gen | undefined
  try {
    gen = fn(request, reply) as Gen
    for (;;) {
      if (protocolError !== undefined) throw protocolError
      if (cancelled || Atomics.load(state, stateIndex) === SlotState.Cancelled) {
        cancelled = true
        // Runs the generator's finally blocks.
        await gen.return(undefined)
        break
      }
      if (credit <= 0) {
        pending.flushTo(send)
        // Waiting for the client: the timeout clock stops (see the scheduler),
        // and this thread is free for other tasks.
        Atomics.compareExchange(state, stateIndex, SlotState.Running, SlotState.Waiting)
        await new Promise<void>((resolve) => { wake = resolve })
        wake = undefined
        start[startIndex] = now()
        // Fails if the task was cancelled meanwhile: the next turn sees it.
        Atomics.compareExchange(state, stateIndex, SlotState.Waiting, SlotState.Running)
        continue
      }
      const step = await gen.next()
      if (step.done === true) break
      // Status and headers are the response's as they were at the first yield.
      head ??= reply.head()
      const size = pending.add(step.value, send)
      if (size === 0) continue
      credit -= size
      // taskTimeout counts the time between chunks.
      start[startIndex] = now()
      if (pending.length > 0) {
        if (performance.now() - pending.since >= COALESCE_MS) {
          pending.flushTo(send)
        } else if (!flushScheduled) {
          // Runs only once the generator waits for something other than itself.
          flushScheduled = true
          setImmediate(flushLater)
        }
      }
    }
    if (!cancelled) {
      pending.flushTo(send)
      post({ type: 'stream:end', outcome: reply.finish({ kind: PayloadKind.Empty }) }, reply.transfer.length > 0 ? reply.transfer : undefined)
    }
  } catch (err) {
    if (!cancelled) {
      // What the generator yielded before it threw still goes first.
      pending.flushTo(send)
      post({ type: 'stream:error', outcome: errorOutcome(err, reply.logs.length > 0 ? reply.logs : undefined) })
    }
  } finally {
    port.close()
  }
  // The port may be closed (the client went away): what the handler logged goes back with the task.
  if (!cancelled) return { kind: PayloadKind.Empty }
  const skipped: Outcome = { kind: PayloadKind.Skipped }
  if (reply.logs.length > 0) skipped.logs = reply.logs
  return skipped
}
