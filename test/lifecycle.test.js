import { test } from 'tap'
import { createHook } from 'node:async_hooks'
import { getEventListeners } from 'node:events'
import { build, gate, pools, until } from './helpers.js'
import { waitAtGate, whoAmI } from './fixtures/gate.js'
import * as f from './fixtures/failures.js'

// Worker threads alive in this process. process.getActiveResourcesInfo() does
// not list them: both pools unref their threads.
const workers = new Set()
let started = 0
createHook({
  init (id, type) {
    if (type !== 'WORKER') return
    workers.add(id)
    started++
  },
  destroy (id) { workers.delete(id) }
}).enable()

for (const pool of pools) {
  test(`${pool}: app.close() waits for running work, then ends every thread`, async (t) => {
    const app = await build(t, pool, { maxThreads: 2, minThreads: 2 })
    app.get('/quick', { blocking: true }, f.quick)
    await app.ready()
    t.equal((await app.inject('/quick')).statusCode, 200)
    const g = gate()
    const held = app.blocking.run(waitAtGate, g.sab)
    await g.reached(1)
    let closed = false
    const closing = app.close().then(() => { closed = true })
    await new Promise((resolve) => setTimeout(resolve, 50))
    t.equal(closed, false, 'close waits for the running task')
    g.open()
    t.type(await held, 'number', 'the running task finished')
    await closing
    t.equal(app.blocking.stats().threads, 0, 'no thread is left')
    await t.rejects(app.blocking.run(whoAmI), { code: 'FST_BLOCKING_CLOSED' })
  })

  test(`${pool}: closeTimeout bounds the wait; queued work is dropped and logged`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1, closeTimeout: 100 })
    await app.ready()
    const g = gate()
    const held = app.blocking.run(waitAtGate, g.sab).catch((e) => e)
    await g.reached(1)
    const queued = app.blocking.run(whoAmI).catch((e) => e)
    await app.close()
    t.equal((await queued).code, 'FST_BLOCKING_CLOSED')
    t.match((await held).code, /FST_BLOCKING_(CLOSED|WORKER_CRASHED)/)
    t.ok(app.logs.find((l) => l.level === 50 && /dropped/.test(l.msg) && /whoAmI/.test(l.task)), 'the dropped task was logged by name')
    g.open()
  })

  test(`${pool}: threads beyond minThreads are handed back after idleTimeout, and taken again when work comes`, async (t) => {
    const app = await build(t, pool, { maxThreads: 2, minThreads: 0, idleTimeout: 100 })
    await app.ready()
    const g = gate()
    const held = [app.blocking.run(waitAtGate, g.sab), app.blocking.run(waitAtGate, g.sab)]
    await g.reached(2)
    g.open()
    const [a, b] = await Promise.all(held)
    t.not(a, b, 'two threads ran them')
    // Released by the plugin, then ended by piscina after its own idleTimeout
    // (tinypool keeps its threads: they serve again once work comes).
    if (pool === 'piscina') await until(() => app.blocking.stats().threads === 0, { what: 'idle threads to end' })
    t.type(await app.blocking.run(whoAmI), 'number', 'a thread takes work again')
  })

  test(`${pool}: no listener is left on the response after a request`, async (t) => {
    const app = await build(t, pool)
    let raw
    app.addHook('onResponse', async (request, reply) => { raw = reply.raw })
    app.get('/quick', { blocking: true }, f.quick)
    await app.inject('/quick')
    t.equal(getEventListeners(raw, 'close').filter((l) => l.name === 'onClose').length, 0)
  })
}

test('every pool is closed: no worker thread outlives the apps', async (t) => {
  t.ok(started >= 4, `the tests above started threads (${started})`)
  // A thread's end is reported asynchronously.
  await until(() => workers.size === 0, { what: `${workers.size} worker threads to end` })
  t.equal(workers.size, 0)
})
