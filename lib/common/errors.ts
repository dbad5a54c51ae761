// Every error the plugin raises, in one place, each with a code and a status
// (see the errors table in docs/api.md). Made with @fastify/error so that users
// can match them with `instanceof` or by `code`, and so that Fastify's error
// handler answers with the right status.
import createError from '@fastify/error'

export const FST_BLOCKING_QUEUE_FULL = createError<'FST_BLOCKING_QUEUE_FULL', 503, [string]>(
  'FST_BLOCKING_QUEUE_FULL',
  'The worker pool is busy: %s',
  503
)

/** The pool is past a `pressure` threshold: a request that would have to wait is refused before the queue fills. */
export const FST_BLOCKING_UNDER_PRESSURE = createError<'FST_BLOCKING_UNDER_PRESSURE', 503, [string]>(
  'FST_BLOCKING_UNDER_PRESSURE',
  'The worker pool is under pressure: %s',
  503
)

export const FST_BLOCKING_TIMEOUT = createError<'FST_BLOCKING_TIMEOUT', 503, [string, number]>(
  'FST_BLOCKING_TIMEOUT',
  '%s ran for more than %d ms',
  503
)

export const FST_BLOCKING_WORKER_CRASHED = createError<'FST_BLOCKING_WORKER_CRASHED', 500, [string, string]>(
  'FST_BLOCKING_WORKER_CRASHED',
  'The worker thread running %s died: %s',
  500
)

export const FST_BLOCKING_NOT_CLONEABLE = createError<'FST_BLOCKING_NOT_CLONEABLE', 500, [string]>(
  'FST_BLOCKING_NOT_CLONEABLE',
  '%s',
  500
)

export const FST_BLOCKING_HANDLER_NOT_DEFINED = createError<'FST_BLOCKING_HANDLER_NOT_DEFINED', 500, [string]>(
  'FST_BLOCKING_HANDLER_NOT_DEFINED',
  '%s',
  500
)

export const FST_BLOCKING_MULTIPART_LIMIT = createError<'FST_BLOCKING_MULTIPART_LIMIT', 413, [string]>(
  'FST_BLOCKING_MULTIPART_LIMIT',
  'Multipart limit exceeded: %s',
  413
)

export const FST_BLOCKING_MULTIPART_INVALID = createError<'FST_BLOCKING_MULTIPART_INVALID', 400, [string]>(
  'FST_BLOCKING_MULTIPART_INVALID',
  'Malformed multipart body: %s',
  400
)

/** Raised for a bad plugin or route option: a programming error, found at startup. */
export const FST_BLOCKING_INVALID_OPTION = createError<'FST_BLOCKING_INVALID_OPTION', 500, [string]>(
  'FST_BLOCKING_INVALID_OPTION',
  '%s',
  500
)

/** The plugin was registered inside one of its own worker threads (see workers/worker.ts). */
export const FST_BLOCKING_REGISTERED_IN_WORKER = createError<'FST_BLOCKING_REGISTERED_IN_WORKER', 500, [string]>(
  'FST_BLOCKING_REGISTERED_IN_WORKER',
  '%s',
  500
)

/** A reply method or property of Fastify's that a worker's reply does not have (`reply.send()`): the message says what to do instead. */
export const FST_BLOCKING_NOT_IN_WORKER = createError<'FST_BLOCKING_NOT_IN_WORKER', 500, [string]>(
  'FST_BLOCKING_NOT_IN_WORKER',
  '%s',
  500
)

/** The plugin is closing and takes no new work. */
export const FST_BLOCKING_CLOSED = createError<'FST_BLOCKING_CLOSED', 503, [string]>(
  'FST_BLOCKING_CLOSED',
  'The worker pool is closed: %s',
  503
)

/** `queue`: Redis did not take a job within `queue.timeout` (and `queue.whenDown` is 'fail'). */
export const FST_BLOCKING_QUEUE_UNAVAILABLE = createError<'FST_BLOCKING_QUEUE_UNAVAILABLE', 503, [string]>(
  'FST_BLOCKING_QUEUE_UNAVAILABLE',
  'The task queue is unavailable: %s',
  503
)

/** `queue`: an argument of a durable task that JSON cannot carry (BullMQ stores a job's data as JSON). */
export const FST_BLOCKING_NOT_SERIALIZABLE = createError<'FST_BLOCKING_NOT_SERIALIZABLE', 500, [string]>(
  'FST_BLOCKING_NOT_SERIALIZABLE',
  '%s',
  500
)

/** A message one side of the thread protocol (lib/common/protocol.ts) did not expect: a bug, reported loudly, never ignored. */
export const FST_BLOCKING_PROTOCOL = createError<'FST_BLOCKING_PROTOCOL', 500, [string, string]>(
  'FST_BLOCKING_PROTOCOL',
  'fastify-blocking %s: unknown message %s',
  500
)

export const errors = {
  FST_BLOCKING_QUEUE_FULL,
  FST_BLOCKING_UNDER_PRESSURE,
  FST_BLOCKING_TIMEOUT,
  FST_BLOCKING_WORKER_CRASHED,
  FST_BLOCKING_NOT_CLONEABLE,
  FST_BLOCKING_HANDLER_NOT_DEFINED,
  FST_BLOCKING_MULTIPART_LIMIT,
  FST_BLOCKING_MULTIPART_INVALID,
  FST_BLOCKING_INVALID_OPTION,
  FST_BLOCKING_REGISTERED_IN_WORKER,
  FST_BLOCKING_NOT_IN_WORKER,
  FST_BLOCKING_CLOSED,
  FST_BLOCKING_QUEUE_UNAVAILABLE,
  FST_BLOCKING_NOT_SERIALIZABLE,
  FST_BLOCKING_PROTOCOL
}
