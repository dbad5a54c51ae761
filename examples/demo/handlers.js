// A CPU-bound handler, in a module of its own so that a worker thread can load it.
import { pbkdf2Sync } from 'node:crypto'
import { defineHandler } from 'fastify-blocking'

// About 20 ms of CPU on a typical core: while it runs, its thread does nothing else.
export const hash = defineHandler(import.meta.url, (request) => {
  const key = pbkdf2Sync(request.query.password ?? 'hunter2', 'salt', 80_000, 32, 'sha256')
  return { hash: key.toString('hex') }
})
