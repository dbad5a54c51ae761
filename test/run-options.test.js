// app.blocking.runWith({ signal, timeout, transferList }) and request.blocking.
import { test } from 'tap'
import { request as httpRequest } from 'node:http'
import { build, gate, listen, pools, until } from './helpers.js'
import * as r from './fixtures/run.js'

for (const pool of pools) {
  test(`${pool}: a signal drops a queued call and rejects it with an AbortError`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1 })
    const g = gate()
    const busy = app.blocking.run(r.gated, g.sab)
    await g.reached(1)
    const ac = new AbortController()
    const queued = app.blocking.runWith({ signal: ac.signal }, r.counted)
    ac.abort(new Error('no longer needed'))
    await t.rejects(queued, { name: 'AbortError', code: 'ABORT_ERR', message: /app\.blocking\.runWith\(counted\) was aborted/ })
    await t.rejects(app.blocking.runWith({ signal: ac.signal }, r.counted), { name: 'AbortError' }, 'an aborted signal rejects at once')
    g.open()
    t.equal(await busy, 'through')
    t.equal(await app.blocking.run(r.runs), 0, 'the dropped call never ran')
    t.equal(await app.blocking.runWith({ signal: new AbortController().signal }, r.counted), 1)
  })

  test(`${pool}: timeout replaces taskTimeout for one call; transferList moves buffers`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1 })
    await t.rejects(app.blocking.runWith({ timeout: 50 }, r.stuck), { code: 'FST_BLOCKING_TIMEOUT', message: /runWith\(stuck\) ran for more than 50 ms/ })
    const buffer = new ArrayBuffer(16)
    t.equal(await app.blocking.runWith({ transferList: [buffer] }, r.byteLength, new Uint8Array(buffer)), 16)
    t.equal(buffer.byteLength, 0, 'the caller\'s buffer was moved, not copied')
    const kept = new Uint8Array(8)
    t.equal(await app.blocking.run(r.byteLength, kept), 8)
    t.equal(kept.byteLength, 8, 'without a transfer list, bytes are copied')
    await t.rejects(app.blocking.runWith({ timeout: 'soon' }, r.counted), { code: 'FST_BLOCKING_INVALID_OPTION', message: /timeout/ })
    await t.rejects(app.blocking.runWith({ signal: 'x' }, r.counted), { code: 'FST_BLOCKING_INVALID_OPTION', message: /AbortSignal/ })
    await t.rejects(app.blocking.runWith({ nope: 1 }, r.counted), { code: 'FST_BLOCKING_INVALID_OPTION', message: /options\.nope is not an option/ })
    await t.rejects(app.blocking.runWith(null, r.counted), { code: 'FST_BLOCKING_INVALID_OPTION' })
    await t.rejects(app.blocking.runWith({}, () => 1), { code: 'FST_BLOCKING_HANDLER_NOT_DEFINED' })
  })

  test(`${pool}: request.blocking.run() is dropped when its client goes away, logged with its reqId`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1 })
    let settled
    app.get('/bound', async (request) => {
      const call = request.blocking.run(r.counted)
      settled = call.then(() => 'resolved', (err) => err)
      return await call
    })
    app.get('/fails', async (request) => request.blocking.runWith({ timeout: 0 }, r.fails))
    app.get('/ok', async (request) => ({ n: await request.blocking.run(r.runs) }))
    const g = gate()
    const busy = app.blocking.run(r.gated, g.sab)
    await g.reached(1)
    const port = await listen(app)
    const req = httpRequest({ host: '127.0.0.1', port, path: '/bound' })
    req.on('error', () => {})
    req.end()
    await until(() => app.blocking.stats().queued === 1, { what: 'the request\'s call queued' })
    // The client leaves while its call waits for the thread.
    req.destroy()
    await until(() => settled !== undefined)
    const err = await settled
    t.equal(err.name, 'AbortError')
    t.match(err.message, /request\.blocking\.run\(counted\) was aborted/)
    g.open()
    await busy
    t.equal(await app.blocking.run(r.runs), 0, 'the call never ran')
    const line = app.logs.find((l) => /request\.blocking\.run\(counted\) was dropped/.test(l.msg))
    t.ok(line?.reqId, 'the drop is logged with the request\'s reqId')
    const failed = await app.inject('/fails')
    t.equal(failed.statusCode, 409, 'a failing call rejects with its error')
    t.same((await app.inject('/ok')).json(), { n: 0 })
  })
}
