// The worker half of a streaming handler (a generator function). Chunks go
// to the main thread over the task's own port; the main thread sends credit
// (bytes its client has read) and the generator waits when it has none, so a
// slow client holds it back. While it waits, the thread runs other tasks: a
// thread holds several streams at once (see STREAMS_PER_THREAD).
import { copyBytes } from '../lib/common/clone.js'
import { errorOutcome } from './outcome.js'
import {
  PayloadKind,
  type Head,
  type Outcome,
  type StreamControl,
  type StreamMessage,
  type StreamTask,
  unknownMessage
} from '../lib/common/protocol.js'
import { SlotState, type SlotTable } from '../lib/common/slots.js'
import { MessageChannel, type MessagePort } from 'node:worker_threads'
import { createReply, finish, headOf, seal, transferOf, WorkerRequest, type WorkerReply } from './request.js'

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
type Source = Pick<AsyncIterator<unknown, unknown, undefined>, 'next' | 'return'> | Gen

/** Where a stream's slot is: a generator handler's task, or the task of a handler that returned a stream. */
interface Slot {
  slots: SlotTable
  slot: number
}

/** How a stream is read: a returned one is read ahead and carries no head (it went with the task's outcome). */
interface Mode {
  returned: boolean
  /** Ends the source at once, even while a read waits (a Readable that never pushes again): the client left. */
  abort?: (() => void) | undefined
}

export function runStream (task: StreamTask, fn: Function, slots: SlotTable, gauges: Int32Array, config: unknown): Promise<Outcome> {
  const reply = createReply(task.request, gauges, task.slot)
  const request = new WorkerRequest(task.request, config, reply, slots, task.slot)
  return pump(task.port, task.highWaterMark, { slots, slot: task.slot }, { returned: false }, reply, () => fn(request, reply) as Gen)
}

/** A Node Readable (or a look-alike from the readable-stream package), a web ReadableStream, or a generator object. */
export function isStream (value: unknown): boolean {
  if (value === null || typeof value !== 'object') return false
  if (value instanceof ReadableStream) return true
  const obj = value as Record<string | symbol, unknown>
  if (typeof obj[Symbol.asyncIterator] !== 'function') {
    const tag = Object.prototype.toString.call(value)
    return tag === '[object Generator]'
  }
  return typeof obj.pipe === 'function' || Object.prototype.toString.call(value) === '[object AsyncGenerator]'
}

/** Active streams that a handler returned: the thread's session waits for them before it ends. */
export const handedOff = new Set<Promise<Outcome>>()

/** How a returned stream is read, and how it is ended early. */
function sourceOf (value: unknown): { source: Source, abort: (() => void) | undefined } {
  if (value instanceof ReadableStream) {
    // A reader, not the stream's async iterator: the iterator's return() waits
    // behind a pending read, a reader's cancel() ends that read.
    const reader = (value as ReadableStream<unknown>).getReader()
    const cancel = async (): Promise<IteratorResult<unknown>> => {
      await reader.cancel()
      return { done: true, value: undefined }
    }
    return {
      source: { next: async () => await reader.read() as IteratorResult<unknown>, return: cancel },
      abort: () => { reader.cancel().catch(() => {}) }
    }
  }
  const readable = value as { pipe?: unknown, destroy?: unknown }
  if (typeof readable.pipe === 'function') {
    return {
      source: (value as AsyncIterable<unknown>)[Symbol.asyncIterator]() as Source,
      // destroy() ends a read that waits: the iterator's return() would wait behind it.
      abort: typeof readable.destroy === 'function' ? () => (readable.destroy as () => void).call(value) : undefined
    }
  }
  // A generator object: its return() runs its finally blocks once its pending step is over.
  return { source: value as Gen, abort: undefined }
}

/**
 * A stream a handler returned: it flows on a port of its own, the way a
 * generator handler's chunks do, once the main thread grants credit, and it
 * keeps the handler's task (`at`, its slot) until it ends: the task's
 * timeout and cancellation apply to it as to a generator's. Returns the port
 * to send back in the task's outcome, and the task's end (its second outcome).
 */
