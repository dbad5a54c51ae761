// Observability and load shedding: Server-Timing, per-route stats, the
// diagnostics channel, the pressure check (with @fastify/under-pressure) and
// the blocking detector.
import { test } from 'tap'
import diagnostics from 'node:diagnostics_channel'
import { performance } from 'node:perf_hooks'
import underPressure from '@fastify/under-pressure'
import { channels } from 'fastify-blocking'
import { build, gate, pools, until } from './helpers.js'
import { waitAtGate } from './fixtures/gate.js'
import * as f from './fixtures/failures.js'
import { failsFirst, mixed, paced } from './fixtures/streams.js'

const TIMING = /^blocking-wait;dur=\d+\.\d\d;desc="queue wait", blocking-run;dur=\d+\.\d\d;desc="run in worker"$/

/** Collects the messages of the task channel while the test runs. */
function listen (t) {
  const messages = []
  const onMessage = (m) => messages.push(m)
  diagnostics.subscribe(channels.task, onMessage)
  t.teardown(() => diagnostics.unsubscribe(channels.task, onMessage))
  return messages
}

/** Holds every thread of a maxThreads: 1 app until the returned gate opens. */
async function holdThread (app) {
  const g = gate()
  const held = app.blocking.run(waitAtGate, g.sab)
  await g.reached(1)
  return { release: async () => { g.open(); await held } }
}

/** Keeps the main thread busy for `ms` without yielding. */
function spinFor (ms) {
  const end = performance.now() + ms
  while (performance.now() < end);
}

