// What the plugin tells the outside world about each task, without depending
// on any metrics library: one diagnostics_channel message per task when it
// ends, whatever the end (see docs/api.md, "Metrics"). Nothing is built when
// no one subscribes.
import diagnostics from 'node:diagnostics_channel'

/** Names of the plugin's diagnostics channels. */
export const channels = {
  /** One message per task when it ends: a TaskMessage. */
  task: 'fastify-blocking:task'
} as const

/**
 * How a task ended:
 * - `completed`: it returned (or streamed to its end);
 * - `failed`: it threw, or its result could not cross threads;
 * - `timeout`: it ran past its timeout;
 * - `crashed`: its thread died;
 * - `skipped`: its client went away while it was queued, so it never ran;
 * - `rejected`: it was refused at once (queue full, pool under pressure, closing);
 * - `dropped`: it was still queued when `app.close()` gave up waiting;
 * - `queued`: with `queue`, it was added to the durable queue (`jobId`); its run, wherever it happens, is another message.
 */
export type TaskOutcome = 'completed' | 'failed' | 'timeout' | 'crashed' | 'skipped' | 'rejected' | 'dropped' | 'queued'

export interface TaskMessage {
  lane: 'request' | 'background'
  /** `GET /users/:id` for a route, the task's name for a background task, `app.blocking.run(name)`. */
  name: string
  /** The route's `METHOD /pattern`, for a task that serves a blocking route. */
  route?: string
  outcome: TaskOutcome
  /** ms from submission until a thread started it (or until it ended, if it never started). */
  waitTime: number
  /** ms from its start on a thread until its outcome reached the main thread; 0 if it never started. */
  runTime: number
  /** With `queue`: the BullMQ job's id, for `queued`. */
  jobId?: string
  /** What it failed with, for every outcome but `completed`, `skipped` and `queued`. */
  error?: { name: string, message: string, code?: string, statusCode?: number }
}

const taskChannel = diagnostics.channel(channels.task)

/** Whether anyone listens: callers skip building the message when not. */
export function observed (): boolean {
  return taskChannel.hasSubscribers
}

/** What an error (ours, or a handler's serialized one) says in a message: its name, message, code and status. */
export function errorOf (err: { name: string, message: string, code?: string | undefined, statusCode?: number | undefined }): NonNullable<TaskMessage['error']> {
  return {
    name: err.name,
    message: err.message,
    ...(err.code === undefined ? {} : { code: err.code }),
    ...(err.statusCode === undefined ? {} : { statusCode: err.statusCode })
  }
}

export function publishTask (message: TaskMessage): void {
  taskChannel.publish(message)
}
