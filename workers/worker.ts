// The worker entry: piscina and tinypool call the default export with the
// thread's session (see lib/common/protocol.ts), which serves the thread's
// channel (channel.ts). For each task it finds the function the task names,
// claims the task's slot, runs it and turns what it returned or threw into an
// outcome. A task never fails from here: errors are outcomes, so that a
// session's failure means only one thing, a thread that died.
import { threadId, workerData } from 'node:worker_threads'
import { definedIn, lookup, moduleOf } from '../lib/common/define.js'
import { load } from './loader.js'
import { serve } from './channel.js'
import { cloneable, errorOutcome, kFollow, kTransfer, serializeError, toOutcome, type Outbound } from './outcome.js'
import {
  PayloadKind,
  type CheckOutcome,
  type CheckTask,
  type HandleTask,
  type Outcome,
  type ParseTask,
  type RunTask,
  type SessionTask,
  type UploadSpec,
  type StreamTask,
  type Task,
  type WorkerData,
  unknownMessage
} from '../lib/common/protocol.js'
import { SlotTable } from '../lib/common/slots.js'
import { asBuffer, createReply, finish, finishHead, seal, setLogPort, transferOf, WorkerRequest } from './request.js'
import { handedOff, handOff, isStream, runStream } from './stream.js'
import { parseUpload, removeSpooled, type ParsedUpload } from './multipart.js'
import { copyBytes } from '../lib/common/clone.js'

// tinypool hands a worker [its own data, ours]; piscina hands ours as is.
const data = (Array.isArray(workerData) ? workerData[1] : workerData) as WorkerData
const slots = new SlotTable(data.slots)
const gauges = new Int32Array(data.gauges)

/**
 * Lowers this thread's scheduling priority, so that the main thread wins the
 * CPU whenever its event loop has work. On Linux a thread's nice value is its
 * own, so each worker sets it for itself (tinypool has no option for it).
 */
async function lowerPriority (increment: number): Promise<string | undefined> {
  if (increment === 0) return undefined
  try {
    const { nice } = await import('@napi-rs/nice') as { nice: (increment: number) => number }
    nice(increment)
    return undefined
  } catch (err) {
    return `${(err as Error).message}`
  }
}
const priorityRefused = await lowerPriority(data.priority)

const SKIPPED: Outcome = { kind: PayloadKind.Skipped }

/** Says the task has started, unless the main thread cancelled it first. */
function claim (slot: number): boolean {
  return slots.claim(slot, threadId)
}

/** Handler identities by number, as the channel named them. */
const names: string[] = []
/** Route configs by route number, as the channel sent them. */
const configs: unknown[] = []
/** Functions by number, once found. */
const found: Array<Function | undefined> = []

function resolveNumber (n: number): Function | Promise<Function> {
  const fn = found[n]
  if (fn !== undefined) return fn
  const id = names[n]
  if (id === undefined) throw new Error(`fastify-blocking worker: handler number ${n} was never named`)
  const resolved = resolve(id)
  void resolved.then((loaded) => { found[n] = loaded }, () => {})
  return resolved
}

/**
 * The function an identity names, once its module has loaded without error
 * (a module that failed half-way may have defined it, and still not be usable).
 */
function resolve (id: string): Promise<Function> {
  return load(moduleOf(id)).then(() => {
    const loaded = lookup(id)
    if (loaded === undefined) throw new Error(`${id} is not defined: its module made fewer definitions in the worker than in the main thread`)
    return loaded
  })
}

/**
 * A handler this thread cannot load (the startup check passed on another
 * thread): the import error names the app's files, so it goes to the log,
 * and the client gets a message without them.
 */
function loadFailure (err: unknown): Outcome {
  return errorOutcome(
    { name: 'FastifyError', code: 'FST_BLOCKING_HANDLER_NOT_DEFINED', statusCode: 500, message: 'A worker thread could not load this handler; the server log says why' },
    [{ level: 'error', obj: { err: serializeError(err) }, errors: ['err'], msg: 'fastify-blocking: a worker thread could not load the handler' }]
  )
}

