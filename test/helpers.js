// Shared by the tests: every behaviour is proved on both pools.
import diagnostics from 'node:diagnostics_channel'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import Fastify from 'fastify'
import blocking, { channels } from 'fastify-blocking'
import { flushCoverage, waitAtGate } from './fixtures/gate.js'

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

/** Holds every thread of a maxThreads: 1 app until `release()`. */
export async function holdThread (app) {
  const g = gate()
  const held = app.blocking.run(waitAtGate, g.sab)
  await g.reached(1)
  return { release: async () => { g.open(); await held } }
}

/** Collects the messages of the diagnostics channel of tasks while the test runs. */
export function taskMessages (t) {
  const messages = []
  const onMessage = (m) => messages.push(m)
  diagnostics.subscribe(channels.task, onMessage)
  t.teardown(() => diagnostics.unsubscribe(channels.task, onMessage))
  return messages
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

/**
 * Points TMPDIR (where the worker threads spool uploads, read when they start)
 * at a directory of the test file's own, three levels below a base directory,
 * so that a client filename such as ../../x would land in a directory the test
 * watches. Removed at the end of the file.
 */
export function spoolDirectory (tap) {
  const base = mkdtempSync(join(tmpdir(), 'fastify-blocking-security-'))
  const spoolDir = join(base, 'a', 'b', 'spool')
  mkdirSync(spoolDir, { recursive: true })
  process.env.TMPDIR = spoolDir
  tap.teardown(() => rmSync(base, { recursive: true, force: true }))
  return { base, spoolDir }
}

/** Sends `head` (and `body`) over a fresh socket and resolves with every byte the server sent, once it closes. */
export function raw (port, head, body) {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => {
      socket.write(head)
      if (body !== undefined) socket.write(body)
    })
    const chunks = []
    socket.on('data', (chunk) => chunks.push(chunk))
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')))
    socket.on('error', reject)
  })
}

/** A GET over a fresh socket: every byte of the response, as `raw()`. */
export const rawGet = (port, path) => raw(port, `GET ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`)

/** A POST of `multipartBody()`'s shape over a fresh socket: every byte of the response, as `raw()`. */
export function rawPost (port, path, { body, contentType }) {
  return raw(port, `POST ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: ${contentType}\r\nContent-Length: ${body.length}\r\n\r\n`, body)
}

/** A raw response split into status, headers (name -> values) and body (chunked bodies decoded). */
export function parse (text) {
  const end = text.indexOf('\r\n\r\n')
  const [statusLine, ...lines] = text.slice(0, end).split('\r\n')
  const headers = {}
  for (const line of lines) {
    const colon = line.indexOf(':')
    const name = line.slice(0, colon).toLowerCase()
    ;(headers[name] ??= []).push(line.slice(colon + 1).trim())
  }
  let body = text.slice(end + 4)
  if (headers['transfer-encoding']?.[0] === 'chunked') {
    let decoded = ''
    for (let at = 0; ;) {
      const eol = body.indexOf('\r\n', at)
      const size = parseInt(body.slice(at, eol), 16)
      if (!(size > 0)) break
      decoded += body.slice(eol + 2, eol + 2 + size)
      at = eol + 2 + size + 2
    }
    body = decoded
  }
  return { status: Number(statusLine.split(' ')[1]), statusLine, lines, headers, body }
}

/** A multipart body of `parts` ({ name, filename?, data? }) and its content type. */
export function multipartBody (parts, boundary = 'SecurityBoundary') {
  const chunks = []
  for (const part of parts) {
    const disposition = part.filename === undefined
      ? `form-data; name="${part.name}"`
      : `form-data; name="${part.name}"; filename="${part.filename}"`
    chunks.push(Buffer.from(`--${boundary}\r\nContent-Disposition: ${disposition}\r\n\r\n`), Buffer.from(part.data ?? ''), Buffer.from('\r\n'))
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`))
  return { body: Buffer.concat(chunks), contentType: `multipart/form-data; boundary=${boundary}` }
}
