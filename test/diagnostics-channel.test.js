// The diagnostics channel: every task's end is published, whatever its outcome.
import { test } from 'tap'
import { build, holdThread, pools, taskMessages, until } from './helpers.js'
import * as f from './fixtures/failures.js'

for (const pool of pools) {
  test(`${pool}: every task's end is published on the diagnostics channel`, async (t) => {
    const messages = taskMessages(t)
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
    const messages = taskMessages(t)
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

  test(`${pool}: a queued request whose client left is published as skipped`, async (t) => {
    const messages = taskMessages(t)
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
}
