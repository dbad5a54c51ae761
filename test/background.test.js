import { test } from 'tap'
import Fastify from 'fastify'
import blocking from 'fastify-blocking'
import { build, gate, pools, until } from './helpers.js'
import { waitAtGate } from './fixtures/gate.js'
import * as b from './fixtures/background.js'

/** Resolves when the shared counter at index 0 reaches n (woken by the task's Atomics.notify). */
async function counted (i32, n) {
  let seen
  while ((seen = Atomics.load(i32, 0)) < n) {
    const r = Atomics.waitAsync(i32, 0, seen, 10_000)
    if (r.async && (await r.value) === 'timed-out') throw new Error(`${seen} of ${n} tasks done`)
  }
}

for (const pool of pools) {
  test(`${pool}: reply.background in a context made before the plugin was registered`, async (t) => {
    const app = Fastify()
    t.teardown(() => app.close())
    const sab = new SharedArrayBuffer(8)
    const i32 = new Int32Array(sab)
    // Fastify copies value decorations into a context when it makes it: this
    // one has the plugin's methods but not its private reply state.
    app.register(async (early) => {
      early.get('/bg', async (request, reply) => {
        reply.background(b.mark, sab, 7)
        reply.background(b.mark, sab, 8)
        return 'sent'
      })
    })
    await app.register(blocking, { pool, maxThreads: 1 })
    const res = await app.inject('/bg')
    t.equal(res.statusCode, 200)
    t.equal(res.body, 'sent')
    await counted(i32, 2)
    await until(() => app.blocking.stats().background.completed === 2, { what: 'both tasks' })
  })

  test(`${pool}: reply.background on the main thread runs the task in the pool after the response`, async (t) => {
    const app = await build(t, pool)
    const sab = new SharedArrayBuffer(8)
    const i32 = new Int32Array(sab)
    let startedBeforeResponse
    app.addHook('onResponse', async () => { startedBeforeResponse = Atomics.load(i32, 0) })
    app.get('/bg', async (request, reply) => {
      t.equal(reply.background(b.mark, sab, 5), reply, 'returns the reply')
      return 'sent'
    })
    const res = await app.inject('/bg')
    t.equal(res.body, 'sent')
    await counted(i32, 1)
    t.equal(startedBeforeResponse, 0, 'the task had not run when the response was sent')
    t.equal(Atomics.load(i32, 1), 5, 'with its arguments')
    await until(() => app.blocking.stats().background.completed === 1, { what: 'stats' })
    t.equal(app.blocking.stats().completed, 0, 'background tasks are counted apart from requests')
  })

  test(`${pool}: reply.background in a worker handler; Buffers arrive as Buffers and the handler keeps its own`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1 })
    app.get('/bg', { blocking: true }, b.handlerWithBackground)
    for (let i = 0; i < 2; i++) {
      t.same((await app.inject('/bg')).json(), { keptLength: 5000 })
      await until(() => app.blocking.stats().background.completed === i + 1, { what: 'the task' })
    }
    t.same(await app.blocking.run(b.readLastArgs), {
      isBuffer: true, length: 5000, first: 'k'.charCodeAt(0), bytes: [7], obj: { n: 3 }, isMainThread: false
    })
  })

  test(`${pool}: a main-thread Buffer argument is moved when it owns its memory, cloned when pooled`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1 })
    let own, pooled
    app.get('/bg', async (request, reply) => {
      own = Buffer.alloc(100_000, 1)
      pooled = Buffer.from('small')
      reply.background(b.inspectArgs, own, pooled, { n: 1 })
      return 'ok'
    })
    await app.inject('/bg')
    await until(() => app.blocking.stats().background.completed === 1, { what: 'the task' })
    const last = await app.blocking.run(b.readLastArgs)
    t.equal(last.length, 100_000)
    t.same(last.bytes, [...Buffer.from('small')])
    t.equal(own.length, 0, 'the owned Buffer was moved, not copied')
    t.equal(pooled.toString(), 'small', 'the pooled Buffer was cloned')
  })

  test(`${pool}: bad calls are errors at the call, never silent drops`, async (t) => {
    const app = await build(t, pool)
    app.get('/fn-arg', async (request, reply) => { reply.background(b.mark, { callback () {} }); return 'no' })
    app.get('/untagged', async (request, reply) => { reply.background(() => {}); return 'no' })
    app.get('/worker-fn-arg', { blocking: true }, b.handlerBadBackground)
    app.get('/worker-untagged', { blocking: true }, b.handlerUntaggedBackground)
    const fnArg = await app.inject('/fn-arg')
    t.equal(fnArg.json().code, 'FST_BLOCKING_NOT_CLONEABLE')
    t.match(fnArg.json().message, /reply\.background\(mark\): an argument cannot be sent.*callback/)
    t.equal((await app.inject('/untagged')).json().code, 'FST_BLOCKING_HANDLER_NOT_DEFINED')
    const workerFn = await app.inject('/worker-fn-arg')
    t.equal(workerFn.json().code, 'FST_BLOCKING_NOT_CLONEABLE')
    t.match(workerFn.json().message, /reply\.background\(inspectArgs\)/)
    t.match((await app.inject('/worker-untagged')).json().message, /not made with defineTask/)
  })

  test(`${pool}: requests never wait behind background tasks`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1 })
    app.get('/count', { blocking: true }, b.startedCount)
    const g = gate()
    const sab = new SharedArrayBuffer(8)
    app.get('/queue', async (request, reply) => {
      for (let i = 0; i < 20; i++) reply.background(b.mark, sab)
      return 'queued'
    })
    await app.ready()
    const before = (await app.inject('/count')).json().started
    const held = app.blocking.run(waitAtGate, g.sab)
    await g.reached(1)
    await app.inject('/queue')
    await until(() => app.blocking.stats().background.queued === 20, { what: '20 queued tasks' })
    const request = app.inject('/count')
    await until(() => app.blocking.stats().queued === 1, { what: 'the request to queue' })
    g.open()
    await held
    t.equal((await request).json().started, before, 'the request ran before every queued background task')
    await counted(new Int32Array(sab), 20)
  })

  test(`${pool}: past backgroundQueue, reply.background throws FST_BLOCKING_QUEUE_FULL`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1, backgroundQueue: 2 })
    const sab = new SharedArrayBuffer(8)
    app.get('/three', async (request, reply) => {
      reply.background(b.mark, sab).background(b.mark, sab)
      reply.background(b.mark, sab)
      return 'unreachable'
    })
    const res = await app.inject('/three')
    t.equal(res.statusCode, 503)
    t.equal(res.json().code, 'FST_BLOCKING_QUEUE_FULL')
    await counted(new Int32Array(sab), 2)
  })

  test(`${pool}: failing tasks are logged with reqId, name and error; the app keeps serving`, async (t) => {
    // (The timeout leaves room for a thread's exit, which is slow under coverage.)
    const app = await build(t, pool, { maxThreads: 1, taskTimeout: 1500 })
    app.get('/fail/:which', async (request, reply) => {
      reply.background(b[request.params.which])
      return 'ok'
    })
    app.get('/count', { blocking: true }, b.startedCount)
    app.get('/worker', { blocking: true }, b.handlerThrowsAfterBackground)
    for (const which of ['failing', 'exiting', 'spinning']) {
      const res = await app.inject(`/fail/${which}`)
      const reqId = app.logs.find((l) => l.msg === 'incoming request' && l.req.url === `/fail/${which}`).reqId
      await until(() => app.logs.some((l) => l.reqId === reqId && l.level === 50 && l.task === which), { what: `${which} logged` })
      const line = app.logs.find((l) => l.reqId === reqId && l.level === 50 && l.task === which)
      t.match(line.msg, new RegExp(`background task ${which} failed`))
      t.match(line.err.message, { failing: /task broke/, exiting: /died/, spinning: /ran for more than 1500 ms/ }[which])
      t.equal(res.body, 'ok')
    }
    t.equal((await app.inject('/count')).statusCode, 200)
    t.equal(app.blocking.stats().background.failed, 3)
    // A handler that throws after asking for a task: the task does not run (as in FastAPI).
    t.equal((await app.inject('/worker')).statusCode, 500)
    t.equal(app.blocking.stats().background.failed, 3)
  })

  test(`${pool}: app.close() waits for queued tasks up to closeTimeout; every task ran or was logged`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1, minThreads: 1, closeTimeout: 300 })
    const sab = new SharedArrayBuffer(8)
    app.get('/many', async (request, reply) => {
      for (let i = 0; i < 30; i++) reply.background(b.sleepy, sab, 25)
      return 'ok'
    })
    await app.ready()
    await app.blocking.run(b.readLastArgs) // the thread is up: the clock measures tasks, not a boot
    await app.inject('/many')
    await app.close()
    const ran = Atomics.load(new Int32Array(sab), 0)
    const dropped = app.logs.filter((l) => l.level === 50 && l.task === 'sleepy').length
    t.ok(ran > 0, `some ran (${ran})`)
    t.ok(ran < 30, 'not all had time to run')
    t.equal(ran + dropped, 30, `${ran} ran and ${dropped} were logged by name`)
  })
}
