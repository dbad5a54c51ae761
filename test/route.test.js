import { test } from 'tap'
import { build, pools } from './helpers.js'
import { snapshot, replyMethods, status, redirect, badStatus, withSecret, asyncHandler, hiddenRoutes } from './fixtures/routes.js'

for (const pool of pools) {
  test(`${pool}: the handler runs in a worker with the request snapshot`, async (t) => {
    const app = await build(t, pool)
    app.post('/items/:id', { blocking: true }, snapshot)
    const res = await app.inject({
      method: 'POST',
      url: '/items/42?tag=a&tag=b&x=1',
      headers: { 'x-custom': 'yes', host: 'example.test' },
      payload: { hello: 'world' }
    })
    t.equal(res.statusCode, 200)
    const body = res.json()
    t.equal(body.isMainThread, false)
    t.not(body.threadId, 0)
    t.match(body.id, /^req-/)
    t.equal(body.method, 'POST')
    t.equal(body.url, '/items/42?tag=a&tag=b&x=1')
    t.equal(body.routeUrl, '/items/:id')
    t.same(body.params, { id: '42' })
    t.same(body.query, { tag: ['a', 'b'], x: '1' })
    t.equal(body.headers['x-custom'], 'yes')
    t.same(body.body, { hello: 'world' })
    t.equal(body.ip, '127.0.0.1')
    t.equal(body.hostname, 'example.test')
    t.equal(body.protocol, 'http')
    t.equal(body.signalAborted, false)
  })

  test(`${pool}: config.blocking is the same as blocking`, async (t) => {
    const app = await build(t, pool)
    app.get('/c', { config: { blocking: true } }, snapshot)
    app.get('/o', { blocking: { timeout: 5000 } }, snapshot)
    t.equal((await app.inject('/c')).json().isMainThread, false)
    t.equal((await app.inject('/o')).json().isMainThread, false)
  })

  test(`${pool}: a route without blocking runs on the main thread, tagged or not`, async (t) => {
    const app = await build(t, pool)
    app.get('/inline', snapshot)
    app.get('/off', { blocking: false }, snapshot)
    t.equal((await app.inject('/inline')).json().isMainThread, true)
    t.equal((await app.inject('/off')).json().isMainThread, true)
  })

  test(`${pool}: the worker-side reply sets status and headers`, async (t) => {
    const app = await build(t, pool)
    app.get('/r', { blocking: true }, replyMethods)
    app.get('/s', { blocking: true }, status)
    app.get('/redirect', { blocking: true }, redirect)
    app.get('/bad', { blocking: true }, badStatus)
    const res = await app.inject('/r')
    t.equal(res.statusCode, 201)
    t.equal(res.headers['x-one'], '1')
    t.equal(res.headers['x-two'], '2')
    t.same(res.headers['x-list'], ['a', 'b'])
    t.match(res.headers['content-type'], /^application\/vnd\.test\+json/)
    t.same(JSON.parse(res.body), { ok: true })
    const s = await app.inject('/s')
    t.equal(s.statusCode, 202)
    t.equal(s.body, 'accepted')
    const r = await app.inject('/redirect')
    t.equal(r.statusCode, 302)
    t.equal(r.headers.location, '/elsewhere')
    t.equal((await app.inject('/redirect?code=301')).statusCode, 301)
    const bad = await app.inject('/bad')
    t.equal(bad.statusCode, 500)
    t.match(bad.json().message, /not a valid HTTP status code/)
  })

  test(`${pool}: hooks, validation and the response schema work as for any route`, async (t) => {
    const app = await build(t, pool)
    const seen = []
    app.addHook('onRequest', async () => { seen.push('onRequest') })
    app.addHook('preParsing', async () => { seen.push('preParsing') })
    app.addHook('preValidation', async () => { seen.push('preValidation') })
    app.addHook('preHandler', async () => { seen.push('preHandler') })
    app.addHook('onSend', async (request, reply, payload) => { seen.push('onSend'); return payload })
    app.addHook('onResponse', async () => { seen.push('onResponse') })
    app.post('/v', {
      blocking: true,
      schema: {
        body: { type: 'object', required: ['n'], properties: { n: { type: 'integer' } } },
        response: { 200: { type: 'object', properties: { async: { type: 'boolean' }, n: { type: 'integer' } } } }
      }
    }, asyncHandler)
    app.get('/secret', {
      blocking: true,
      schema: { response: { 200: { type: 'object', properties: { name: { type: 'string' } } } } }
    }, withSecret)
    const ok = await app.inject({ method: 'POST', url: '/v', payload: { n: 21 } })
    t.same(ok.json(), { async: true, n: 42 })
    t.same(seen, ['onRequest', 'preParsing', 'preValidation', 'preHandler', 'onSend', 'onResponse'])
    const invalid = await app.inject({ method: 'POST', url: '/v', payload: { n: 'x' } })
    t.equal(invalid.statusCode, 400)
    t.equal(invalid.json().code, 'FST_ERR_VALIDATION')
    t.same((await app.inject('/secret')).json(), { name: 'ada' }, 'the response schema filters fields')
  })

  test(`${pool}: encapsulated contexts share the pool; HEAD routes are served`, async (t) => {
    const app = await build(t, pool)
    await app.register(async (child) => {
      child.decorate('where', 'child')
      child.get('/child', { blocking: true }, snapshot)
    }, { prefix: '/p' })
    app.get('/hidden/0', { blocking: true }, hiddenRoutes[0])
    app.get('/hidden/1', { blocking: true }, hiddenRoutes[1])
    t.equal((await app.inject('/p/child')).json().isMainThread, false)
    const head = await app.inject({ method: 'HEAD', url: '/p/child' })
    t.equal(head.statusCode, 200)
    t.equal(head.body, '')
    t.equal((await app.inject('/hidden/0')).body, 'first hidden')
    t.equal((await app.inject('/hidden/1')).body, 'second hidden')
  })

  test(`${pool}: app.route() with blocking`, async (t) => {
    const app = await build(t, pool)
    app.route({ method: ['GET', 'POST'], url: '/route', blocking: true, handler: snapshot })
    t.equal((await app.inject('/route')).json().method, 'GET')
    t.equal((await app.inject({ method: 'POST', url: '/route' })).json().method, 'POST')
  })
}
