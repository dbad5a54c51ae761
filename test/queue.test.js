import { test } from 'tap'
import { request as httpRequest } from 'node:http'
import { build, gate, pools, until } from './helpers.js'
import { waitAtGate } from './fixtures/gate.js'
import * as f from './fixtures/failures.js'

/** Sends a GET and returns the request, so that the test can destroy it. */
function get (port, path) {
  const req = httpRequest({ host: '127.0.0.1', port, path })
  req.on('error', () => {}) // the test destroys it on purpose
  req.end()
  return req
}

for (const pool of pools) {
  test(`${pool}: past maxQueue, requests get 503 with Retry-After`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1, maxQueue: 1 })
    app.get('/quick', { blocking: true }, f.quick)
    await app.ready()
    const g = gate()
    const held = app.blocking.run(waitAtGate, g.sab)
    await g.reached(1)
    const queued = app.inject('/quick')
    await until(() => app.blocking.stats().queued === 1, { what: 'one queued request' })
    const full = await app.inject('/quick')
    t.equal(full.statusCode, 503)
    t.equal(full.json().code, 'FST_BLOCKING_QUEUE_FULL')
    t.match(full.headers['retry-after'], /^\d+$/)
    t.ok(Number(full.headers['retry-after']) >= 1)
    g.open()
    await held
    t.equal((await queued).statusCode, 200, 'the queued request ran once the thread was free')
    t.same({ queued: app.blocking.stats().queued, running: app.blocking.stats().running }, { queued: 0, running: 0 })
  })

  test(`${pool}: a queued request whose client went away never runs`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1 })
    app.get('/counted', { blocking: true }, f.counted)
    await app.listen({ port: 0, host: '127.0.0.1' })
    const { port } = app.server.address()
    const ranBefore = await app.blocking.run(f.ranCount)
    const g = gate()
    const held = app.blocking.run(waitAtGate, g.sab)
    await g.reached(1)
    const req = get(port, '/counted')
    await until(() => app.blocking.stats().queued === 1, { what: 'the request to queue' })
    req.destroy()
    await until(() => app.blocking.stats().queued === 0, { what: 'the request to leave the queue' })
    g.open()
    await held
    t.equal(await app.blocking.run(f.ranCount), ranBefore, 'the handler did not run')
    const res = await fetch(`http://127.0.0.1:${port}/counted`)
    t.equal(res.status, 200, 'the app keeps serving')
  })

  test(`${pool}: a running handler sees request.signal abort when its client goes away`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1 })
    let started
    const startedPromise = new Promise((resolve) => { started = resolve })
    app.get('/started', async () => { started(); return 'ok' })
    app.get('/cooperative', { blocking: true }, f.announcedCooperative)
    app.get('/quick', { blocking: true }, f.quick)
    await app.listen({ port: 0, host: '127.0.0.1' })
    const { port } = app.server.address()
    const thread = (await app.inject('/quick')).json().threadId
    const req = get(port, `/cooperative?port=${port}`)
    await startedPromise
    req.destroy()
    // The handler stops by itself (it would otherwise wait forever): the thread is free again.
    await until(() => app.blocking.stats().running === 0, { what: 'the handler to stop' })
    t.equal(await app.blocking.run(f.abortedCount), 1, 'its request.signal aborted')
    t.equal((await app.inject('/quick')).json().threadId, thread, 'on the same thread, not terminated')
  })
}
