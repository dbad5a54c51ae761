// Shared by the tests: every behaviour is proved on both pools.
import { request as httpRequest } from 'node:http'
import { Writable } from 'node:stream'
import Fastify from 'fastify'
import blocking from 'fastify-blocking'
import { flushCoverage } from './fixtures/gate.js'

export const pools = ['piscina', 'tinypool']

/**
 * A Fastify app with the plugin registered and closed at the test's end.
 * `logs` collects every line the app's logger writes, parsed.
 */
export async function build (t, pool, options = {}, fastifyOptions = {}) {
  const logs = []
  const stream = new Writable({
    write (chunk, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line) logs.push(JSON.parse(line))
      cb()
    }
  })
  const app = Fastify({ logger: { level: 'trace', stream }, ...fastifyOptions })
  await app.register(blocking, { pool, maxThreads: 2, minThreads: 1, ...options })
  t.teardown(async () => {
    await flushWorkerCoverage(app)
    await app.close()
  })
  app.logs = logs
  return app
}

/** Resolves once `predicate()` holds, checking after each turn of the event loop (no fixed sleeps). */
export async function until (predicate, { timeout = 30_000, what = 'condition', left } = {}) {
  const deadline = Date.now() + timeout
  while (!predicate()) {
    // `left()`, when given, says what is still in the way.
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${left === undefined ? '' : `: ${JSON.stringify(left())}`}`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

/** A gate a worker task can wait on: `gate.sab` goes to the task, `gate.open()` releases it. */
export function gate () {
  const sab = new SharedArrayBuffer(8)
  const i32 = new Int32Array(sab)
  return {
    sab,
    /** How many tasks have reached the gate. */
    arrived: () => Atomics.load(i32, 1),
    /** Resolves when `n` tasks wait at the gate (woken by the worker's Atomics.notify). */
    async reached (n = 1) {
      let seen
      while ((seen = Atomics.load(i32, 1)) < n) {
        const r = Atomics.waitAsync(i32, 1, seen, 10_000)
        if (r.async && (await r.value) === 'timed-out') throw new Error(`gate: ${seen} of ${n} tasks arrived`)
      }
    },
    open () {
      Atomics.store(i32, 0, 1)
      Atomics.notify(i32, 0)
    }
  }
}

/** See flushCoverage in fixtures/gate.js. */
async function flushWorkerCoverage (app) {
  if (process.env._TAPJS_PROCESSINFO_COVERAGE_ !== '1' || !app.blocking) return
  let threads
  try {
    threads = app.blocking.stats().threads
  } catch {
    return
  }
  const sab = new SharedArrayBuffer(4)
  await Promise.allSettled(Array.from({ length: threads }, () => app.blocking.run(flushCoverage, sab, threads)))
}

/** GETs over a real socket; resolves with the response (not yet read). */
export function get (port, path) {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path }, resolve)
    req.on('error', reject)
    req.end()
  })
}

/** Reads a response whole; `complete` is false when the connection was cut before the body's end. */
export function readAll (res) {
  return new Promise((resolve) => {
    const chunks = []
    res.on('data', (c) => chunks.push(c))
    res.on('end', () => resolve({ body: Buffer.concat(chunks).toString(), complete: res.complete }))
    res.on('error', () => resolve({ body: Buffer.concat(chunks).toString(), complete: false }))
    res.on('aborted', () => {})
  })
}

export async function listen (app) {
  await app.listen({ port: 0, host: '127.0.0.1' })
  return app.server.address().port
}
