// app.close() under load: requests running and queued, uploads halfway
// through their bodies, app.blocking.run() calls and background tasks waiting.
// Everything is answered, finished or dropped with a log line; nothing is
// left behind.
import tap, { test } from 'tap'
import { request as httpRequest } from 'node:http'
import { gate, pools, until } from '../helpers.js'
import * as f from '../fixtures/faults.js'
import { checkClosed, marks, sandboxTmp, send, startApp } from './leaks.js'

const tmp = sandboxTmp(tap)

const REQUESTS = 24
const UPLOADS = 3
const RUNS = 6
const BOUNDARY = 'close-boundary'

/** An upload sent in two halves: `finish()` sends the second. Resolves like send(). */
function halfUpload (port) {
  const file = Buffer.alloc(60_000, 2)
  const head = Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="f"; filename="f.bin"\r\n\r\n`)
  const tail = Buffer.from(`\r\n--${BOUNDARY}--\r\n`)
  const body = Buffer.concat([head, file, tail])
  const half = Math.floor(body.length / 2)
  const req = httpRequest({
    host: '127.0.0.1',
    port,
    method: 'POST',
    path: '/upload',
    agent: false,
    headers: { 'content-type': `multipart/form-data; boundary=${BOUNDARY}`, 'content-length': body.length }
  })
  const response = new Promise((resolve) => {
    req.on('response', (res) => {
      const chunks = []
      res.on('data', (c) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }))
      res.on('error', (error) => resolve({ closed: true, error }))
    })
    req.on('error', (error) => resolve({ closed: true, error }))
  })
  req.write(body.subarray(0, half))
  return { response, finish: () => req.end(body.subarray(half)) }
}

for (const pool of pools) {
  test(`${pool}: app.close() under load answers or drops (with a log line) everything, and leaves nothing behind`, async (t) => {
    const m = marks()
    let received = 0
    let allReceived
    const receivedAll = new Promise((resolve) => { allReceived = resolve })
    const { app, since, port } = await startApp(t, pool, { maxThreads: 2, closeTimeout: 300, multipart: { spoolThreshold: 1024 } }, (app) => {
      app.addHook('onRequest', (request, reply, done) => {
        if (++received === REQUESTS + UPLOADS) allReceived()
        done()
      })
      app.get('/work', {
        blocking: true,
        preHandler: (request, reply, done) => {
          request.body = { marks: m.sab }
          done()
        }
      }, f.withBackground)
      app.post('/upload', { blocking: true }, f.upload)
    })

    const uploads = Array.from({ length: UPLOADS }, () => halfUpload(port))
    const requests = Array.from({ length: REQUESTS }, () => send(port, { path: '/work?ms=10&bg=100' }))
    await receivedAll
    await until(() => tmp.files().length > 0, { what: 'an upload to spool a file' })

    const closing = app.close()
    // Bodies still arriving while the app closes.
    for (const u of uploads) u.finish()
    // Fastify first waits for the requests in flight; these calls queue behind
    // them meanwhile. Two of them then hold both threads' places (without
    // blocking the threads, where the uploads finish) until the pool is
    // destroyed; the others are still queued when closeTimeout ends.
    const held = gate()
    const runs = Array.from({ length: RUNS }, () => app.blocking.run(f.heldAsync, held.sab).then(() => 'done', (err) => err))
    t.teardown(() => held.open())
    const refused = await send(port, { path: '/work' })
    t.ok(refused.closed, 'a new connection is refused while closing')
    const answers = await Promise.all([...requests, ...uploads.map((u) => u.response)])
    const ran = await Promise.all(runs)
    await closing

    const statuses = {}
    for (const a of answers) {
      const key = a.closed ? 'closed' : a.status
      statuses[key] = (statuses[key] ?? 0) + 1
    }
    t.same(Object.keys(statuses).filter((s) => !['200', '503', 'closed'].includes(s)), [], `every request answered 200 or 503, or cut: ${JSON.stringify(statuses)}`)
    const badRuns = ran.filter((r) => r !== 'done' && r.code !== 'FST_BLOCKING_CLOSED')
    t.same(badRuns.map(String), [], 'every run() call finished or was closed')

    // Dropped before they started, each one logged by the plugin; the two that
    // held the threads were stopped.
    const notStarted = ran.filter((r) => r !== 'done' && /was not started/.test(r.message)).length
    const stopped = ran.filter((r) => r !== 'done' && /was stopped/.test(r.message)).length
    t.same({ notStarted, stopped }, { notStarted: RUNS - 2, stopped: 2 }, 'run() calls: the queued ones were dropped, the running ones stopped')
    const droppedLogs = app.logs.filter((l) => /fastify-blocking: closing, dropped app\.blocking\.run\(heldAsync\)/.test(l.msg)).length
    t.equal(droppedLogs, notStarted, 'each dropped run() call is logged')

    // Every answered /work asked for one background task: it ran, or it is logged.
    const asked = answers.slice(0, REQUESTS).filter((a) => a.status === 200).length
    const finished = m.get(f.MARK_BACKGROUND)
    const logged = app.logs.filter((l) => l.task === 'slowTask' && /background task slowTask (was dropped|failed)/.test(l.msg)).length
    t.equal(finished + logged, asked, `background tasks: ${asked} asked for, ${finished} ran, ${logged} dropped or failed with a log line`)
    t.ok(logged > 0, 'closeTimeout dropped some background tasks')

    await checkClosed(t, app, since, { tmp })
  })
}