for (const pool of pools) {
  test(`${pool}: Server-Timing, when asked for, gives the queue wait and run time`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1, serverTiming: true })
    app.get('/timed', { blocking: true }, f.quick)
    app.get('/untimed', { blocking: { serverTiming: false } }, f.quick)
    app.get('/teapot', { blocking: true }, f.throwsHttp)
    app.get('/stream', { blocking: true }, mixed)
    app.get('/appended', {
      blocking: true,
      onRequest: (request, reply, done) => { reply.header('server-timing', 'auth;dur=1'); done() }
    }, f.quick)
    const timed = await app.inject('/timed')
    t.match(timed.headers['server-timing'], TIMING)
    t.notOk('server-timing' in (await app.inject('/untimed')).headers, 'a route turns it off')
    const teapot = await app.inject('/teapot')
    t.equal(teapot.statusCode, 418)
    t.match(teapot.headers['server-timing'], TIMING, 'errors carry it too')
    const stream = await app.inject('/stream')
    t.equal(stream.statusCode, 201)
    t.match(stream.headers['server-timing'], /^blocking-wait;dur=[\d.]+;desc="queue wait", blocking-run;dur=[\d.]+;desc="until the first chunk"$/)
    t.match((await app.inject('/appended')).headers['server-timing'], /^auth;dur=1, blocking-wait;dur=/, 'added to what hooks set')

    // A queued request's wait shows.
    const held = await holdThread(app)
    const queued = app.inject('/timed')
    await until(() => app.blocking.stats().queued === 1, { what: 'a queued request' })
    await held.release()
    const wait = Number(/blocking-wait;dur=([\d.]+)/.exec((await queued).headers['server-timing'])[1])
    t.ok(wait > 0, `the queued request waited ${wait} ms`)
  })

  test(`${pool}: a stream's run time covers all its chunks; one that fails first still gets Server-Timing`, async (t) => {
    const messages = listen(t)
    const app = await build(t, pool, { serverTiming: true })
    app.get('/paced', { blocking: true }, paced)
    app.get('/fails', { blocking: true }, failsFirst)
    const res = await app.inject('/paced?n=4&gap=25')
    t.equal(res.body, '0;1;2;3;')
    await until(() => messages.some((m) => m.name === 'GET /paced'), { what: 'the stream to end' })
    const { waitTime, runTime } = messages.find((m) => m.name === 'GET /paced')
    t.ok(runTime >= 100, `ran ${runTime} ms: four chunks 25 ms apart`)
    t.ok(waitTime < runTime, `waited ${waitTime} ms`)
    const run = Number(/blocking-run;dur=([\d.]+)/.exec(res.headers['server-timing'])[1])
    t.ok(run >= 25 && run < runTime, `first chunk after ${run} ms`)
    const fails = await app.inject('/fails')
    t.equal(fails.statusCode, 404)
    t.match(fails.headers['server-timing'], TIMING)
  })

  test(`${pool}: Server-Timing is off by default`, async (t) => {
    const app = await build(t, pool)
    app.get('/quick', { blocking: true }, f.quick)
    app.get('/on', { blocking: { serverTiming: true } }, f.quick)
    t.notOk('server-timing' in (await app.inject('/quick')).headers)
    t.match((await app.inject('/on')).headers['server-timing'], TIMING, 'a route turns it on')
  })

  test(`${pool}: stats() counts each route on its own`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1 })
    app.get('/quick', { blocking: true }, f.quick)
    app.post('/teapot', { blocking: true }, f.throwsHttp)
    app.get('/stream', { blocking: true }, mixed)
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

  test(`${pool}: every task's end is published on the diagnostics channel`, async (t) => {
    const messages = listen(t)
    const app = await build(t, pool, { maxThreads: 1, maxQueue: 1 })
    app.get('/quick', { blocking: true }, f.quick)
    app.get('/teapot', { blocking: true }, f.throwsHttp)
    app.get('/exit', { blocking: true }, f.exits)
    app.get('/spin', { blocking: { timeout: 50 } }, f.spin)
    await app.ready()
    await app.inject('/quick')
    await app.inject('/teapot')
    await app.inject('/exit')
    t.equal((await app.inject('/spin')).statusCode, 503)
    const held = await holdThread(app)
    const queued = app.inject('/quick')
    await until(() => app.blocking.stats().queued === 1, { what: 'a queued request' })
    t.equal((await app.inject('/quick')).statusCode, 503, 'the queue is full')
    await held.release()
    await queued
    const mine = messages.filter((m) => m.name !== 'app.blocking.run(flushCoverage)')
    const byOutcome = (outcome) => mine.filter((m) => m.outcome === outcome)
    t.match(byOutcome('completed').find((m) => m.name === 'GET /quick'), { lane: 'request', route: 'GET /quick' })
    const teapot = byOutcome('failed')[0]
    t.match(teapot, { name: 'GET /teapot', route: 'GET /teapot', error: { name: 'TeapotError', code: 'E_TEAPOT', statusCode: 418 } })
    t.ok(teapot.runTime > 0 && teapot.waitTime >= 0)
    t.match(byOutcome('crashed')[0], { name: 'GET /exit', error: { code: 'FST_BLOCKING_WORKER_CRASHED' } })
    const timeout = byOutcome('timeout')[0]
    t.match(timeout, { name: 'GET /spin', error: { code: 'FST_BLOCKING_TIMEOUT', statusCode: 503 } })
    t.ok(timeout.runTime >= 50, `timed out after ${timeout.runTime} ms`)
    t.match(byOutcome('rejected')[0], { name: 'GET /quick', runTime: 0, error: { code: 'FST_BLOCKING_QUEUE_FULL' } })
    t.match(mine.find((m) => m.name === 'app.blocking.run(waitAtGate)'), { lane: 'request', outcome: 'completed' })
    t.notOk('route' in mine.find((m) => m.name === 'app.blocking.run(waitAtGate)'))
  })

  test(`${pool}: background tasks are published too, refused ones included`, async (t) => {
    const messages = listen(t)
    const app = await build(t, pool, { maxThreads: 1, backgroundQueue: 0 })
    app.post('/later', (request, reply) => {
      try {
        reply.background(f.ranCount)
      } catch (err) {
        return { refused: err.code }
      }
      return { refused: null }
    })
    t.same((await app.inject({ method: 'POST', url: '/later' })).json(), { refused: 'FST_BLOCKING_QUEUE_FULL' })
    t.match(messages.find((m) => m.lane === 'background'), { name: 'ranCount', outcome: 'rejected', error: { code: 'FST_BLOCKING_QUEUE_FULL' } })
  })

  test(`${pool}: readMultipart() refused for load gets Retry-After, and is named by its route's pattern`, async (t) => {
    const messages = listen(t)
    const app = await build(t, pool, { maxThreads: 1, maxQueue: 0 })
    app.post('/read/:id', async (request) => (await request.readMultipart()).fields)
    await app.ready()
    const held = await holdThread(app)
    const form = new FormData()
    form.append('a', '1')
    const request = new Request('http://127.0.0.1/', { method: 'POST', body: form })
    const res = await app.inject({
      method: 'POST',
      url: '/read/42?x=1',
      headers: { 'content-type': request.headers.get('content-type') },
      payload: Buffer.from(await request.arrayBuffer())
    })
    t.equal(res.statusCode, 503)
    t.equal(res.json().code, 'FST_BLOCKING_QUEUE_FULL')
    t.match(res.headers['retry-after'], /^\d+$/)
    t.match(messages.find((m) => m.outcome === 'rejected'), { name: 'POST /read/:id: readMultipart()' })
    await held.release()
  })

  test(`${pool}: a queued request whose client left is published as skipped`, async (t) => {
    const messages = listen(t)
    const app = await build(t, pool, { maxThreads: 1 })
    app.get('/quick', { blocking: true }, f.quick)
    await app.listen({ port: 0, host: '127.0.0.1' })
    const held = await holdThread(app)
    const { request } = await import('node:http')
    const req = request({ host: '127.0.0.1', port: app.server.address().port, path: '/quick' })
    req.on('error', () => {})
    req.end()
    await until(() => app.blocking.stats().queued === 1, { what: 'a queued request' })
    req.destroy()
    await until(() => messages.some((m) => m.outcome === 'skipped'), { what: 'the skipped message' })
    t.match(messages.find((m) => m.outcome === 'skipped'), { name: 'GET /quick', runTime: 0 })
    await held.release()
  })

  test(`${pool}: past pressure.maxQueued, requests that would wait get 503 before the queue fills`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1, maxQueue: 100, pressure: { maxQueued: 2 } })
    app.get('/quick', { blocking: true }, f.quick)
    app.get('/stream', { blocking: true }, mixed)
    await app.ready()
    t.equal(app.blocking.isUnderPressure(), false)
    t.equal((await app.inject('/quick')).statusCode, 200, 'a free thread: no pressure')
    const held = await holdThread(app)
    const queued = [app.inject('/quick'), app.inject('/quick')]
    await until(() => app.blocking.stats().queued === 2, { what: 'two queued requests' })
    t.equal(app.blocking.isUnderPressure(), true)
    for (const url of ['/quick', '/stream']) {
      const shed = await app.inject(url)
      t.equal(shed.statusCode, 503, url)
      t.equal(shed.json().code, 'FST_BLOCKING_UNDER_PRESSURE')
      t.match(shed.json().message, /2 requests are waiting \(pressure\.maxQueued is 2\)/)
      t.match(shed.headers['retry-after'], /^\d+$/)
    }
    await t.rejects(app.blocking.run(f.ranCount), { code: 'FST_BLOCKING_UNDER_PRESSURE' }, 'app.blocking.run too')
    await held.release()
    for (const res of await Promise.all(queued)) t.equal(res.statusCode, 200, 'queued requests still run')
    t.equal(app.blocking.isUnderPressure(), false)
    t.equal((await app.inject('/quick')).statusCode, 200)
  })

  test(`${pool}: past pressure.maxQueueWait, requests that would wait get 503`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1, pressure: { maxQueueWait: 30 } })
    app.get('/quick', { blocking: true }, f.quick)
    await app.ready()
    const held = await holdThread(app)
    const queued = app.inject('/quick')
    // The oldest queued request's wait grows until it crosses the threshold.
    await until(() => app.blocking.isUnderPressure(), { what: 'the queue wait to pass 30 ms' })
    const shed = await app.inject('/quick')
    t.equal(shed.statusCode, 503)
    t.match(shed.json().message, /requests wait [\d.]+ ms for a thread \(pressure\.maxQueueWait is 30 ms\)/)
    await held.release()
    t.equal((await queued).statusCode, 200)
    // The last second's p99 remembers the long wait, but a free thread serves at once.
    t.equal((await app.inject('/quick')).statusCode, 200)
  })

  test(`${pool}: isUnderPressure() is true with the queue full, thresholds or not`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1, maxQueue: 1 })
    app.get('/quick', { blocking: true }, f.quick)
    await app.ready()
    const held = await holdThread(app)
    t.equal(app.blocking.isUnderPressure(), false)
    const queued = app.inject('/quick')
    await until(() => app.blocking.isUnderPressure(), { what: 'the full queue' })
    await held.release()
    await queued
    t.equal(app.blocking.isUnderPressure(), false)
  })

  test(`${pool}: with maxQueue 0, isUnderPressure() is true only while every thread is busy`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1, maxQueue: 0 })
    await app.ready()
    t.equal(app.blocking.isUnderPressure(), false)
    const held = await holdThread(app)
    t.equal(app.blocking.isUnderPressure(), true)
    await held.release()
    t.equal(app.blocking.isUnderPressure(), false)
  })

  test(`${pool}: @fastify/under-pressure sheds every route through healthCheck`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1, maxQueue: 1 })
    await app.register(underPressure, {
      healthCheck: async () => !app.blocking.isUnderPressure(),
      healthCheckInterval: 5,
      exposeStatusRoute: '/status'
    })
    app.get('/quick', { blocking: true }, f.quick)
    app.get('/plain', async () => 'main thread')
    await app.ready()
    t.equal((await app.inject('/status')).statusCode, 200)
    const held = await holdThread(app)
    const queued = app.inject('/quick')
    await until(() => app.isUnderPressure(), { what: 'under-pressure to see the full queue' })
    t.equal((await app.inject('/status')).statusCode, 503)
    t.equal((await app.inject('/plain')).statusCode, 503, 'under-pressure answers for every route')
    await held.release()
    await queued
    await until(() => !app.isUnderPressure(), { what: 'under-pressure to see the queue drain' })
    t.equal((await app.inject('/plain')).statusCode, 200)
  })
}

