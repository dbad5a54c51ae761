// Load shedding: 503 with Retry-After when the queue is full or past the
// pressure thresholds; isUnderPressure() for @fastify/under-pressure.
import { test } from 'tap'
import underPressure from '@fastify/under-pressure'
import { build, holdThread, pools, taskMessages, until } from './helpers.js'
import * as f from './fixtures/failures.js'
import { mixed } from './fixtures/streams.js'

for (const pool of pools) {
  test(`${pool}: readMultipart() refused for load gets Retry-After, and is named by its route's pattern`, async (t) => {
    const messages = taskMessages(t)
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

test('the pressure options are checked at register', async (t) => {
  const Fastify = (await import('fastify')).default
  const blocking = (await import('fastify-blocking')).default
  for (const [options, message] of [
    [{ pressure: { maxQueueWaitMs: 5 } }, /options\.pressure\.maxQueueWaitMs is not an option \(maxQueueWait, maxQueued\)/],
    [{ pressure: { maxQueued: -1 } }, /options\.pressure\.maxQueued must be a non-negative integer/]
  ]) {
    const app = Fastify()
    await t.rejects(app.register(blocking, options).ready(), { code: 'FST_BLOCKING_INVALID_OPTION', message }, JSON.stringify(options))
  }
})
