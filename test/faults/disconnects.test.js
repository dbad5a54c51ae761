// Clients that go away: while their request is queued, while its handler
// runs, in the middle of a streamed response, in the middle of an upload.
// Every disconnect is a real socket destroyed once the server is known (by a
// gate, a shared counter or a spooled file) to be at that point.
import tap, { test } from 'tap'
import { request as httpRequest } from 'node:http'
import { gate, pools, until } from '../helpers.js'
import { waitAtGate } from '../fixtures/gate.js'
import * as f from '../fixtures/faults.js'
import { checkAlive, checkClosed, marks, sandboxTmp, startApp } from './leaks.js'

const tmp = sandboxTmp(tap)

/**
 * Starts a request on a connection of its own (a GET is sent whole, a POST's
 * body is the test's to write); `response` resolves with the response, or
 * the error that ended the request.
 */
function open (port, { method = 'GET', path, headers = {} }) {
  const req = httpRequest({ host: '127.0.0.1', port, method, path, headers, agent: false })
  const response = new Promise((resolve) => {
    req.on('response', resolve)
    req.on('error', resolve)
  })
  if (method === 'GET') req.end()
  else req.flushHeaders()
  return { req, response }
}

/** A preHandler that hands the handler its shared memory (see test/fixtures/faults.js). */
const withBody = (body) => (request, reply, done) => {
  request.body = body
  done()
}

const BOUNDARY = 'faults-boundary'
const multipartHeaders = { 'content-type': `multipart/form-data; boundary=${BOUNDARY}`, 'content-length': String(10 * 1024 * 1024) }
const fileHead = `--${BOUNDARY}\r\nContent-Disposition: form-data; name="field"\r\n\r\nvalue\r\n` +
  `--${BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`

