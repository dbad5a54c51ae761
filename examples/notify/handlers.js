// The background task and the blocking handler that asks for it. Worker threads
// import this module; it must not import app.js (that would build the app in
// every thread, which fastify-blocking refuses at startup).
import pino from 'pino' // Fastify's logger, installed with it
import { defineHandler, defineTask } from 'fastify-blocking'
import { httpError } from '../shared/http-error.js'

// A task runs in a worker with only its arguments: no request, no request.log.
// So it makes a logger of its own, once per thread, on first use: to the file
// named by NOTIFY_LOG (set by app.js before the pool starts its threads, which
// copy process.env), else to stdout. Synchronous, so that no line is lost when
// the pool ends the thread.
let log
function notificationLog () {
  log ??= pino({ name: 'notify' }, pino.destination({ dest: process.env.NOTIFY_LOG ?? 1, sync: true }))
  return log
}

/** Sends (here: logs) a notification. Pass the request's id as `reqId` to tie it to its request. */
export const sendNotification = defineTask(import.meta.url, function sendNotification ({ reqId, to, subject }) {
  // A failure is logged by the plugin, with the request's reqId and the task's name.
  if (to.endsWith('.invalid')) throw httpError(502, `cannot deliver to ${to}`)
  notificationLog().info({ reqId, to, subject }, 'notification sent')
})

/** POST /signup {email}: a worker-side handler; its background task starts once the 201 is sent. */
export const signup = defineHandler(import.meta.url, (request, reply) => {
  const { email } = request.body
  reply.background(sendNotification, { reqId: request.id, to: email, subject: 'Welcome!' })
  reply.code(201)
  return { email }
})
