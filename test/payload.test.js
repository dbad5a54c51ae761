import { test } from 'tap'
import { build, pools } from './helpers.js'
import * as h from './fixtures/payloads.js'

for (const pool of pools) {
  test(`${pool}: JSON values go through the route's serializer`, async (t) => {
    const app = await build(t, pool)
    app.get('/json', { blocking: true }, h.json)
    const cases = { '': '{"ok":true}', array: '[1,"two",{"three":3}]', number: '42', zero: '0', true: 'true', false: 'false', null: 'null', nested: '{"a":{"b":["1970-01-01T00:00:00.000Z"]}}' }
    for (const [v, expected] of Object.entries(cases)) {
      const res = await app.inject(`/json?v=${v}`)
      t.equal(res.statusCode, 200, v)
      t.match(res.headers['content-type'], /^application\/json/, v)
      t.equal(res.body, expected, v)
    }
  })

  test(`${pool}: strings are text, undefined is an empty body`, async (t) => {
    const app = await build(t, pool)
    app.get('/text', { blocking: true }, h.text)
    app.get('/empty', { blocking: true }, h.empty)
    const text = await app.inject('/text')
    t.equal(text.body, 'héllo text')
    t.match(text.headers['content-type'], /^text\/plain/)
    const empty = await app.inject('/empty')
    t.equal(empty.statusCode, 200)
    t.equal(empty.body, '')
  })

  test(`${pool}: bytes cross without emptying the handler's buffers`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1 })
    app.get('/cached', { blocking: true }, h.cachedBuffer)
    app.get('/pooled', { blocking: true }, h.pooledBuffer)
    app.get('/uint8', { blocking: true }, h.uint8)
    app.get('/ab', { blocking: true }, h.arrayBuffer)
    app.get('/sub', { blocking: true }, h.subarray)
    for (let i = 0; i < 3; i++) {
      const cached = await app.inject('/cached')
      t.equal(cached.rawPayload.length, 100_000, `cached buffer sent whole, time ${i + 1}`)
      t.match(cached.headers['content-type'], /^application\/octet-stream/)
      t.equal((await app.inject('/pooled')).body, 'pooled bytes', `pooled buffer, time ${i + 1}`)
    }
    t.same([...(await app.inject('/uint8')).rawPayload], [1, 2, 3, 4])
    t.same([...(await app.inject('/ab')).rawPayload], [5, 6, 7])
    t.equal((await app.inject('/sub')).body, 'xxxxxxxxxx')
    // The same thread still holds its buffers intact.
    const state = await app.blocking.run(h.inspect)
    t.same(state, { cachedLength: 100_000, pooledText: 'pooled bytes', otherText: 'a neighbour in the same pool', pooledShares: true })
  })

  test(`${pool}: a return value that cannot cross threads is a 500 naming the route and the value`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1 })
    app.get('/fn', { blocking: true }, h.returnsFunction)
    app.get('/promise', { blocking: true }, h.returnsPromiseInside)
    app.get('/symbol', { blocking: true }, h.returnsSymbol)
    app.get('/ok', { blocking: true }, h.json)
    const before = await app.blocking.run(h.echoArg, 'thread')
    const fn = await app.inject('/fn')
    t.equal(fn.statusCode, 500)
    t.equal(fn.json().code, 'FST_BLOCKING_NOT_CLONEABLE')
    t.match(fn.json().message, /GET \/fn.*\.nested\[0\]\.callback.*function/)
    t.match((await app.inject('/promise')).json().message, /\.p: a Promise cannot be cloned/)
    t.match((await app.inject('/symbol')).json().message, /\.s: a symbol cannot be cloned/)
    t.equal((await app.inject('/ok')).statusCode, 200, 'the app keeps serving')
    t.equal(before, 'thread')
    t.equal(app.blocking.stats().failed, 3)
  })

  test(`${pool}: a request that cannot cross threads is a 500, and no thread is lost`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1 })
    app.addContentTypeParser('application/x-weird', (request, payload, done) => done(null, { parse () {} }))
    app.post('/weird', { blocking: true }, h.json)
    const res = await app.inject({ method: 'POST', url: '/weird', headers: { 'content-type': 'application/x-weird' }, payload: 'x' })
    t.equal(res.statusCode, 500)
    t.equal(res.json().code, 'FST_BLOCKING_NOT_CLONEABLE')
    t.match(res.json().message, /POST \/weird: the request could not be sent/)
    t.equal((await app.inject({ method: 'POST', url: '/weird', headers: { 'content-type': 'application/json' }, payload: '{}' })).statusCode, 200)
    await t.rejects(app.blocking.run(h.echoArg, () => 1), { code: 'FST_BLOCKING_NOT_CLONEABLE', message: /an argument could not be sent/ })
    t.equal(await app.blocking.run(h.echoArg, 7), 7)
  })
}

for (const pool of pools) {
  test(`${pool}: a request that cannot cross threads fails alone, when it goes to a thread in one message with others`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1 })
    app.addContentTypeParser('application/x-weird', (request, payload, done) => done(null, { parse () {} }))
    app.post('/mixed', { blocking: true }, h.json)
    const good = () => app.inject({ method: 'POST', url: '/mixed', headers: { 'content-type': 'application/json' }, payload: '{"a":1}' })
    const bad = () => app.inject({ method: 'POST', url: '/mixed', headers: { 'content-type': 'application/x-weird' }, payload: 'x' })
    // Enough quick tasks for the route to count as short: several of its
    // requests then go to the one thread together.
    for (let i = 0; i < 20; i++) t.equal((await good()).statusCode, 200)
    const answers = await Promise.all([good(), bad(), good(), bad(), good()])
    t.same(answers.map((r) => r.statusCode), [200, 500, 200, 500, 200])
    t.same(answers.filter((r) => r.statusCode === 500).map((r) => r.json().code), ['FST_BLOCKING_NOT_CLONEABLE', 'FST_BLOCKING_NOT_CLONEABLE'])
    t.equal((await good()).statusCode, 200, 'the thread keeps serving')
  })
}

test('generators and MessagePorts in a return value are reported, not crashes', async (t) => {
  const { returnsGenerator } = await import('./fixtures/payloads.js')
  for (const pool of pools) {
    const app = await build(t, pool)
    app.get('/gen', { blocking: true }, returnsGenerator)
    const res = await app.inject('/gen')
    t.equal(res.json().code, 'FST_BLOCKING_NOT_CLONEABLE', pool)
    t.match(res.json().message, /\.gen: a Generator cannot be cloned/)
  }
})
