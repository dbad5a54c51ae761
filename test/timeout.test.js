import { test } from 'tap'
import { build, pools, until } from './helpers.js'
import * as f from './fixtures/failures.js'

for (const pool of pools) {
  test(`${pool}: a handler past taskTimeout gets 503 and its thread is replaced`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1, taskTimeout: 200 })
    app.get('/spin', { blocking: true }, f.spin)
    app.get('/quick', { blocking: true }, f.quick)
    const before = (await app.inject('/quick')).json().threadId
    const res = await app.inject('/spin')
    t.equal(res.statusCode, 503)
    t.equal(res.json().code, 'FST_BLOCKING_TIMEOUT')
    t.match(res.json().message, /GET \/spin ran for more than 200 ms/)
    // The request right after a timeout runs on the replacement thread: its
    // clock starts when that thread starts it, not while the thread boots.
    const after = await app.inject('/quick')
    t.equal(after.statusCode, 200)
    t.not(after.json().threadId, before, 'the hung thread was replaced')
    t.equal(app.blocking.stats().running, 0)
  })

  test(`${pool}: blocking.timeout overrides taskTimeout per route`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1, taskTimeout: 60_000 })
    app.get('/spin', { blocking: { timeout: 150 } }, f.spin)
    const res = await app.inject('/spin')
    t.equal(res.statusCode, 503)
    t.match(res.json().message, /150 ms/)
  })

  test(`${pool}: request.signal aborts first, so a cooperative handler stops and keeps its thread`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1 })
    app.get('/sync', { blocking: { timeout: 150 } }, f.cooperative)
    app.get('/async', { blocking: { timeout: 150 } }, f.cooperativeAsync)
    app.get('/quick', { blocking: true }, f.quick)
    const thread = (await app.inject('/quick')).json().threadId
    for (const url of ['/sync', '/async']) {
      const res = await app.inject(url)
      t.equal(res.statusCode, 503, url)
      t.equal(res.json().code, 'FST_BLOCKING_TIMEOUT', url)
    }
    t.equal((await app.inject('/quick')).json().threadId, thread, 'the thread was not terminated')
  })

  test(`${pool}: a timeout counts from when a thread starts the task, not while it waits`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1, minThreads: 1 })
    app.get('/cooperative', { blocking: { timeout: 300 } }, f.cooperative)
    app.get('/quick', { blocking: { timeout: 300 } }, f.quick)
    // The second request waits behind the first for ~300 ms, longer than
    // nothing but its own run: it must not time out.
    const [slow, quick] = await Promise.all([app.inject('/cooperative'), app.inject('/quick')])
    t.equal(slow.statusCode, 503)
    t.equal(quick.statusCode, 200)
    t.ok(app.blocking.stats().waitTime.p99 >= 250, 'the quick request did wait')
  })
}

for (const pool of pools) {
  test(`${pool}: what a handler logged before it hung reaches the log once, with its reqId, after its thread is terminated`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1 })
    app.get('/spin', { blocking: { timeout: 100 } }, f.logsThenSpins)
    app.get('/quick', { blocking: true }, f.quick)
    const res = await app.inject('/spin')
    t.equal(res.statusCode, 503)
    t.equal(res.json().code, 'FST_BLOCKING_TIMEOUT')
    const reqId = app.logs.find((l) => l.msg === 'incoming request' && l.req.url === '/spin').reqId
    const mine = () => app.logs.filter((l) => l.reqId === reqId && /before the spin/.test(l.msg))
    await until(() => mine().length === 2, { what: 'the lines of the hung handler', timeout: 10_000, left: () => app.logs.map((l) => l.msg) })
    // The thread is gone (a request runs on its replacement), and no line came twice.
    t.equal((await app.inject('/quick')).statusCode, 200)
    t.same(mine().map((l) => [l.level, l.msg, l.step]), [[30, 'before the spin', undefined], [40, 'still before the spin', 2]])
  })

  test(`${pool}: what a stream logged before it hung reaches the log once, after its thread is terminated`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1 })
    app.get('/spin', { blocking: { timeout: 100 } }, f.streamLogsThenSpins)
    app.get('/quick', { blocking: true }, f.quick)
    const res = await app.inject('/spin')
    // Its chunk waits to be coalesced with more, which never come: the client gets the timeout.
    t.equal(res.statusCode, 503)
    const reqId = app.logs.find((l) => l.msg === 'incoming request' && l.req.url === '/spin').reqId
    const mine = () => app.logs.filter((l) => l.reqId === reqId && /^stream /.test(l.msg)).map((l) => l.msg)
    await until(() => mine().length === 2, { what: 'the lines of the hung stream', timeout: 10_000, left: () => app.logs.map((l) => l.msg) })
    t.equal((await app.inject('/quick')).statusCode, 200)
    t.same(mine(), ['stream before its chunk', 'stream after its chunk'])
  })
}