for (const pool of pools) {
  test(`${pool}: a client that leaves while its request is queued: the handler never runs`, async (t) => {
    const m = marks()
    const { app, since, port } = await startApp(t, pool, { maxThreads: 1 }, (app) => {
      app.get('/counted', { blocking: true, preHandler: withBody({ marks: m.sab }) }, f.counted)
    })
    const g = gate()
    const held = app.blocking.run(waitAtGate, g.sab)
    await g.reached(1)
    const { req, response } = open(port, { path: '/counted' })
    await until(() => app.blocking.stats().queued === 1, { what: 'the request to queue' })
    req.destroy()
    await until(() => app.blocking.stats().queued === 0, { what: 'the request to leave the queue' })
    g.open()
    await held
    await response
    t.equal(m.get(f.MARK_STARTED), 0, 'the handler did not run')
    await checkAlive(t, app, { maxThreads: 1, tmp })
    await checkClosed(t, app, since, { tmp })
  })

  test(`${pool}: a client that leaves while its handler runs: request.signal aborts, the thread is kept`, async (t) => {
    const m = marks()
    const g = gate()
    let serverSawClose
    const closed = new Promise((resolve) => { serverSawClose = resolve })
    const { app, since, port } = await startApp(t, pool, { maxThreads: 1 }, (app) => {
      app.get('/gated', {
        blocking: true,
        preHandler: (request, reply, done) => {
          request.body = { gate: g.sab, marks: m.sab }
          reply.raw.once('close', serverSawClose)
          done()
        }
      }, f.gated)
    })
    const { threadId } = await fetchJson(port, '/quick')
    const { req, response } = open(port, { path: '/gated' })
    await g.reached(1)
    req.destroy()
    await closed
    g.open()
    await m.reached(f.MARK_ENDED)
    t.equal(m.get(f.MARK_ABORTED), 1, 'the handler saw request.signal abort')
    await response
    await checkAlive(t, app, { maxThreads: 1, tmp })
    t.equal((await fetchJson(port, '/quick')).threadId, threadId, 'on the same thread')
    await checkClosed(t, app, since, { tmp })
  })

  test(`${pool}: a client that leaves while its handler ignores the signal: the timeout ends the thread`, async (t) => {
    const started = marks()
    const { app, since, port } = await startApp(t, pool, { maxThreads: 1 }, (app) => {
      app.get('/spin', { blocking: { timeout: 150 }, preHandler: withBody({ marks: started.sab }) }, f.spinMarked)
    })
    const { req, response } = open(port, { path: '/spin' })
    // Started by its thread, not only sent to it.
    await started.reached(f.MARK_STARTED)
    req.destroy()
    await response
    await until(() => app.blocking.stats().failed === 1, { what: 'the timeout' })
    await checkAlive(t, app, { maxThreads: 1, tmp })
    await checkClosed(t, app, since, { tmp })
  })

  test(`${pool}: a client that leaves mid-stream: the generator's finally runs in the worker`, async (t) => {
    const reading = marks()
    const paused = marks()
    let raw
    const { app, since, port } = await startApp(t, pool, { maxThreads: 1 }, (app) => {
      app.get('/reading', { blocking: true, preHandler: withBody({ marks: reading.sab }) }, f.endless)
      app.get('/paused', {
        blocking: true,
        preHandler: (request, reply, done) => {
          request.body = { marks: paused.sab }
          raw = reply.raw
          done()
        }
      }, f.endless)
    })
    // A client that reads a few chunks, then leaves.
    const a = open(port, { path: '/reading' })
    const res = await a.response
    t.equal(res.statusCode, 200)
    let chunks = 0
    for await (const _ of res) if (++chunks === 3) break // eslint-disable-line no-unused-vars
    await reading.reached(f.MARK_FINALLY)
    t.pass('finally ran after the client read and left')
    // A client that stops reading, so the stream waits for it, then leaves.
    const b = open(port, { path: '/paused' })
    const res2 = await b.response
    res2.pause()
    await until(() => raw?.writableNeedDrain === true, { what: 'the response to fill the socket' })
    b.req.destroy()
    await paused.reached(f.MARK_FINALLY)
    t.pass('finally ran after a client that had stopped reading left')
    await checkAlive(t, app, { maxThreads: 1, tmp })
    await checkClosed(t, app, since, { tmp })
  })

  test(`${pool}: a client that leaves mid-upload: spooled files are deleted, on a blocking route and with readMultipart()`, async (t) => {
    const { app, since, port } = await startApp(t, pool, { maxThreads: 1, multipart: { spoolThreshold: 1024 } }, (app) => {
      app.post('/upload', { blocking: true }, f.upload)
      app.post('/read', async (request) => {
        const { fields, files } = await request.readMultipart()
        return { fields, files: files.length }
      })
    })
    for (const path of ['/upload', '/read']) {
      const { req, response } = open(port, { method: 'POST', path, headers: multipartHeaders })
      req.write(fileHead)
      req.write(Buffer.alloc(200_000, 1))
      await until(() => tmp.files().length > 0, { what: `${path}: a file to be spooled` })
      req.destroy()
      await response
      await until(() => tmp.files().length === 0, { what: `${path}: the spooled file to be deleted` })
      t.pass(`${path}: the spooled file was deleted`)
    }
    await checkAlive(t, app, { maxThreads: 1, tmp })
    await checkClosed(t, app, since, { tmp })
  })

  test(`${pool}: a client that leaves mid-upload while the upload waits for a thread, on a blocking route and with readMultipart()`, async (t) => {
    // Regression: the worker's end of the upload's channel, never handed to a
    // thread, was left open with the chunks queued in it (up to 1 MiB each time).
    const { app, since, port } = await startApp(t, pool, { maxThreads: 1, multipart: { spoolThreshold: 1024 } }, (app) => {
      app.post('/upload', { blocking: true }, f.upload)
      app.post('/read', async (request) => {
        const { files } = await request.readMultipart()
        return { files: files.length }
      })
    })
    for (const path of ['/upload', '/read']) {
      const before = app.blocking.stats()
      const g = gate()
      const held = app.blocking.run(waitAtGate, g.sab)
      await g.reached(1)
      const { req, response } = open(port, { method: 'POST', path, headers: multipartHeaders })
      req.write(fileHead)
      req.write(Buffer.alloc(200_000, 1))
      await until(() => app.blocking.stats().queued === 1, { what: `${path}: the upload to queue` })
      req.destroy()
      await until(() => app.blocking.stats().queued === 0, { what: `${path}: the upload to leave the queue` })
      g.open()
      await held
      await response
      const after = app.blocking.stats()
      t.same([after.completed - before.completed, after.failed - before.failed], [1, 0], `${path}: only the held task ran`)
    }
    await checkAlive(t, app, { maxThreads: 1, tmp })
    await checkClosed(t, app, since, { tmp })
  })

  test(`${pool}: a thread that dies while it holds a waiting stream and a spooling upload`, async (t) => {
    const m = marks()
    let raw
    const { app, since, port } = await startApp(t, pool, { maxThreads: 1, multipart: { spoolThreshold: 1024 } }, (app) => {
      app.get('/paused', {
        blocking: true,
        preHandler: (request, reply, done) => {
          request.body = { marks: m.sab }
          raw = reply.raw
          done()
        }
      }, f.endless)
      app.post('/upload', { blocking: true }, f.upload)
      app.get('/exits', { blocking: true }, f.exits)
    })
    const stream = open(port, { path: '/paused' })
    const res = await stream.response
    res.pause()
    await until(() => raw?.writableNeedDrain === true, { what: 'the response to fill the socket' })
    const upload = open(port, { method: 'POST', path: '/upload', headers: multipartHeaders })
    upload.req.on('error', () => {})
    upload.req.write(fileHead)
    upload.req.write(Buffer.alloc(200_000, 1))
    await until(() => tmp.files().length > 0, { what: 'a file to be spooled' })
    const exited = await fetchJson(port, '/exits', true)
    t.equal(exited.code, 'FST_BLOCKING_WORKER_CRASHED')
    const uploaded = await upload.response
    t.ok(uploaded instanceof Error || uploaded.statusCode === 500, `the upload failed (${uploaded.statusCode ?? uploaded.code})`)
    upload.req.destroy()
    res.resume()
    const cut = await new Promise((resolve) => {
      res.on('end', () => resolve(!res.complete))
      res.on('error', () => resolve(true))
      res.on('aborted', () => {})
    })
    t.ok(cut, 'the stream was cut')
    stream.req.destroy()
    await until(() => tmp.files().length === 0, { what: 'the main thread to delete what the dead thread spooled' })
    t.pass('the dead thread\'s spooled file was deleted')
    await checkAlive(t, app, { maxThreads: 1, tmp })
    await checkClosed(t, app, since, { tmp })
  })
}

async function fetchJson (port, path, anyStatus = false) {
  const res = await open(port, { path }).response
  if (res instanceof Error) throw res
  const chunks = []
  for await (const c of res) chunks.push(c)
  if (!anyStatus && res.statusCode !== 200) throw new Error(`${path}: ${res.statusCode}`)
  return JSON.parse(Buffer.concat(chunks).toString())
}
