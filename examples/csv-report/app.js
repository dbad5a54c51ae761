// A CSV upload, parsed on the worker pool: POST /report (multipart, field "file").
//
//   node examples/csv-report/app.js      (see README.md for requests)
import Fastify from 'fastify'
import blocking from 'fastify-blocking'
import { startIfMain } from '../shared/start.js'
import { report } from './handlers.js'

export async function build (options = {}) {
  const app = Fastify(options)
  await app.register(blocking, {
    maxThreads: 2,
    minThreads: 2,
    // Files up to 256 KiB arrive in memory (file.buffer), larger ones in a temporary file (file.path).
    multipart: { spoolThreshold: 256 * 1024 }
  })
  // No body schema: a multipart body is parsed in the worker, after validation.
  // One file of at most 20 MiB; past a limit the client gets 413.
  app.post('/report', { blocking: { multipart: { limits: { fileSize: 20 * 1024 * 1024, files: 1 } } } }, report)
  return app
}

await startIfMain(import.meta.url, build)