test('detectBlocking logs a handler or hook that holds the event loop, once per route', async (t) => {
  const app = await build(t, 'piscina', { detectBlocking: { thresholdMs: 20 } })
  app.get('/slow', async () => { spinFor(30); return 'done' })
  app.get('/slow-callback', (request, reply) => { spinFor(30); reply.send('done') })
  app.get('/fast', async () => 'done')
  app.get('/slow-hook', { preHandler: [(request, reply, done) => done(), async () => spinFor(30)] }, async () => 'done')
  app.get('/blocking', { blocking: true, onRequest: (request, reply, done) => { spinFor(30); done() } }, f.quick)
  for (let i = 0; i < 2; i++) {
    for (const url of ['/slow', '/slow-callback', '/fast', '/slow-hook', '/blocking']) t.equal((await app.inject(url)).statusCode, 200, url)
  }
  const found = app.logs.filter((l) => l.level === 40 && l.route !== undefined)
  t.same(found.map((l) => `${l.route} ${l.stage}`).sort(), [
    'GET /blocking onRequest hook',
    'GET /slow handler',
    'GET /slow-callback handler',
    'GET /slow-hook preHandler hook #2'
  ], 'each slow stretch once, nothing for fast ones or for a blocking handler')
  const slow = found.find((l) => l.route === 'GET /slow')
  t.ok(slow.ms >= 30)
  t.equal(slow.thresholdMs, 20)
  t.match(slow.msg, /GET \/slow held the event loop for [\d.]+ ms in its handler; .*blocking: true/)
})

