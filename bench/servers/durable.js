// The HTTP side of the durable-queue benchmark, in a process of its own:
//
//   node bench/servers/durable.js <plain|background|queued|bullmq> <redis url>
//
// GET /ok answers { ok: true }; with `background` it also calls
// reply.background(noop) (the task runs in this process's pool), with
// `queued` the plugin has `queue` (work: false) and the call adds a job to
// Redis before the response; `bullmq` is the anchor: the handler awaits a
// plain BullMQ queue.add() itself. Prints its address; closes on SIGTERM.
import Fastify from 'fastify'
import blocking from 'fastify-blocking'
import { noop } from './durable-tasks.js'

const [mode, redisUrl] = process.argv.slice(2)
const app = Fastify({ logger: false })
const pool = { maxThreads: 1, minThreads: 1 }
if (mode === 'plain') {
  await app.register(blocking, pool)
  app.get('/ok', async () => ({ ok: true }))
} else if (mode === 'background' || mode === 'queued') {
  await app.register(blocking, mode === 'queued' ? { ...pool, queue: { connection: redisUrl, work: false, jobs: { removeOnComplete: true } } } : pool)
  app.get('/ok', async (request, reply) => {
    reply.background(noop)
    return { ok: true }
  })
} else if (mode === 'bullmq') {
  const { Queue } = await import('bullmq')
  const { Redis } = await import('ioredis')
  const queue = new Queue('fastify-blocking', { connection: new Redis(redisUrl, { enableOfflineQueue: false, maxRetriesPerRequest: 1 }) })
  await queue.waitUntilReady()
  await app.register(blocking, pool)
  app.get('/ok', async () => {
    await queue.add('bench.noop', { args: [] }, { removeOnComplete: true })
    return { ok: true }
  })
} else {
  throw new Error(`unknown mode ${mode}`)
}
const address = await app.listen({ host: '127.0.0.1', port: 0 })
console.log(address)
process.once('SIGTERM', () => app.close())
