// app.blocking.run() and its forms with options: one defined function run in
// the pool, for an async route that needs one blocking call. In the spirit of
// piscina's run(task, { signal, transferList }): `signal` drops a queued call
// and rejects the promise with an AbortError (a call already running ends on
// its own; its result is not waited for), `timeout` replaces taskTimeout for
// this call, `transferList` moves ArrayBuffers instead of copying them (the
// caller's are emptied). `request.blocking` binds a call to its request:
// cancelled when the client goes away, logged with the request's reqId.
import type { FastifyBaseLogger, FastifyRequest } from 'fastify'
import type { Transferable } from 'node:worker_threads'
import { definitionOf } from './common/define.js'
import { FST_BLOCKING_HANDLER_NOT_DEFINED, FST_BLOCKING_INVALID_OPTION } from './common/errors.js'
import { resolveInteger } from './options.js'
import { loggedPayloadOf } from './reply.js'
import { unwatch, watchClient } from './request.js'
import type { Scheduler } from './scheduler.js'
import { handlerNumbers } from './threads.js'
import type { RunOptions } from './common/types.js'
import { bufferIndexes } from './common/clone.js'
import { PayloadKind, type RunTask } from './common/protocol.js'

/** What a call made for a request adds: the request, whose client it waits for and whose logger it uses. */
interface Caller {
  log: FastifyBaseLogger
  request?: FastifyRequest
}

function checkOptions (label: string, options: unknown): RunOptions {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new FST_BLOCKING_INVALID_OPTION(`${label}: options must be an object ({ signal, timeout, transferList })`)
  }
  const { signal, timeout, transferList, ...rest } = options as RunOptions & Record<string, unknown>
  const unknown = Object.keys(rest)
  if (unknown.length > 0) throw new FST_BLOCKING_INVALID_OPTION(`${label}: options.${unknown[0]!} is not an option (signal, timeout, transferList)`)
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw new FST_BLOCKING_INVALID_OPTION(`${label}: options.signal must be an AbortSignal`)
  if (transferList !== undefined && !Array.isArray(transferList)) throw new FST_BLOCKING_INVALID_OPTION(`${label}: options.transferList must be an array`)
  if (timeout !== undefined) resolveInteger(`${label}: options.timeout`, timeout)
  return options as RunOptions
}

/** Rejected with, when the call's signal aborts or its request's client goes away: Node's AbortError shape. */
function abortError (label: string, reason: unknown): Error {
  const err = new Error(`${label} was aborted`, { cause: reason }) as Error & { code: string }
  err.name = 'AbortError'
  err.code = 'ABORT_ERR'
  return err
}

export function run (scheduler: Scheduler, taskTimeout: number, caller: Caller, fn: Function, args: unknown[], given?: unknown): Promise<unknown> {
  const definition = definitionOf(fn)
  const form = caller.request === undefined ? 'app.blocking' : 'request.blocking'
  const method = given === undefined ? 'run' : 'runWith'
  if (definition === undefined) {
    return Promise.reject(new FST_BLOCKING_HANDLER_NOT_DEFINED(
      `${form}.${method}(fn): fn was not made with defineHandler or defineTask, so a worker cannot find it`
    ))
  }
  const label = `${form}.${method}(${definition.name})`
  let options: RunOptions
  try {
    options = given === undefined ? {} : checkOptions(label, given)
  } catch (err) {
    return Promise.reject(err)
  }
  if (definition.generator) {
    return Promise.reject(new FST_BLOCKING_INVALID_OPTION(`${label}: a generator streams a response; use it as a route handler`))
  }
  const { signal } = options
  if (signal?.aborted === true) return Promise.reject(abortError(label, signal.reason))
  const task: RunTask = { type: 'blocking:run', fn: handlerNumbers.numberOf(definition.id), slot: -1, args, buffers: bufferIndexes(args) }
  let entry: ReturnType<Scheduler['submit']>
  try {
    entry = scheduler.submit({
      task,
      lane: 'request',
      label,
      timeout: options.timeout ?? taskTimeout,
      transferList: options.transferList as Transferable[] | undefined
    })
  } catch (err) {
    return Promise.reject(err)
  }
  const { request } = caller
  if (signal === undefined && request === undefined) {
    return entry.promise.then((outcome) => loggedPayloadOf(caller.log, outcome))
  }
  return new Promise((resolve, reject) => {
    const watched = request === undefined ? undefined : watchClient(request, undefined, scheduler, entry)
    const onAbort = (): void => {
      scheduler.cancel(entry)
      reject(abortError(label, signal!.reason))
    }
    signal?.addEventListener('abort', onAbort, { once: true })
    const done = (): void => {
      signal?.removeEventListener('abort', onAbort)
      if (watched !== undefined) unwatch(watched, entry)
    }
    entry.promise.then((outcome) => {
      done()
      if (outcome.kind === PayloadKind.Skipped) {
        // Dropped before it ran: its client went away (or its signal aborted).
        caller.log.debug(`fastify-blocking: ${label} was dropped before it ran: its client went away`)
        reject(abortError(label, signal?.reason ?? 'the client went away'))
        return
      }
      try {
        resolve(loggedPayloadOf(caller.log, outcome))
      } catch (err) {
        reject(err)
      }
    }, (err: unknown) => {
      done()
      reject(err)
    })
  })
}
