import { test } from 'tap'
import { request as httpRequest } from 'node:http'
import { build, gate, holdThread, pools, until } from './helpers.js'
import { waitAtGate } from './fixtures/gate.js'
import * as f from './fixtures/failures.js'
import * as s from './fixtures/streams.js'

for (const pool of pools) {
  test(`${pool}: stats() counts requests and measures waits and runs`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1 })
    app.get('/quick', { blocking: true }, f.quick)
    app.get('/teapot', { blocking: true }, f.throwsHttp)
    await app.ready()
    const empty = app.blocking.stats()
    t.same(empty.waitTime, { p50: 0, p99: 0 })
    t.equal(empty.completed, 0)
    const g = gate()
    const held = app.blocking.run(waitAtGate, g.sab)
    await g.reached(1)
    const waiting = [app.inject('/quick'), app.inject('/quick'), app.inject('/teapot')]
    await until(() => app.blocking.stats().queued === 3, { what: 'three queued requests' })
    const busy = app.blocking.stats()
    t.equal(busy.running, 1)
    t.equal(busy.threads, 1)
    // Hold them in the queue for a measurable time.
    await new Promise((resolve) => setTimeout(resolve, 50))
    g.open()
    await held
    await Promise.all(waiting)
    const s = app.blocking.stats()
    t.equal(s.queued, 0)
    t.equal(s.running, 0)
    t.equal(s.completed, 3, 'run() and two requests')
    t.equal(s.failed, 1, 'the 418')
    t.ok(s.waitTime.p99 >= 40, `queued requests waited (p99 ${s.waitTime.p99} ms)`)
    t.ok(s.runTime.p99 >= 40, `the gated task ran long (p99 ${s.runTime.p99} ms)`)
    t.ok(s.runTime.p50 > 0 && s.runTime.p50 <= s.runTime.p99)
    t.ok(s.utilization > 0 && s.utilization <= 1)
    t.same(Object.keys(s.background).sort(), ['completed', 'failed', 'queued', 'running', 'runTime', 'waitTime'].sort())
  })

  test(`${pool}: stats() counts each route on its own`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1 })
    app.get('/quick', { blocking: true }, f.quick)
    app.post('/teapot', { blocking: true }, f.throwsHttp)
    app.get('/stream', { blocking: true }, s.mixed)
    app.get('/plain', async () => 'main thread')
    await app.ready()
    t.same(Object.keys(app.blocking.stats().routes).sort(), ['GET /quick', 'GET /stream', 'HEAD /quick', 'HEAD /stream', 'POST /teapot'])
    const held = await holdThread(app)
    const waiting = [app.inject('/quick'), app.inject('/quick'), app.inject({ method: 'POST', url: '/teapot' })]
    await until(() => app.blocking.stats().routes['GET /quick'].queued === 2, { what: 'two queued /quick' })
    t.equal(app.blocking.stats().routes['POST /teapot'].queued, 1)
    await held.release()
    await Promise.all(waiting)
    await app.inject('/stream')
    await app.inject('/plain')
    // A stream's task ends just after its last chunk was sent.
    await until(() => app.blocking.stats().running === 0, { what: 'the stream task to end' })
    const { routes, completed } = app.blocking.stats()
    t.match(routes['GET /quick'], { queued: 0, running: 0, completed: 2, failed: 0 })
    t.ok(routes['GET /quick'].waitTime.p99 > 0, 'their waits are measured')
    t.ok(routes['GET /quick'].runTime.p50 > 0)
    t.match(routes['POST /teapot'], { queued: 0, running: 0, completed: 0, failed: 1 })
    t.match(routes['GET /stream'], { completed: 1, failed: 0 })
    t.equal(completed, 4, 'app.blocking.run() counts in the total, not in any route')
  })
}

for (const pool of pools) {
  test(`${pool}: utilization counts a stream's work between its waits, before its end, and not its waits`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1 })
    app.get('/burning', { blocking: true }, s.burning)
    await app.listen({ port: 0, host: '127.0.0.1' })
    const { port } = app.server.address()
    t.equal(app.blocking.stats().utilization, 0)
    // 64 KiB chunks, 3 ms of CPU before each: the first window (1 MiB) burns about 50 ms,
    // then the stream waits for a client that does not read.
    const res = await new Promise((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port, path: '/burning?n=200&ms=3' }, (res) => {
        res.pause()
        resolve(res)
      })
      req.on('error', reject)
      req.end()
    })
    await until(() => app.blocking.stats().utilization > 0, { what: 'the open stream to count', timeout: 10_000 })
    t.equal(app.blocking.stats().running, 1, 'the stream is still open')
    // With one thread, utilization rises while the generator runs; once it
    // waits for its client, its busy time stands still and utilization falls.
    let last = -1
    await until(() => {
      const { utilization } = app.blocking.stats()
      const fell = utilization < last
      last = utilization
      return fell
    }, { what: 'utilization to fall while the stream waits', timeout: 10_000 })
    t.equal(app.blocking.stats().running, 1, 'the stream waits for its client, it has not ended')
    let bytes = 0
    res.on('data', (chunk) => { bytes += chunk.length })
    await new Promise((resolve) => res.on('end', resolve).resume())
    t.equal(bytes, 200 * 65_536)
    await until(() => app.blocking.stats().running === 0, { what: 'the stream\'s task to end' })
    const after = app.blocking.stats()
    t.ok(after.utilization > 0 && after.utilization <= 1, `utilization ${after.utilization}`)
    t.equal(after.completed, 1)
  })
}