/**
 * The outcome of what a function returned, once it settles. The value may
 * throw when read (a getter, a `then` getter, a Proxy): that is the
 * function's error, not a thread that died.
 */
function settled (result: unknown, outcomeOf: (value: unknown) => unknown, failed: (err: unknown) => Outcome): unknown {
  const done = (value: unknown): unknown => {
    try {
      return outcomeOf(value)
    } catch (err) {
      return failed(err)
    }
  }
  try {
    if (isThenable(result)) return Promise.resolve(result).then(done, failed)
  } catch (err) {
    return failed(err)
  }
  return done(result)
}

function isThenable (value: unknown): value is PromiseLike<unknown> {
  return value !== null && (typeof value === 'object' || typeof value === 'function') &&
    typeof (value as { then?: unknown }).then === 'function'
}

function handle (task: HandleTask, fn: Function): unknown {
  if (!claim(task.slot)) {
    task.upload?.port.close()
    return SKIPPED
  }
  if (task.upload !== undefined) return handleUpload(task, task.upload, fn)
  return invoke(task, fn, undefined)
}

function invoke (task: HandleTask, fn: Function, upload: ParsedUpload | undefined): unknown {
  const reply = createReply(task.request, gauges, task.slot)
  const request = new WorkerRequest(task.request, configs[task.request.route], reply, slots, task.slot)
  if (upload !== undefined) {
    request.body = upload.fields
    request.files = upload.files
  }
  const failed = (err: unknown): Outcome => errorOutcome(err, seal(reply))
  let result: unknown
  try {
    result = fn(request, reply)
  } catch (err) {
    return failed(err)
  }
  return settled(result, (value) => {
    if (isStream(value)) {
      // A returned stream flows on a port of its own, as a generator's chunks
      // do, and keeps the task's slot until it ends (a second outcome).
      const head = finishHead(reply, { kind: PayloadKind.Empty })
      const { port, done } = handOff(value, reply, { slots, slot: task.slot })
      const outcome: Outbound = Object.assign(head, { kind: PayloadKind.Stream, value: port })
      outcome[kTransfer]!.push(port as unknown as ArrayBuffer)
      outcome[kFollow] = done
      return outcome
    }
    return toOutcome(value, finish(reply, { kind: PayloadKind.Empty }), transferOf(reply))
  }, failed)
}

/** Parses the body, runs the handler, and deletes spooled files once it is done, whatever happened. */
async function handleUpload (task: HandleTask, spec: UploadSpec, fn: Function): Promise<unknown> {
  let upload: ParsedUpload
  try {
    upload = await waitingForClient(task.slot, (parsing) => parseUpload(spec, parsing))
  } catch (err) {
    return errorOutcome(err, undefined)
  }
  let outcome: unknown
  try {
    outcome = await invoke(task, fn, upload)
  } catch (err) {
    await removeSpooled(upload.spooled)
    throw err
  }
  // A returned stream may read a spooled file: they are deleted once it ends.
  const end = (outcome as Outbound)[kFollow]
  if (end === undefined) await removeSpooled(upload.spooled)
  else void end.then(async () => await removeSpooled(upload.spooled)).catch(() => {})
  return outcome
}

/**
 * While a body arrives, the task waits for its client: the timeout clock
 * stops (the slot says Waiting) and the thread may run other tasks. The clock
 * starts again when the body is parsed.
 */
async function waitingForClient<T> (slot: number, work: (parsing: { ms: number }) => Promise<T>): Promise<T> {
  // The parser's own work meanwhile is not a wait (utilization counts it).
  const parsing = { ms: 0 }
  slots.startWaiting(slot)
  try {
    return await work(parsing)
  } finally {
    slots.stopWaiting(slot, parsing.ms)
  }
}

