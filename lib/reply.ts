// The way back: a worker's outcome applied to Fastify's reply (status,
// headers, cookies, log lines, the payload or the error it carries), and the
// Server-Timing and Retry-After headers the plugin adds.
import type { FastifyReply, FastifyRequest } from 'fastify'
import { FST_BLOCKING_QUEUE_FULL, FST_BLOCKING_UNDER_PRESSURE } from './common/errors.js'
import { PayloadKind, type Head, type Outcome } from './common/protocol.js'
import type { Entry } from './lane.js'
import { reviveError, writeLogs } from './logs.js'
import type { Scheduler } from './scheduler.js'

/** A submission refused for load: the client is told when to come back. */
export function refused (reply: FastifyReply, scheduler: Scheduler, err: unknown): void {
  if (err instanceof FST_BLOCKING_QUEUE_FULL || err instanceof FST_BLOCKING_UNDER_PRESSURE) reply.header('retry-after', scheduler.retryAfter())
}

/** Adds this task's queue wait and run time to the response's Server-Timing header. */
export function serverTiming (reply: FastifyReply, scheduler: Scheduler, entry: Entry, run = 'run in worker'): void {
  const timing = scheduler.timing(entry)
  if (timing === undefined || reply.sent) return
  const value = `blocking-wait;dur=${timing.wait.toFixed(2)};desc="queue wait", blocking-run;dur=${timing.run.toFixed(2)};desc="${run}"`
  const previous = reply.getHeader('server-timing')
  reply.header('server-timing', previous === undefined ? value : `${String(previous)}, ${value}`)
}

/** The payload of an outcome whose log lines (a worker that could not load the function says why there) go to `log`. */
export function loggedPayloadOf (log: FastifyRequest['log'], outcome: Outcome): unknown {
  if (outcome.logs !== undefined) writeLogs(log, outcome.logs)
  return payloadOf(outcome)
}

/** The payload an outcome carries, as the main thread should use it. */
export function payloadOf (outcome: Outcome): unknown {
  switch (outcome.kind) {
    case PayloadKind.Bytes: {
      const bytes = outcome.value
      // A view over the transferred buffer: no copy.
      return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    }
    case PayloadKind.Error:
      throw reviveError(outcome.value)
    default:
      return outcome.value
  }
}

/** Status, headers and cookies the worker's reply set, applied to Fastify's. */
export function applyHead (reply: FastifyReply, head: Head | undefined): void {
  if (head === undefined) return
  if (head.status !== undefined) reply.code(head.status)
  if (head.headers !== undefined) reply.headers(head.headers)
  if (head.cookies !== undefined) {
    // @fastify/cookie's own methods: signing and serializing happen as for an inline handler.
    const cookies = reply as unknown as {
      setCookie: (name: string, value: string, options?: object) => void
      clearCookie: (name: string, options?: object) => void
    }
    for (const call of head.cookies) {
      if (call.value === undefined) cookies.clearCookie(call.name, call.options)
      else cookies.setCookie(call.name, call.value, call.options)
    }
  }
}