test('detectBlocking is off by default; true means 100 ms', async (t) => {
  const off = await build(t, 'piscina')
  off.get('/slow', async () => { spinFor(120); return 'done' })
  await off.inject('/slow')
  t.notOk(off.logs.some((l) => l.stage !== undefined))
  const on = await build(t, 'piscina', { detectBlocking: true })
  on.get('/slow', async () => { spinFor(120); return 'done' })
  on.get('/medium', async () => { spinFor(30); return 'done' })
  await on.inject('/slow')
  await on.inject('/medium')
  t.same(on.logs.filter((l) => l.stage !== undefined).map((l) => [l.route, l.thresholdMs]), [['GET /slow', 100]])
})

test('the new options are checked at register', async (t) => {
  const Fastify = (await import('fastify')).default
  const blocking = (await import('fastify-blocking')).default
  for (const [options, message] of [
    [{ serverTiming: 'yes' }, /options\.serverTiming must be a boolean/],
    [{ pressure: { maxQueueWaitMs: 5 } }, /options\.pressure\.maxQueueWaitMs is not an option \(maxQueueWait, maxQueued\)/],
    [{ pressure: { maxQueued: -1 } }, /options\.pressure\.maxQueued must be a non-negative integer/],
    [{ detectBlocking: { thresholdMs: 0 } }, /options\.detectBlocking\.thresholdMs must be a positive integer/],
    [{ detectBlocking: { threshold: 5 } }, /options\.detectBlocking\.threshold is not an option/]
  ]) {
    const app = Fastify()
    await t.rejects(app.register(blocking, options).ready(), { code: 'FST_BLOCKING_INVALID_OPTION', message }, JSON.stringify(options))
  }
  const app = Fastify()
  await app.register(blocking, { maxThreads: 1 })
  t.teardown(() => app.close())
  t.throws(() => app.get('/x', { blocking: { serverTiming: 1 } }, f.quick), { message: /GET \/x: blocking\.serverTiming must be a boolean/ })
})
