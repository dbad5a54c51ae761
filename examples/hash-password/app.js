// Password hashing on the worker pool: POST /hash and POST /verify.
//
//   node examples/hash-password/app.js      (see README.md for requests)
import Fastify from 'fastify'
import blocking from 'fastify-blocking'
import { startIfMain } from '../shared/start.js'
import { hash, verify } from './handlers.js'

const password = { type: 'string', minLength: 8, maxLength: 1024 }

export async function build (options = {}) {
  const app = Fastify(options)
  // minThreads equal to maxThreads: see "Sizing the pool" in docs/guide.md.
  await app.register(blocking, { maxThreads: 2, minThreads: 2 })

  // Validation runs on the main thread, before the handler is sent to a worker.
  app.post('/hash', {
    blocking: true,
    schema: { body: { type: 'object', required: ['password'], properties: { password } } }
  }, hash)
  app.post('/verify', {
    blocking: true,
    schema: { body: { type: 'object', required: ['password', 'hash'], properties: { password, hash: { type: 'string', maxLength: 200 } } } }
  }, verify)
  return app
}

await startIfMain(import.meta.url, build)
