// What worker threads run in the stream, background and multipart scenarios
// (a module of its own, so that the threads can load it; see handlers.js for
// the event-loop and overhead scenarios).
import { performance } from 'node:perf_hooks'
import { defineHandler, defineTask } from 'fastify-blocking'

/** Bytes per chunk of the streamed response. */
export const CHUNK = 64 * 1024

/** `GET /stream?mib=N`: N MiB (default 256). */
export function streamBytes (query) {
  return Number(query.mib ?? 256) * 2 ** 20
}

/**
 * `bytes` in 64 KiB chunks, each a fresh Buffer, as a generator that produces
 * its data makes them. The inline contender streams this same generator with
 * Readable.from() on the main thread.
 */
export function * chunks (bytes) {
  for (let sent = 0, i = 0; sent < bytes; sent += CHUNK, i++) {
    yield Buffer.alloc(Math.min(CHUNK, bytes - sent), 97 + (i % 26))
  }
}

export const stream = defineHandler(import.meta.url, function * (request, reply) {
  reply.type('application/octet-stream')
  yield * chunks(streamBytes(request.query))
})

/**
 * `count` CSV rows of about 35 bytes, one string per yield: the shape most
 * exports have. The inline contender streams it with Readable.from().
 */
export function * csvRows (count) {
  yield 'id,name,email,amount\n'
  for (let i = 0; i < count; i++) yield `${i},user${i},user${i}@example.com,${(i * 7) % 1000}.${i % 100}\n`
}

export const rows = defineHandler(import.meta.url, function * (request, reply) {
  reply.type('text/csv')
  yield * csvRows(Number(request.query.rows ?? 200_000))
})

/** A background task that keeps its thread busy for `ms` (a busy-wait: CPU-bound work). */
export const spin = defineTask(import.meta.url, function spin (ms) {
  const end = performance.now() + ms
  while (performance.now() < end);
})

/** The blocking upload route: the body was parsed in the worker; files above spoolThreshold are on disk. */
export const upload = defineHandler(import.meta.url, (request) => ({
  files: request.files.map((file) => file.size),
  spooled: request.files.filter((file) => file.path !== undefined).length
}))
