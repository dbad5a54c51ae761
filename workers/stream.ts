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

/** A yielded value as bytes in a buffer of their own, ready to be transferred. */
function toChunk (value: unknown): Uint8Array {
  if (typeof value === 'string') return encoder.encode(value)
  if (value instanceof Uint8Array) return copyBytes(value)
  const type = value === null ? 'null' : typeof value === 'object' ? (value.constructor?.name ?? 'object') : typeof value
  throw new TypeError(`a streaming handler may yield strings, Buffers or Uint8Arrays, not ${type}`)
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

  let gen: Gen | undefined
  try {
    gen = fn(request, reply) as Gen
    let first = true
    for (;;) {
      if (protocolError !== undefined) throw protocolError
      if (cancelled || Atomics.load(state, stateIndex) === SlotState.Cancelled) {
        cancelled = true
        // Runs the generator's finally blocks.
        await gen.return(undefined)
        break
      }
      if (credit <= 0) {
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
      const chunk = toChunk(step.value)
      if (chunk.byteLength === 0) continue
      credit -= chunk.byteLength
      const message: StreamMessage = { type: 'stream:chunk', chunk }
      if (first) {
        first = false
        message.head = reply.head()
      }
      post(message, [chunk.buffer as ArrayBuffer])
      // taskTimeout counts the time between chunks.
      start[startIndex] = now()
    }
    if (!cancelled) {
      post({ type: 'stream:end', outcome: reply.finish({ kind: PayloadKind.Empty }) }, reply.transfer.length > 0 ? reply.transfer : undefined)
    }
  } catch (err) {
    if (!cancelled) post({ type: 'stream:error', outcome: errorOutcome(err, reply.logs.length > 0 ? reply.logs : undefined) })
  } finally {
    port.close()
  }
  // The port may be closed (the client went away): what the handler logged goes back with the task.
  if (!cancelled) return { kind: PayloadKind.Empty }
  const skipped: Outcome = { kind: PayloadKind.Skipped }
  if (reply.logs.length > 0) skipped.logs = reply.logs
  return skipped
}
