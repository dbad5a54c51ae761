// What the worker threads of the soak server run (bench/servers/soak.js): a
// module of its own, so that the threads can load it.
import { performance } from 'node:perf_hooks'
import { defineHandler, defineTask } from 'fastify-blocking'

/** Busy-waits `ms`, checking request.signal when given: stops early when the client goes away. */
function spin (ms, signal) {
  const end = performance.now() + ms
  let turns = 0
  while (performance.now() < end) {
    if (signal !== undefined && (++turns & 1023) === 0 && signal.aborted) return false
  }
  return true
}

/**
 * POST /json { echo, ms, items, fail }: `ms` of CPU, then a JSON answer of
 * `items` objects. `fail` (a status) throws instead: a deliberate error.
 */
export const json = defineHandler(import.meta.url, (request) => {
  const { echo, ms = 1, items = 16, fail } = request.body
  if (fail !== undefined) {
    const err = new Error('deliberate failure')
    if (fail !== 500) err.statusCode = fail
    throw err
  }
  if (!spin(ms, request.signal)) {
    // Nobody reads the answer: stop and return nothing.
    request.log.debug('the client left; stopping')
    return undefined
  }
  request.log.debug({ ms }, 'json done')
  return { echo, items: Array.from({ length: items }, (_, i) => ({ i, name: `item ${i}` })) }
})

/** GET /stream?chunks=N&size=B: N chunks of B bytes, each a fresh Buffer. */
export const stream = defineHandler(import.meta.url, function * (request, reply) {
  const chunks = Number(request.query.chunks ?? 16)
  const size = Number(request.query.size ?? 16_384)
  reply.type('application/octet-stream').header('x-chunks', chunks)
  for (let i = 0; i < chunks; i++) yield Buffer.alloc(size, 97 + (i % 26))
})

/** POST /upload (multipart): the fields and, per file, its size and whether it was spooled. */
export const upload = defineHandler(import.meta.url, (request) => ({
  fields: request.body,
  files: request.files.map((file) => ({ name: file.fieldname, size: file.size, spooled: file.path !== undefined }))
}))

/** A background task: `ms` of CPU over some bytes (moved or cloned on the way). */
export const chore = defineTask(import.meta.url, function chore (bytes, ms) {
  spin(ms)
  return bytes.length
})

/** POST /bg-worker: a blocking handler that queues background tasks from the worker. */
export const backgroundFromWorker = defineHandler(import.meta.url, (request, reply) => {
  const n = Number(request.query.n ?? 2)
  for (let i = 0; i < n; i++) reply.background(chore, Buffer.alloc(2048, i), 1)
  return { queued: n }
})

/** GET /crash: the thread dies (its other tasks fail with it; the pool replaces it). */
export const crash = defineHandler(import.meta.url, () => { process.exit(1) })

/** GET /hang: never stops by itself; the route's timeout terminates the thread. */
export const hang = defineHandler(import.meta.url, () => {
  for (;;) { /* not cooperative */ }
})
