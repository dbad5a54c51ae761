// A worker process of the durable example: runs the jobs on its pool, no HTTP.
// The same as `npx fastify-blocking-worker --tasks 'examples/durable/tasks/*.js'`.
//
//   REDIS_URL=redis://127.0.0.1:6379 node examples/durable/worker.js
import { startQueueWorker } from 'fastify-blocking'

const worker = await startQueueWorker({
  tasks: new URL('./tasks/*.js', import.meta.url),
  connection: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
  maxThreads: 2
})
// Takes no new job, lets the running ones finish, closes its connections, exits.
for (const signal of ['SIGINT', 'SIGTERM']) process.once(signal, () => worker.close())
