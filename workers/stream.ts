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

/** Where a coalesced message goes: the stream's port. */
interface ChunkSink {
  send (chunk: Uint8Array): void
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

  constructor (private readonly sink: ChunkSink) {}

  /** Adds a yielded value (what waits is sent first when it does not fit); returns its size in bytes. */
  add (value: unknown): number {
    if (typeof value === 'string') return this.addString(value)
    if (value instanceof Uint8Array) return this.addBytes(value)
    throw new TypeError(`a streaming handler may yield strings, Buffers or Uint8Arrays, not ${typeName(value)}`)
  }

  private addString (value: string): number {
    if (value.length === 0) return 0
    const size = Buffer.byteLength(value)
    if (size > COALESCE_BYTES) {
      this.flush()
      this.sink.send(encoder.encode(value))
      return size
    }
    // room() may flush, which resets length: read it after.
    const buffer = this.room(size)
    this.length += encoder.encodeInto(value, buffer.subarray(this.length)).written
    return size
  }

  private addBytes (value: Uint8Array): number {
    const size = value.byteLength
    if (size === 0) return 0
    if (size > COALESCE_BYTES) {
      this.flush()
      this.sink.send(copyBytes(value))
      return size
    }
    this.room(size).set(value, this.length)
    this.length += size
    return size
  }

  /** The buffer, with room for `size` more bytes after `length`. */
  private room (size: number): Uint8Array {
    if (this.length + size > COALESCE_BYTES) this.flush()
    if (this.length === 0) this.since = performance.now()
    this.buffer ??= new Uint8Array(COALESCE_BYTES)
    return this.buffer
  }

