// Server-Timing: the queue wait and run time of a blocking route, when asked for.
import { test } from 'tap'
import { build, holdThread, pools, taskMessages, until } from './helpers.js'
import * as f from './fixtures/failures.js'
import { failsFirst, mixed, paced } from './fixtures/streams.js'

const TIMING = /^blocking-wait;dur=\d+\.\d\d;desc="queue wait", blocking-run;dur=\d+\.\d\d;desc="run in worker"$/

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
    const messages = taskMessages(t)
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
}

test('serverTiming is checked at register and per route', async (t) => {
  const Fastify = (await import('fastify')).default
  const blocking = (await import('fastify-blocking')).default
  await t.rejects(Fastify().register(blocking, { serverTiming: 'yes' }).ready(), { code: 'FST_BLOCKING_INVALID_OPTION', message: /options\.serverTiming must be a boolean/ })
  const app = Fastify()
  await app.register(blocking, { maxThreads: 1 })
  t.teardown(() => app.close())
  t.throws(() => app.get('/x', { blocking: { serverTiming: 1 } }, f.quick), { message: /GET \/x: blocking\.serverTiming must be a boolean/ })
})
