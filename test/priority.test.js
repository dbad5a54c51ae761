import { test } from 'tap'
import { readFileSync } from 'node:fs'
import { build, pools } from './helpers.js'
import { niceOfThisThread, reportNice } from './fixtures/priority.js'
import { snapshot } from './fixtures/routes.js'
import { gate as makeGate } from './helpers.js'
import { waitAtGate } from './fixtures/gate.js'

/** Resolves with the nice value a reportNice task wrote to `sab`. */
async function reported (sab) {
  const i32 = new Int32Array(sab)
  while (Atomics.load(i32, 0) === 0) {
    const r = Atomics.waitAsync(i32, 0, 0, 10_000)
    if (r.async && (await r.value) === 'timed-out') throw new Error('the background task did not run')
  }
  return Atomics.load(i32, 1)
}

const linux = process.platform === 'linux'
const mainNice = () => {
  const stat = readFileSync('/proc/thread-self/stat', 'utf8')
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16])
}

for (const pool of pools) {
  test(`${pool}: priority lowers every pool thread's nice value, not the main thread's`, { skip: !linux && 'reads /proc (Linux)' }, async (t) => {
    const before = mainNice()
    const app = await build(t, pool, { priority: 10, maxThreads: 2 })
    app.get('/x', { blocking: true }, snapshot)
    await app.ready()
    const nices = await Promise.all([app.blocking.run(niceOfThisThread), app.blocking.run(niceOfThisThread)])
    for (const nice of nices) t.equal(nice, Math.min(19, before + 10))
    t.equal(mainNice(), before, 'the main thread keeps its priority')
    t.notOk(app.logs.some((l) => /normal priority/.test(l.msg)), 'nothing refused')
  })

  test(`${pool}: by default, threads run 10 below the main thread's priority; priority: 0 keeps theirs`, { skip: !linux && 'reads /proc (Linux)' }, async (t) => {
    const app = await build(t, pool)
    t.equal(await app.blocking.run(niceOfThisThread), Math.min(19, mainNice() + 10))
    const normal = await build(t, pool, { priority: 0 })
    t.equal(await normal.blocking.run(niceOfThisThread), mainNice())
  })
}

for (const pool of pools) {
  test(`${pool}: priority.background runs background tasks on threads of their own, at their priority`, { skip: !linux && 'reads /proc (Linux)' }, async (t) => {
    const before = mainNice()
    const app = await build(t, pool, { priority: { requests: 2, background: 15 }, maxThreads: 1 })
    const sab = new SharedArrayBuffer(8)
    app.post('/bg', (request, reply) => {
      reply.background(reportNice, sab)
      return 'queued'
    })
    await app.ready()
    t.equal(await app.blocking.run(niceOfThisThread), Math.min(19, before + 2), 'requests run at theirs')
    // The only request thread is held: a background task still runs, on its own thread.
    const g = makeGate()
    const held = app.blocking.run(waitAtGate, g.sab)
    await g.reached(1)
    t.equal((await app.inject({ method: 'POST', url: '/bg' })).statusCode, 200)
    t.equal(await reported(sab), Math.min(19, before + 15), 'background tasks run at theirs, beside the busy request thread')
    g.open()
    await held
    t.ok(app.blocking.stats().threads >= 2, 'the background thread is counted')
    t.equal(mainNice(), before)
  })

  test(`${pool}: priority.background equal to requests shares the request threads`, { skip: !linux && 'reads /proc (Linux)' }, async (t) => {
    const app = await build(t, pool, { priority: { requests: 3 }, maxThreads: 1 })
    const sab = new SharedArrayBuffer(8)
    app.post('/bg', (request, reply) => {
      reply.background(reportNice, sab)
      return 'queued'
    })
    await app.ready()
    await app.inject({ method: 'POST', url: '/bg' })
    t.equal(await reported(sab), Math.min(19, mainNice() + 3))
    t.equal(app.blocking.stats().threads, 1, 'no threads of their own')
  })
}

test('priority.background may not be below priority.requests', async (t) => {
  const { default: Fastify } = await import('fastify')
  const { default: blocking } = await import('fastify-blocking')
  for (const [priority, message] of [
    [{ requests: 10, background: 5 }, /options\.priority\.background \(5\) must not be below options\.priority\.requests \(10\)/],
    [{ request: 1 }, /options\.priority\.request is not an option \(requests, background\)/],
    [{ background: 25 }, /options\.priority\.background must be an integer from 0 \(normal\) to 19/]
  ]) {
    const app = Fastify()
    await t.rejects(app.register(blocking, { priority }).ready(), { code: 'FST_BLOCKING_INVALID_OPTION', message })
    await app.close()
  }
})

test('priority must be an integer from 0 to 19', async (t) => {
  const { default: Fastify } = await import('fastify')
  const { default: blocking } = await import('fastify-blocking')
  for (const priority of [-1, 20, 1.5, 'low']) {
    const app = Fastify()
    await t.rejects(app.register(blocking, { priority }).ready(), { code: 'FST_BLOCKING_INVALID_OPTION', message: /options\.priority must be an integer from 0 \(normal\) to 19/ })
    await app.close()
  }
})