  /** Sends what waits, if anything, in a buffer of its own that the sink may transfer. */
  flush (): void {
    if (this.length === 0) return
    const buffer = this.buffer!
    const length = this.length
    this.length = 0
    if (length < COALESCE_BYTES / 4) {
      // A few bytes: a copy of them goes, the buffer stays for the next ones.
      this.sink.send(buffer.slice(0, length))
      return
    }
    this.buffer = undefined
    this.sink.send(buffer.subarray(0, length))
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

/**
 * A generator handler's task: its chunks flow over the task's port from the
 * start, as the main thread's first credit (highWaterMark) allows.
 */
export function runStream (task: StreamTask, fn: Function, slots: SlotTable, gauges: Int32Array, config: unknown): Promise<Outcome> {
  const reply = createReply(task.request, gauges, task.slot)
  const request = new WorkerRequest(task.request, config, reply, slots, task.slot)
  const producer = new StreamProducer(task.port, task.highWaterMark, { slots, slot: task.slot }, { returned: false }, reply)
  return producer.run(() => fn(request, reply) as Gen)
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
  const done = new StreamProducer(port1, 0, at, { returned: true, abort }, reply).run(() => source)
  handedOff.add(done)
  void done.finally(() => handedOff.delete(done))
  return { port: port2, done }
}

/**
 * The worker end of a stream's port: it reads the source as far as the
 * main thread's credit (StreamControl 'stream:more') allows and sends what it
 * yields (StreamMessage), until the source ends or throws, or the client
 * leaves ('stream:cancel', the port's close, or the task's slot cancelled).
 */
class StreamProducer implements ChunkSink {
  private readonly slots: SlotTable
  private readonly slot: number
  private cancelled = false
  /** Resolves the wait for credit, while the producer waits. */
  private wake: (() => void) | undefined
  /** An unexpected message: thrown by the loop, which sends it as the stream's error. */
  private protocolError: Error | undefined
  /**
   * Yields gather here until a message is worth sending (COALESCE_BYTES),
   * the first of them has waited COALESCE_MS, the credit is spent, the
   * generator waits for something (a turn of the event loop) or ends.
   */
  private readonly pending = new Coalescer(this)
  private flushScheduled = false
  private head: Head | undefined
  private sentFirst = false
  /**
   * A returned stream is read at once, before any credit comes: a Readable's
   * iterator listens for its errors from its first next() only (an error
   * before it would end the thread).
   */
  private ahead: Promise<IteratorResult<unknown>> | undefined

  constructor (
    private readonly port: MessagePort,
    private credit: number,
    at: Slot,
    private readonly mode: Mode,
    private readonly reply: WorkerReply
  ) {
    this.slots = at.slots
    this.slot = at.slot
    port.on('message', (message: StreamControl) => this.onMessage(message))
    // The main thread closes the port when the client goes away, or the stream timed out.
    port.on('close', () => this.onClose())
  }

  // --- the port: credit and cancellation in ---

  private onMessage (message: StreamControl): void {
    switch (message.type) {
      case 'stream:more':
        this.onMore(message.credit)
        break
      case 'stream:cancel':
        this.onCancel()
        break
      default:
        this.protocolError = unknownMessage('stream (in the worker)', message)
    }
    this.wakeUp()
  }

  private onMore (credit: number): void {
    this.credit += credit
  }

  private onCancel (): void {
    if (!this.cancelled) this.mode.abort?.()
    this.cancelled = true
  }

  private onClose (): void {
    this.onCancel()
    this.wakeUp()
  }

  private wakeUp (): void {
    const wake = this.wake
    this.wake = undefined
    wake?.()
  }

  private isCancelled (): boolean {
    return this.cancelled || this.slots.state(this.slot) === SlotState.Cancelled
  }

  // --- the source: read as credit allows ---

  /** Reads the source to its end and reports it: the task's outcome (its logs, if the client left). */
  async run (open: () => Source): Promise<Outcome> {
    try {
      const source = open()
      if (this.mode.returned) this.readAhead(source)
      await this.produce(source)
      if (!this.cancelled) this.end()
    } catch (err) {
      if (!this.cancelled) this.error(err)
    } finally {
      this.port.close()
    }
    // The port may be closed (the client went away): what the handler logged and kept goes back with the task.
    if (!this.cancelled) return { kind: PayloadKind.Empty }
    const skipped: Outcome = { kind: PayloadKind.Skipped }
    const logs = seal(this.reply)
    if (logs !== undefined) skipped.logs = logs
    return skipped
  }

  private readAhead (source: Source): void {
    this.ahead = Promise.resolve(source.next())
    // Its failure is the stream's error when the loop awaits it, not an unhandled rejection before.
    this.ahead.catch(() => {})
  }

  private async produce (source: Source): Promise<void> {
    for (;;) {
      if (this.protocolError !== undefined) throw this.protocolError
      if (this.isCancelled()) {
        this.onCancel()
        // Runs the generator's finally blocks (destroys a Readable).
        await source.return?.(undefined)
        return
      }
      if (this.credit <= 0) {
        await this.waitForCredit()
        // Fails to go back to Running if the task was cancelled meanwhile: the next turn sees it.
        this.slots.stopWaiting(this.slot)
        continue
      }
      const step = await (this.ahead ?? source.next())
      this.ahead = undefined
      if (step.done === true) return
      this.take(step.value)
    }
  }

  /**
   * Waiting for the client: the timeout clock stops (see the scheduler), and
   * this thread is free for other tasks. The wait's start is kept in the
   * slot, and its length added to the time waited: utilization counts the rest.
   */
  private waitForCredit (): Promise<void> {
    this.pending.flush()
    this.slots.startWaiting(this.slot)
    return new Promise<void>(this.park)
  }

  private readonly park = (resolve: () => void): void => {
    this.wake = resolve
  }

  private take (value: unknown): void {
    // Status and headers are the response's as they were at the first yield.
    this.head ??= headOf(this.reply)
    const size = this.pending.add(value)
    if (size === 0) return
    this.credit -= size
    // taskTimeout counts the time between chunks.
    this.slots.restartClock(this.slot)
    if (this.pending.length === 0) return
    if (performance.now() - this.pending.since >= COALESCE_MS) {
      this.pending.flush()
    } else if (!this.flushScheduled) {
      // Runs only once the generator waits for something other than itself.
      this.flushScheduled = true
      setImmediate(this.flushLater)
    }
  }

  private readonly flushLater = (): void => {
    this.flushScheduled = false
    if (!this.cancelled) this.pending.flush()
  }

  // --- the port: chunks, the end or the error out ---

  send (chunk: Uint8Array): void {
    const message: StreamMessage = { type: 'stream:chunk', chunk }
    if (!this.sentFirst) {
      this.sentFirst = true
      if (!this.mode.returned) message.head = this.head
    }
    this.port.postMessage(message, [chunk.buffer as ArrayBuffer])
  }

  private end (): void {
    this.pending.flush()
    this.port.postMessage({ type: 'stream:end', outcome: finish(this.reply, { kind: PayloadKind.Empty }) } satisfies StreamMessage, transferOf(this.reply))
  }

  private error (err: unknown): void {
    // What the generator yielded before it threw still goes first.
    this.pending.flush()
    this.port.postMessage({ type: 'stream:error', outcome: errorOutcome(err, seal(this.reply)) } satisfies StreamMessage)
  }
}
