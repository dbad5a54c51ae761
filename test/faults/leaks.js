// What the fault suite checks after every fault: the app still answers, its
// stats settle, and once it is closed nothing it made is left behind (worker
// threads, message ports, sockets, timers, temporary files).
//
// Threads and ports are not visible to process.getActiveResourcesInfo() when
// they are unref'd (both pools unref their workers), and neither are unref'd
// timers, so resources are tracked with async_hooks: every handle of a watched
// type created after a baseline must have been destroyed once the app is
// closed. Destruction is reported asynchronously, so the checks wait for it
// (with a deadline) instead of asserting at once.
import { createHook } from 'node:async_hooks'
import { mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { build } from '../helpers.js'
import { quick } from '../fixtures/faults.js'

/** Async resource types whose leftovers count as leaks. */
const WATCHED = new Set(['WORKER', 'MESSAGEPORT', 'TCPWRAP', 'TCPSERVERWRAP', 'Timeout', 'FILEHANDLE', 'FSEVENTWRAP', 'PIPEWRAP'])
const trace = process.env.FAULTS_TRACE === '1'

const live = new Map()
let nextSerial = 0
/** The checker's own timers (polling, deadlines): never counted. */
const ownTimers = new WeakSet()
const own = (timer) => {
  ownTimers.add(timer)
  return timer
}
createHook({
  init (asyncId, type, _trigger, resource) {
    if (!WATCHED.has(type)) return
    live.set(asyncId, {
      type,
      serial: nextSerial++,
      ref: new WeakRef(resource),
      stack: trace ? new Error().stack.split('\n').slice(3, 12).join('\n') : undefined
    })
  },
  destroy (asyncId) {
    live.delete(asyncId)
  }
}).enable()

function describe (entry) {
  const resource = entry.ref.deref()
  let detail = ''
  if (entry.type === 'Timeout' && resource !== undefined) {
    const fn = resource._onTimeout
    detail = ` ${resource._idleTimeout} ms, ${resource.hasRef?.() ? 'ref' : 'unref'}: ${String(fn?.name || fn).replace(/\s+/g, ' ').slice(0, 160)}`
  }
  return `${entry.type}${detail}${entry.stack ? `\n${entry.stack}` : ''}`
}

/** A point in time: resources created after it must be gone later. */
export function baseline () {
  return nextSerial
}

/** Watched resources created since `since` and not destroyed yet. */
export function leftSince (since) {
  const left = []
  for (const entry of live.values()) {
    if (entry.serial < since) continue
    const resource = entry.ref.deref()
    if (ownTimers.has(resource)) continue
    // Node's http Date header cache: one timer shared by every server, not the app's.
    if (entry.type === 'Timeout' && resource?._onTimeout?.name === 'resetCache') continue
    // A FileHandle is reported destroyed only when collected: a closed one (fd < 0) is gone.
    if (entry.type === 'FILEHANDLE' && !(resource?.fd >= 0)) continue
    left.push(entry)
  }
  return left
}

/**
 * Gives this test file a temporary directory of its own: worker threads spool
 * uploads into os.tmpdir(), which follows TMPDIR (read when a thread starts,
 * so call this before building any app).
 */
export function sandboxTmp (tap) {
  const dir = mkdtempSync(join(tmpdir(), 'fastify-blocking-faults-'))
  process.env.TMPDIR = dir
  tap.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return { dir, files: () => readdirSync(dir) }
}

/** Whether `predicate()` came to hold within `timeout` ms (checked after every 5 ms timer). */
export async function settle (predicate, { timeout = 5000 } = {}) {
  const deadline = Date.now() + timeout
  while (!predicate()) {
    if (Date.now() > deadline) return false
    await new Promise((resolve) => own(setTimeout(resolve, 5)))
  }
  return true
}

/**
 * One HTTP request on a connection of its own (no keep-alive agent), so that
 * nothing of the client outlives it. Resolves with `{ status, headers, body }`,
 * or `{ closed: true, error }` when the connection was cut before a full
 * response; rejects only when nothing happened within `deadline` ms (a hang).
 */
export function send (port, { method = 'GET', path = '/', headers = {}, body, deadline = 10_000 } = {}) {
  return new Promise((resolve, reject) => {
    let done = false
    const finish = (value, failed) => {
      if (done) return
      done = true
      clearTimeout(timer)
      if (failed) reject(value)
      else resolve(value)
    }
    const req = httpRequest({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
      const chunks = []
      res.on('data', (c) => chunks.push(c))
      res.on('end', () => {
        if (res.complete) finish({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() })
        else finish({ closed: true, status: res.statusCode, error: new Error('response cut') })
      })
      res.on('error', (error) => finish({ closed: true, status: res.statusCode, error }))
      res.on('aborted', () => {})
    })
    const timer = own(setTimeout(() => {
      req.destroy()
      finish(new Error(`no answer to ${method} ${path} within ${deadline} ms`), true)
    }, deadline))
    req.on('error', (error) => finish({ closed: true, error }))
    if (body !== undefined) req.end(body)
    else req.end()
  })
}

/** The app's numbers that must come back to rest after a fault. */
function unsettled (stats, maxThreads) {
  const problems = []
  if (stats.running !== 0) problems.push(`running ${stats.running}`)
  if (stats.queued !== 0) problems.push(`queued ${stats.queued}`)
  if (stats.background.running !== 0) problems.push(`background.running ${stats.background.running}`)
  if (stats.background.queued !== 0) problems.push(`background.queued ${stats.background.queued}`)
  if (stats.threads > maxThreads) problems.push(`threads ${stats.threads} > maxThreads ${maxThreads}`)
  return problems
}

/**
 * After a fault, while the app runs: it answers a blocking route and a plain
 * route over real sockets, its stats settle to nothing running or queued
 * (background included) with no more threads than maxThreads, and the
 * temporary directory is empty.
 */
export async function checkAlive (t, app, { blocking = '/quick', plain = '/plain', maxThreads = 2, tmp } = {}) {
  const port = app.server.address().port
  const settled = await settle(() => unsettled(app.blocking.stats(), maxThreads).length === 0)
  t.ok(settled, `stats settle: ${unsettled(app.blocking.stats(), maxThreads).join(', ') || 'ok'}`)
  const [b, p] = await Promise.all([send(port, { path: blocking }), send(port, { path: plain })])
  t.equal(b.status, 200, `the app answers a blocking route (${blocking})`)
  t.equal(p.status, 200, `the app answers a plain route (${plain})`)
  t.same(unsettled(app.blocking.stats(), maxThreads), [], 'and stats are at rest after them')
  if (tmp !== undefined) {
    const empty = await settle(() => tmp.files().length === 0)
    t.ok(empty, `no temporary file is left (${tmp.files().join(', ') || 'none'})`)
  }
}

/**
 * Closes the app and checks that every watched resource made since `since`
 * (worker threads, their ports, sockets, the server, timers, file handles) has
 * been destroyed, and that the temporary directory is empty.
 */
export async function checkClosed (t, app, since, { tmp } = {}) {
  await app.close()
  const clean = await settle(() => leftSince(since).length === 0)
  const left = leftSince(since).map(describe)
  t.ok(clean, 'nothing is left behind after app.close()', clean ? {} : { left })
  if (tmp !== undefined) t.same(tmp.files(), [], 'the temporary directory is empty')
}

/**
 * A listening app (test/helpers.js build(), closed at the test's end) with a
 * blocking route `/quick` and a plain route `/plain` for checkAlive(); `routes`
 * adds the test's own. `since` is the baseline for checkClosed(), taken before
 * the app was built.
 */
export async function startApp (t, pool, options, routes = () => {}) {
  const since = baseline()
  const app = await build(t, pool, options)
  app.get('/quick', { blocking: true }, quick)
  app.get('/plain', async () => ({ plain: true }))
  await routes(app)
  await app.listen({ port: 0, host: '127.0.0.1' })
  return { app, since, port: app.server.address().port }
}

/**
 * Shared counters a fixture handler writes (see test/fixtures/faults.js):
 * `sab` goes to the handler, `reached(i, n)` resolves once counter `i` is at
 * least `n` (woken by the handler's Atomics.notify, no polling).
 */
export function marks () {
  const sab = new SharedArrayBuffer(8 * 4)
  const i32 = new Int32Array(sab)
  return {
    sab,
    get: (i) => Atomics.load(i32, i),
    async reached (i, n = 1, timeout = 10_000) {
      let seen
      while ((seen = Atomics.load(i32, i)) < n) {
        const r = Atomics.waitAsync(i32, i, seen, timeout)
        if (r.async && (await r.value) === 'timed-out') throw new Error(`mark ${i}: ${seen} of ${n}`)
      }
    }
  }
}
