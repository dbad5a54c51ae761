// A streaming CSV export on the worker pool: GET /export?rows=N.
//
//   node examples/export/app.js      (see README.md for requests)
import Fastify from 'fastify'
import blocking from 'fastify-blocking'
import { startIfMain } from '../shared/start.js'
import { exportCsv } from './handlers.js'

/** `threads`: the pool's size (the test uses one, to read that thread's progress). */
export async function build ({ threads = 2, ...options } = {}) {
  const app = Fastify(options)
  await app.register(blocking, { maxThreads: threads, minThreads: threads })
  app.get('/export', {
    // The worker runs at most highWaterMark bytes ahead of the client (64 KiB is the default).
    blocking: { highWaterMark: 64 * 1024 },
    schema: {
      querystring: {
        type: 'object',
        properties: { rows: { type: 'integer', minimum: 0, maximum: 10_000_000, default: 1000 } }
      }
    }
  }, exportCsv)
  return app
}

await startIfMain(import.meta.url, build)
