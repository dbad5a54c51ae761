// The HTTP process of the durable example: it only adds jobs (queue.work:
// false); worker.js processes, on this machine or others, run them.
//
//   REDIS_URL=redis://127.0.0.1:6379 node examples/durable/app.js
import Fastify from 'fastify'
import blocking from 'fastify-blocking'
import { startIfMain } from '../shared/start.js'
import { renderReport, sendWelcome } from './tasks/email.js'

export async function build ({ redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', ...options } = {}) {
  const app = Fastify(options)
  await app.register(blocking, {
    maxThreads: 1,
    queue: {
      connection: redisUrl,
      work: false,
      jobs: { attempts: 3, backoff: { type: 'exponential', delay: 1000 }, removeOnComplete: 1000 },
      timeout: 1000
    }
  })

  // 202: the job is in Redis when the client gets this answer (503 if Redis is down).
  app.post('/signup', {
    schema: { body: { type: 'object', required: ['email'], properties: { email: { type: 'string' } } } }
  }, async (request, reply) => {
    reply.background(sendWelcome, request.body.email, new Date())
    return reply.code(202).send({ welcome: 'queued' })
  })

  // One job per report however often it is asked for: the jobId is the report's.
  app.post('/reports/:id', async (request, reply) => {
    const { id } = await app.blocking.enqueue(renderReport, [request.params.id], { jobId: `report-${request.params.id}` })
    return reply.code(202).send({ jobId: id })
  })

  app.get('/queue', async () => app.blocking.stats().queue)
  return app
}

await startIfMain(import.meta.url, build)
