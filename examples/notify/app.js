// Notifications sent after the response, as background tasks on the worker pool:
// POST /signup (a blocking handler asks for one), POST /orders/:id/ship (a main-thread one does).
//
//   node examples/notify/app.js      (see README.md for requests)
import Fastify from 'fastify'
import blocking from 'fastify-blocking'
import { startIfMain } from '../shared/start.js'
import { sendNotification, signup } from './handlers.js'

const emailBody = {
  type: 'object',
  required: ['email'],
  properties: { email: { type: 'string', pattern: '^[^@\\s]+@[^@\\s]+$' } }
}

/** `notifyLog`: a file for the notifications (default: stdout). */
export async function build ({ notifyLog, ...options } = {}) {
  // Read by the task in the worker threads, which copy process.env when they start.
  if (notifyLog !== undefined) process.env.NOTIFY_LOG = notifyLog
  const app = Fastify(options)
  await app.register(blocking, { maxThreads: 2, minThreads: 2 })

  app.post('/signup', { blocking: true, schema: { body: emailBody } }, signup)

  // An ordinary async route on the main thread: the task still runs on the pool.
  app.post('/orders/:id/ship', { schema: { body: emailBody } }, async (request, reply) => {
    const subject = `Order ${request.params.id} has shipped`
    reply.background(sendNotification, { reqId: request.id, to: request.body.email, subject })
    return { shipped: request.params.id }
  })
  return app
}

await startIfMain(import.meta.url, build)
