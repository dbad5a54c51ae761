import { test } from 'tap'
import { build, get, listen, pools, readAll, until } from './helpers.js'
import * as s from './fixtures/streams.js'

/** What s.bigStrings sends. */
function bigStringsBody () {
  let body = ''
  for (let i = 0; i < 6; i++) body += `<${i}>` + String.fromCharCode(97 + i).repeat(100 * 1024)
  return body + 'end'
}

for (const pool of pools) {
  test(`${pool}: strings that overflow the worker's coalescing buffer arrive whole, in order, once`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1 })
    app.get('/strings', { blocking: true }, s.bigStrings)
    const res = await app.inject('/strings')
    t.equal(res.statusCode, 200)
    const expected = bigStringsBody()
    t.equal(res.rawPayload.length, Buffer.byteLength(expected), 'no byte more or less')
    t.ok(res.body === expected, 'byte for byte')
  })

  test(`${pool}: every yielded chunk arrives in order, with the status and headers set before the first`, async (t) => {
    const app = await build(t, pool)
    app.get('/mixed', { blocking: true }, s.mixed)
    app.get('/async', { blocking: true }, s.asyncGen)
    app.get('/empty', { blocking: true }, s.empty)
    const port = await listen(app)
    const res = await get(port, '/mixed')
    t.equal(res.statusCode, 201)
    t.equal(res.headers['x-stream'], 'yes')
    t.equal(res.headers['content-type'], 'text/plain; charset=utf-8')
    t.same(await readAll(res), { body: 'one,two,three,cccccccccccccccccccc', complete: true }, 'a cached Buffer yielded twice is sent whole twice')
    t.same(await readAll(await get(port, '/async?n=5')), { body: '0;1;2;3;4;', complete: true })
    const empty = await get(port, '/empty')
    t.equal(empty.statusCode, 204)
    t.equal((await readAll(empty)).body, '')
  })

  test(`${pool}: a slow client holds the generator back; other requests still run`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1 })
    app.get('/big', { blocking: { highWaterMark: 65_536 } }, s.big)
    const port = await listen(app)
    await app.blocking.run(s.resetCounters)
    const total = 1024 // chunks of 64 KiB: 64 MiB in all
    const res = await get(port, `/big?n=${total}`)
    res.pause()
    // Wait until the generator stops producing (it waits for credit).
    let last = -1
    let now
    while ((now = await app.blocking.run(s.producedBytes)) !== last) {
      last = now
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    t.ok(now < 16 * 1024 * 1024, `the generator produced ${now} bytes of ${total * 65_536}, not the whole response`)
    t.equal(app.blocking.stats().running, 2 - 1, 'only the waiting stream is in flight: run() above went through while it waited')
    res.resume()
    const { body, complete } = await readAll(res)
    t.equal(body.length, total * 65_536)
    t.ok(complete)
    t.equal(await app.blocking.run(s.finallyCount), 1)
  })

  test(`${pool}: a client that goes away runs the generator's finally and frees the thread`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1 })
    app.get('/big', { blocking: true }, s.big)
    const port = await listen(app)
    await app.blocking.run(s.resetCounters)
    const res = await get(port, '/big?n=100000')
    await new Promise((resolve) => res.once('data', resolve))
    res.destroy()
    await until(() => app.blocking.stats().running === 0, { what: 'the stream to end', timeout: 1000 })
    t.equal(await app.blocking.run(s.finallyCount), 1, 'finally ran in the worker')
    await until(() => app.logs.some((l) => l.msg === 'big stream finally' && l.reqId), { what: 'the log line of finally' })
    t.pass('what the generator logged after its client left reached the logger')
    t.ok(await app.blocking.run(s.producedBytes) < 100000 * 65_536)
  })

  test(`${pool}: an error after the first chunk cuts the response and is logged with reqId`, async (t) => {
    const app = await build(t, pool)
    app.get('/later', { blocking: true }, s.failsLater)
    app.get('/first', { blocking: true }, s.failsFirst)
    app.get('/bad', { blocking: true }, s.badChunk)
    const port = await listen(app)
    const res = await get(port, '/later')
    t.equal(res.statusCode, 200)
    const { body, complete } = await readAll(res)
    t.equal(body, 'first chunk;')
    t.equal(complete, false, 'the client never sees a clean end')
    await until(() => app.logs.some((l) => l.level >= 50 && l.err?.message === 'broke mid-stream'), { what: 'the error log' })
    const line = app.logs.find((l) => l.level >= 50 && l.err?.message === 'broke mid-stream')
    const warn = app.logs.find((l) => l.msg === 'about to fail')
    t.ok(line.reqId)
    t.equal(warn.reqId, line.reqId, 'worker logs and the error share the reqId')
    t.equal(app.logs.filter((l) => l.err?.message === 'broke mid-stream').length, 1, 'the error is logged once')
    const first = await get(port, '/first')
    t.equal(first.statusCode, 404, 'an error before the first chunk goes through the error handler')
    t.match(JSON.parse((await readAll(first)).body), { message: 'nothing to stream' })
    const bad = await get(port, '/bad')
    t.equal(bad.statusCode, 500)
    t.match((await readAll(bad)).body, /may yield strings, Buffers or Uint8Arrays, not Object/)
  })

  test(`${pool}: taskTimeout counts the time between chunks, not the whole stream`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1, taskTimeout: 400 })
    app.get('/paced', { blocking: true }, s.paced)
    const port = await listen(app)
    const ok = await readAll(await get(port, '/paced?n=8&gap=100'))
    t.same(ok, { body: '0;1;2;3;4;5;6;7;', complete: true }, '800 ms in all, 100 ms apart')
    const slow = await get(port, '/paced?n=3&gap=1500')
    t.equal(slow.statusCode, 503, 'no chunk within the timeout: 503 before the first')
    t.equal(JSON.parse((await readAll(slow)).body).code, 'FST_BLOCKING_TIMEOUT')
  })

  test(`${pool}: app.blocking.run refuses a generator`, async (t) => {
    const app = await build(t, pool)
    await t.rejects(app.blocking.run(s.big), { message: /a generator streams a response/ })
  })
}
