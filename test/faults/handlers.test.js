// Faults inside handlers: they throw, reject, exit their thread, loop
// forever, run out of heap, return what cannot cross threads. After each, the
// app answers, its stats settle, and once closed it leaves nothing behind.
import tap, { test } from 'tap'
import { pools } from '../helpers.js'
import * as f from '../fixtures/faults.js'
import { checkAlive, checkClosed, sandboxTmp, send, startApp } from './leaks.js'

const tmp = sandboxTmp(tap)

const json = (res) => JSON.parse(res.body)

for (const pool of pools) {
  test(`${pool}: handlers that throw or reject answer with their error, on the same thread`, async (t) => {
    const { app, since, port } = await startApp(t, pool, { maxThreads: 1 }, (app) => {
      app.get('/throws', { blocking: true }, f.throwsHttp)
      app.get('/rejects', { blocking: true }, f.rejects)
      app.get('/type-error', { blocking: true }, f.throwsPlain)
      app.get('/undefined', { blocking: true }, f.throwsNothing)
    })
    const before = json(await send(port, { path: '/quick' })).threadId
    const cases = [['/throws', 418, 'I am a teapot'], ['/rejects', 409, 'async no'], ['/type-error', 500, 'bad things'], ['/undefined', 500, 'undefined']]
    for (const [path, status, message] of cases) {
      const res = await send(port, { path })
      t.equal(res.status, status, path)
      t.equal(json(res).message, message, path)
    }
    t.equal(json(await send(port, { path: '/quick' })).threadId, before, 'no thread was lost')
    await checkAlive(t, app, { maxThreads: 1, tmp })
    await checkClosed(t, app, since, { tmp })
  })

  test(`${pool}: a handler that exits its thread gives 500; the thread is replaced`, async (t) => {
    const { app, since, port } = await startApp(t, pool, { maxThreads: 1 }, (app) => {
      app.get('/exits', { blocking: true }, f.exits)
    })
    const before = json(await send(port, { path: '/quick' })).threadId
    for (let i = 0; i < 2; i++) {
      const res = await send(port, { path: '/exits' })
      t.equal(res.status, 500)
      t.equal(json(res).code, 'FST_BLOCKING_WORKER_CRASHED')
    }
    t.not(json(await send(port, { path: '/quick' })).threadId, before, 'a new thread answers')
    await checkAlive(t, app, { maxThreads: 1, tmp })
    await checkClosed(t, app, since, { tmp })
  })

  test(`${pool}: a handler that loops forever times out (503), its thread is terminated, the request queued behind it runs`, async (t) => {
    const { app, since, port } = await startApp(t, pool, { maxThreads: 1, taskTimeout: 150 }, (app) => {
      app.get('/spin', { blocking: true }, f.spin)
      app.get('/spin-own-timeout', { blocking: { timeout: 100 } }, f.spin)
    })
    const before = json(await send(port, { path: '/quick' })).threadId
    const spinning = send(port, { path: '/spin' })
    const behind = send(port, { path: '/quick' })
    const res = await spinning
    t.equal(res.status, 503)
    t.equal(json(res).code, 'FST_BLOCKING_TIMEOUT')
    const after = await behind
    t.equal(after.status, 200, 'the request queued behind it ran')
    t.not(json(after).threadId, before, 'on a new thread')
    const own = await send(port, { path: '/spin-own-timeout' })
    t.equal(own.status, 503, 'a route timeout works the same way')
    t.match(json(own).message, /100 ?ms/)
    await checkAlive(t, app, { maxThreads: 1, tmp })
    await checkClosed(t, app, since, { tmp })
  })

  test(`${pool}: a handler that exhausts its resourceLimits heap gives 500; the thread is replaced`, async (t) => {
    const { app, since, port } = await startApp(t, pool, { maxThreads: 1, resourceLimits: { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 8 } }, (app) => {
      app.get('/oom', { blocking: true }, f.oom)
    })
    const res = await send(port, { path: '/oom' })
    t.equal(res.status, 500)
    t.equal(json(res).code, 'FST_BLOCKING_WORKER_CRASHED')
    await checkAlive(t, app, { maxThreads: 1, tmp })
    await checkClosed(t, app, since, { tmp })
  })

  test(`${pool}: return values that cannot cross threads give 500, with or without losing the thread`, async (t) => {
    const { app, since, port } = await startApp(t, pool, { maxThreads: 1 }, (app) => {
      app.get('/function', { blocking: true }, f.returnsFunction)
      app.get('/proxy', { blocking: true }, f.returnsProxy)
    })
    const before = json(await send(port, { path: '/quick' })).threadId
    const fn = await send(port, { path: '/function' })
    t.equal(fn.status, 500)
    t.equal(json(fn).code, 'FST_BLOCKING_NOT_CLONEABLE')
    t.match(json(fn).message, /at \.nested\[0\]\.callback/)
    t.equal(json(await send(port, { path: '/quick' })).threadId, before, 'the clone check keeps the thread')
    // The check does not know Proxies; the pool fails to send one, which ends the thread.
    const proxy = await send(port, { path: '/proxy' })
    t.equal(proxy.status, 500)
    t.match(json(proxy).code, /FST_BLOCKING_(NOT_CLONEABLE|WORKER_CRASHED)/)
    await checkAlive(t, app, { maxThreads: 1, tmp })
    await checkClosed(t, app, since, { tmp })
  })

  test(`${pool}: values that throw when read, and header values that cannot cross threads, fail the request, not the thread`, async (t) => {
    // Regression: these made the worker reject the task, reported as
    // FST_BLOCKING_WORKER_CRASHED ("the worker thread ... died"); a function as
    // a header value did end the thread.
    const { app, since, port } = await startApp(t, pool, { maxThreads: 1 }, (app) => {
      app.get('/getter', { blocking: true }, f.returnsThrowingGetter)
      app.get('/then', { blocking: true }, f.returnsThrowingThen)
      app.get('/error-getter', { blocking: true }, f.throwsErrorWithThrowingGetter)
      app.get('/header', { blocking: true }, f.functionHeader)
    })
    const before = json(await send(port, { path: '/quick' })).threadId
    const cases = [
      ['/getter', 500, 'FST_BLOCKING_NOT_CLONEABLE', /return value could not be sent back.*reading it threw: getter says no/],
      ['/then', 500, undefined, /^then says no$/],
      ['/error-getter', 422, undefined, /^thrown$/],
      ['/header', 500, 'FST_BLOCKING_NOT_CLONEABLE', /reply\.header\('x-callback'\)/]
    ]
    for (const [path, status, code, message] of cases) {
      const res = await send(port, { path })
      t.equal(res.status, status, path)
      t.equal(json(res).code, code, path)
      t.match(json(res).message, message, path)
    }
    t.equal(json(await send(port, { path: '/quick' })).threadId, before, 'no thread was lost')
    await checkAlive(t, app, { maxThreads: 1, tmp })
    await checkClosed(t, app, since, { tmp })
  })
}