/** request.readMultipart(): fields and files go back; spooled files stay until the main thread deletes them. */
async function parse (task: ParseTask): Promise<unknown> {
  if (!claim(task.slot)) {
    task.upload.port.close()
    return SKIPPED
  }
  try {
    const { fields, files } = await waitingForClient(task.slot, (parsing) => parseUpload(task.upload, parsing))
    const transfer: ArrayBuffer[] = []
    for (const file of files) {
      if (file.buffer !== undefined) {
        const copy = copyBytes(file.buffer)
        transfer.push(copy.buffer as ArrayBuffer)
        file.buffer = copy as Buffer
      }
    }
    return toOutcome({ fields, files }, { kind: PayloadKind.Empty }, transfer.length > 0 ? transfer : undefined, cloneable)
  } catch (err) {
    return errorOutcome(err, undefined)
  }
}

function run (task: RunTask, fn: Function): unknown {
  if (!claim(task.slot)) return SKIPPED
  const { args, buffers } = task
  if (buffers !== undefined) for (const i of buffers) args[i] = asBuffer(args[i] as Uint8Array)
  let result: unknown
  try {
    result = fn(...args)
  } catch (err) {
    return errorOutcome(err, undefined)
  }
  return settled(result, (value) => toOutcome(value, { kind: PayloadKind.Empty }, undefined, cloneable), (err) => errorOutcome(err, undefined))
}

async function check (task: CheckTask): Promise<CheckOutcome> {
  const missing: Record<string, string> = {}
  const counts: Record<string, number> = {}
  for (const n of task.fns) {
    const id = names[n]!
    try {
      await resolve(id)
    } catch (err) {
      missing[id] = err instanceof Error ? err.message : String(err)
    }
    const moduleUrl = moduleOf(id)
    counts[moduleUrl] = definedIn(moduleUrl)
  }
  const outcome: CheckOutcome = { missing, counts }
  if (priorityRefused !== undefined) outcome.priorityRefused = priorityRefused
  return outcome
}

function dispatch (task: HandleTask | RunTask | StreamTask, fn: Function): unknown {
  switch (task.type) {
    case 'blocking:handle': return handle(task, fn)
    case 'blocking:run': return run(task, fn)
    case 'blocking:stream':
      if (!claim(task.slot)) {
        task.port.close()
        return SKIPPED
      }
      return runStream(task, fn, slots, gauges, configs[task.request.route])
  }
}

/** Starts a task that came on the channel: its outcome, or a promise of it. */
function startTask (task: Task): unknown {
  switch (task.type) {
    case 'blocking:handle':
    case 'blocking:run':
    case 'blocking:stream': {
      let fn: Function | Promise<Function>
      try {
        fn = resolveNumber(task.fn)
      } catch (err) {
        return loadFailure(err)
      }
      if (typeof fn === 'function') return dispatch(task, fn)
      return fn.then((loaded) => dispatch(task, loaded), loadFailure)
    }
    case 'blocking:parse':
      return parse(task)
    case 'blocking:check':
      return check(task)
    default:
      // An unknown message is a bug on one side of the protocol: fail loudly.
      throw unknownMessage('worker (task)', task)
  }
}

/**
 * The pool's task: the thread's session. It imports the app's handler
 * modules (a module that fails is reported when its handler is used, or by
 * the startup check), then serves the channel until it is released.
 */
export default async function onSession (task: SessionTask): Promise<void> {
  if (task?.type !== 'blocking:session') {
    throw new Error(`fastify-blocking worker: expected a session, got ${JSON.stringify((task as { type?: unknown } | undefined)?.type)}`)
  }
  setLogPort(task.logs)
  for (const moduleUrl of task.modules) await load(moduleUrl).catch(() => {})
  await serve(task.port, slots, {
    name (from, given) {
      for (let i = 0; i < given.length; i++) names[from + i] = given[i]!
    },
    configure (from, given) {
      for (let i = 0; i < given.length; i++) configs[from + i] = given[i]
    },
    start: startTask
  }, { type: 'channel:ready', threadId, ...(priorityRefused === undefined ? {} : { priorityRefused }) })
  // Streams that handlers returned flow on after their tasks: the thread is not handed back before they end.
  while (handedOff.size > 0) await Promise.allSettled([...handedOff])
}
