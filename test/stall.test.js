// stallTimeout: a stream whose client reads nothing, or an upload whose client
// sends nothing, while it waits for that client, loses its connection, and its
// place in the streams' cap goes to others. Sockets of our own (a client that
// stops reading or writing is the point); every wait is for an event (the
// server closing a socket, stats settling), none is a fixed sleep.
import tap, { test } from 'tap'
import { mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { build, gate, pools, until } from './helpers.js'
import { waitAtGate } from './fixtures/gate.js'
import { parsed, summarize } from './fixtures/fuzz.js'
import * as s from './fixtures/security.js'

const spoolDir = mkdtempSync(join(tmpdir(), 'fastify-blocking-stall-'))
process.env.TMPDIR = spoolDir
tap.teardown(() => rmSync(spoolDir, { recursive: true, force: true }))

const STALL = 300

async function listen (app) {
  await app.listen({ port: 0, host: '127.0.0.1' })
  return app.server.address().port
}

/**
 * A raw client: writes `head` (and `body`), then writes nothing more; with
 * `read: false` it reads nothing either (and so cannot see the server close
 * the socket: serverClosed() can). Resolves `closed` when its socket closes.
 */
function stuckClient (port, head, body, { read = true } = {}) {
  const socket = connect(port, '127.0.0.1', () => {
    socket.write(head)
    if (body !== undefined) socket.write(body)
  })
  if (!read) socket.pause()
  socket.on('error', () => {})
  const closed = new Promise((resolve) => socket.once('close', resolve))
  return { socket, closed }
}

/** How many of the server's sockets have closed so far. */
function serverClosed (app) {
  let closed = 0
  app.server.on('connection', (socket) => socket.once('close', () => closed++))
  return () => closed
}

/** The head and first bytes of a multipart upload of `total` bytes, of which the client sends only these. */
function partialUpload (path, total = 1_000_000) {
  const start = '--B\r\nContent-Disposition: form-data; name="f"; filename="f.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
  const head = `POST ${path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=B\r\nContent-Length: ${total}\r\n\r\n`
  return { head, body: start + 'x'.repeat(1000) }
}

const stalledLines = (app) => app.logs.filter((l) => l.level === 40 && /stallTimeout/.test(l.msg))

for (const pool of pools) {
  test(`${pool}: an upload whose client stops sending is closed after stallTimeout, on a blocking route and with readMultipart()`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1, stallTimeout: STALL, multipart: { spoolThreshold: 100 } })
    app.post('/blocking', { blocking: true }, parsed)
    app.post('/read', async (request) => {
      const { fields, files } = await request.readMultipart()
      return summarize(fields, files)
    })
    const port = await listen(app)
    for (const path of ['/blocking', '/read']) {
      const before = stalledLines(app).length
      const { head, body } = partialUpload(path)
      const client = stuckClient(port, head, body)
      await client.closed
      t.pass(`${path}: the server closed the connection`)
      await until(() => app.blocking.stats().running === 0 && app.blocking.stats().queued === 0, { what: 'the upload to end' })
      t.equal(stalledLines(app).length, before + 1, `${path}: and said why (warn)`)
    }
    // Ours only: tap's own compile cache may land in TMPDIR too.
    const spooled = () => readdirSync(spoolDir).filter((name) => name.startsWith('fastify-blocking-'))
    await until(() => spooled().length === 0, { what: 'spooled files to be deleted', left: spooled })
    // A client that sends its body: the same upload, whole.
    const whole = partialUpload('/blocking').body + '\r\n--B--\r\n'
    const res = await fetch(`http://127.0.0.1:${port}/blocking`, { method: 'POST', headers: { 'content-type': 'multipart/form-data; boundary=B' }, body: whole })
    t.same([res.status, await res.json()], [200, { values: 0, files: [1000], spooled: 1 }], 'a whole upload parses as before')
  })

  test(`${pool}: streams whose clients read nothing are closed after stallTimeout, and their places are free`, async (t) => {
    // No connectionTimeout: nothing but stallTimeout closes them.
    const app = await build(t, pool, { maxThreads: 1, stallTimeout: STALL })
    app.get('/endless', { blocking: true }, s.endless)
    app.get('/short', { blocking: true }, s.shortStream)
    const port = await listen(app)
    const closed = serverClosed(app)
    const hostile = Array.from({ length: 4 }, () => stuckClient(port, 'GET /endless HTTP/1.1\r\nHost: localhost\r\n\r\n', undefined, { read: false }))
    t.teardown(() => { for (const { socket } of hostile) socket.destroy() })
    await until(() => closed() >= 4, { what: 'the server to close the 4 connections' })
    t.pass('the server closed the 4 connections')
    await until(() => app.blocking.stats().running === 0, { what: 'the streams to end' })
    t.equal(stalledLines(app).length, 4, 'each closing said why (warn)')
    const res = await fetch(`http://127.0.0.1:${port}/short`)
    t.equal(`${res.status} ${await res.text()}`, '200 short', 'a stream after them runs')
  })

  test(`${pool}: time an upload waits in the queue does not count against stallTimeout`, async (t) => {
    // The only thread is held by a task at a gate: an upload whose client sent
    // part of its body, then nothing, waits. A second app, with the same
    // stallTimeout, is the clock: its stalled upload starts after ours was
    // queued, so when it is closed, ours has waited longer than stallTimeout;
    // yet ours is still open. Once the gate opens, ours starts, and is closed
    // stallTimeout later.
    const app = await build(t, pool, { maxThreads: 1, minThreads: 1, stallTimeout: STALL })
    app.post('/blocking', { blocking: true }, parsed)
    const port = await listen(app)
    const clock = await build(t, pool, { maxThreads: 1, stallTimeout: STALL })
    clock.post('/blocking', { blocking: true }, parsed)
    const clockPort = await listen(clock)
    const held = gate()
    const holding = app.blocking.run(waitAtGate, held.sab)
    await held.reached()
    const ours = partialUpload('/blocking')
    const queued = stuckClient(port, ours.head, ours.body)
    let ourClosed = false
    queued.closed.then(() => { ourClosed = true })
    await until(() => app.blocking.stats().queued + app.blocking.stats().running >= 2, { what: 'our upload to be submitted' })
    const other = partialUpload('/blocking')
    await stuckClient(clockPort, other.head, other.body).closed
    t.equal(ourClosed, false, 'the clock\'s upload was closed; ours, queued longer, is still open')
    t.equal(stalledLines(app).length, 0, 'and nothing was said about it')
    held.open()
    await holding
    await queued.closed
    t.equal(stalledLines(app).length, 1, 'once started, it was closed for its stall')
    await until(() => app.blocking.stats().running === 0, { what: 'the upload to end' })
  })
}

test('stallTimeout: 0 turns it off; anything but an integer ≥ 0 is refused', async (t) => {
  const app = await build(t, 'piscina', { maxThreads: 1, stallTimeout: 0 })
  t.ok(app.blocking)
  for (const bad of [-1, 1.5, '100', null]) {
    await t.rejects(build(t, 'piscina', { stallTimeout: bad }), { code: 'FST_BLOCKING_INVALID_OPTION', message: /stallTimeout/ }, `stallTimeout: ${JSON.stringify(bad)}`)
  }
})