export function handOff (value: unknown, reply: WorkerReply, at: Slot): { port: MessagePort, done: Promise<Outcome> } {
  const { port1, port2 } = new MessageChannel()
  const { source, abort } = sourceOf(value)
  // Status and headers went with the task's outcome: what is set later is not sent.
  const done = pump(port1, 0, at, { returned: true, abort }, reply, () => source)
  handedOff.add(done)
  void done.finally(() => handedOff.delete(done))
  return { port: port2, done }
}

async function pump (port: MessagePort, initialCredit: number, at: Slot, mode: Mode, reply: WorkerReply, open: () => Source): Promise<Outcome> {
  const { slots, slot } = at
  let credit = initialCredit
  let cancelled = false
  let wake: (() => void) | undefined
  let protocolError: Error | undefined
  const isCancelled = (): boolean => cancelled || slots.state(slot) === SlotState.Cancelled
  const cancel = (): void => {
    if (!cancelled) mode.abort?.()
    cancelled = true
  }

  port.on('message', (message: StreamControl) => {
    if (message.type === 'stream:more') credit += message.credit
    else if (message.type === 'stream:cancel') cancel()
    else protocolError = unknownMessage('stream (in the worker)', message)
    wake?.()
  })
  // The main thread closes the port when the client goes away, or the stream timed out.
  port.on('close', () => {
    cancel()
    wake?.()
  })
  const post = (message: StreamMessage, transfer?: ArrayBuffer[]): void => {
    port.postMessage(message, transfer)
  }

  // Yields gather here until a message is worth sending (COALESCE_BYTES),
  // the first of them has waited COALESCE_MS, the credit is spent, the
  // generator waits for something (a turn of the event loop) or ends.
  const pending = new Coalescer()
  let head: Head | undefined
  let sentFirst = false
  const send = (chunk: Uint8Array): void => {
    const message: StreamMessage = { type: 'stream:chunk', chunk }
    if (!sentFirst) {
      sentFirst = true
      if (!mode.returned) message.head = head
    }
    post(message, [chunk.buffer as ArrayBuffer])
  }
  let flushScheduled = false
  const flushLater = (): void => {
    flushScheduled = false
    if (!cancelled) pending.flushTo(send)
  }

  let gen: Source | undefined
  // A returned stream is read at once, before any credit comes: a Readable's
  // iterator listens for its errors from its first next() only (an error
  // before it would end the thread).
  let ahead: Promise<IteratorResult<unknown>> | undefined
  try {
    gen = open()
    if (mode.returned) {
      ahead = Promise.resolve(gen.next())
      ahead.catch(() => {})
    }
    for (;;) {
      if (protocolError !== undefined) throw protocolError
      if (isCancelled()) {
        cancel()
        // Runs the generator's finally blocks (destroys a Readable).
        await gen.return?.(undefined)
        break
      }
      if (credit <= 0) {
        pending.flushTo(send)
        // Waiting for the client: the timeout clock stops (see the scheduler),
        // and this thread is free for other tasks. The wait's start is kept in
        // the slot, and its length added to the time waited: utilization
        // counts the rest.
        slots.startWaiting(slot)
        await new Promise<void>((resolve) => { wake = resolve })
        wake = undefined
        // Fails to go back to Running if the task was cancelled meanwhile: the next turn sees it.
        slots.stopWaiting(slot)
        continue
      }
      const step = await (ahead ?? gen.next())
      ahead = undefined
      if (step.done === true) break
      // Status and headers are the response's as they were at the first yield.
      head ??= headOf(reply)
      const size = pending.add(step.value, send)
      if (size === 0) continue
      credit -= size
      // taskTimeout counts the time between chunks.
      slots.restartClock(slot)
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
      post({ type: 'stream:end', outcome: finish(reply, { kind: PayloadKind.Empty }) }, transferOf(reply))
    }
  } catch (err) {
    if (!cancelled) {
      // What the generator yielded before it threw still goes first.
      pending.flushTo(send)
      post({ type: 'stream:error', outcome: errorOutcome(err, seal(reply)) })
    }
  } finally {
    port.close()
  }
  // The port may be closed (the client went away): what the handler logged and kept goes back with the task.
  if (!cancelled) return { kind: PayloadKind.Empty }
  const skipped: Outcome = { kind: PayloadKind.Skipped }
  const logs = seal(reply)
  if (logs !== undefined) skipped.logs = logs
  return skipped
}
