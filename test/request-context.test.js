// What a blocking handler finds on its request: properties set by hooks
// (requestProperties), the route's config, and nothing of the plugin's own.
import { test } from 'tap'
import cookie from '@fastify/cookie'
import { build, pools } from './helpers.js'
import * as c from './fixtures/context.js'

for (const pool of pools) {
  test(`${pool}: requestProperties clone what hooks set; a route's list replaces the plugin's`, async (t) => {
    const app = await build(t, pool, { requestProperties: ['user', 'tenant'] })
    app.addHook('preHandler', async (request) => {
      request.user = { id: 7, roles: ['admin'], since: new Date(0) }
    })
    app.get('/who', { blocking: true, config: { size: 'large', onlyHere: () => 1, nested: { fn () {}, keep: 1 } } }, c.whoAmI)
    app.get('/other', { blocking: { requestProperties: ['tenant'] }, config: { size: 'small' } }, c.whoAmI)
    const who = (await app.inject('/who')).json()
    t.same(who.user, { id: 7, roles: ['admin'], since: '1970-01-01T00:00:00.000Z' })
    t.equal(who.tenant, 'absent', 'a property no hook set is undefined')
    t.same(who.config, { size: 'large', nested: { keep: 1 }, url: '/who', method: 'GET' }, 'the route config, functions left out')
    t.ok(who.keys.includes('user') && who.keys.includes('tenant'), 'named properties are own properties, even when absent')
    const other = (await app.inject('/other')).json()
    t.equal(other.user, undefined, 'the route list replaced the plugin list')
    t.same(other.config, { size: 'small', url: '/other', method: 'GET' }, 'one handler, two routes, two configs')
  })

  test(`${pool}: a request property that cannot be cloned fails the request, naming it`, async (t) => {
    const app = await build(t, pool, { requestProperties: ['user'], maxThreads: 1 })
    app.addHook('preHandler', async (request) => {
      request.user = request.query.bad === '1' ? { id: 1, can: () => true } : { id: 2 }
    })
    app.get('/who', { blocking: true }, c.whoAmI)
    app.get('/stream', { blocking: true }, c.cookieStream)
    const bad = await app.inject('/who?bad=1')
    t.equal(bad.statusCode, 500)
    t.equal(bad.json().code, 'FST_BLOCKING_NOT_CLONEABLE')
    t.match(bad.json().message, /GET \/who: request\.user cannot be sent to a worker: at request\.user\.can: a function/)
    t.equal((await app.inject('/stream?bad=1')).json().code, 'FST_BLOCKING_NOT_CLONEABLE', 'a streaming route too')
    t.same((await app.inject('/who')).json().user, { id: 2 }, 'the next request is served')
  })

  test(`${pool}: the worker's request and reply show nothing of the plugin's`, async (t) => {
    const app = await build(t, pool)
    app.get('/keys', { blocking: true }, c.ownKeys)
    const keys = (await app.inject('/keys')).json()
    t.same(keys.request, ['body', 'headers', 'hostname', 'id', 'ip', 'method', 'params', 'protocol', 'query', 'routeOptions', 'routeUrl', 'url'])
    t.same(keys.reply, [])
    t.equal(keys.replyType, 'function', 'setCookie exists, and throws without @fastify/cookie')
  })

  test(`${pool}: Fastify reply members that a worker lacks throw, saying what to do instead`, async (t) => {
    const app = await build(t, pool)
    app.get('/misuse', { blocking: true }, c.misuse)
    app.get('/send', { blocking: true }, c.sendsInWorker)
    const send = (await app.inject('/send')).json()
    t.equal(send.statusCode, 500)
    t.equal(send.code, 'FST_BLOCKING_NOT_IN_WORKER')
    t.match(send.message, /reply\.send\(\) is not available in a blocking handler.*return the payload/)
    const cases = {
      getHeader: /reply\.getHeader\(\).*reply\.header\(\)/,
      sendFile: /fs\.createReadStream/,
      hijack: /socket stays on the main thread/,
      setCookie: /register @fastify\/cookie/
    }
    for (const [member, message] of Object.entries(cases)) {
      const res = (await app.inject(`/misuse?member=${member}`)).json()
      t.equal(res.code, 'FST_BLOCKING_NOT_IN_WORKER', member)
      t.match(res.message, message, member)
    }
    t.match((await app.inject('/misuse?member=raw&read=1')).json().message, /reply\.raw is not available/)
    t.match((await app.inject('/misuse?member=log&read=1')).json().message, /use request\.log/)
  })

  test(`${pool}: with @fastify/cookie, setCookie and clearCookie in the worker are applied as inline, signed`, async (t) => {
    const app = await build(t, pool, { requestProperties: ['cookies'] })
    await app.register(cookie, { secret: 'a-secret-of-some-length' })
    app.get('/cookies', { blocking: true }, c.cookies)
    app.get('/stream', { blocking: true }, c.cookieStream)
    app.get('/bad', { blocking: true }, c.badCookie)
    app.get('/inline', (request, reply) => {
      reply.setCookie('plain', 'one', { path: '/', httpOnly: true })
      reply.setCookie('signed', 'two', { signed: true, path: '/' })
      reply.clearCookie('old', { path: '/' })
      return { seen: request.cookies }
    })
    const res = await app.inject({ url: '/cookies', cookies: { given: 'g' } })
    const inline = await app.inject({ url: '/inline', cookies: { given: 'g' } })
    t.equal(res.statusCode, 200)
    t.same(res.json(), { seen: { given: 'g' } }, 'request.cookies reached the worker')
    t.same(res.headers['set-cookie'], inline.headers['set-cookie'], 'the same Set-Cookie headers as an inline handler')
    const signed = res.cookies.find((k) => k.name === 'signed')
    t.same(app.unsignCookie(signed.value), { valid: true, renew: false, value: 'two' })
    const streamed = await app.inject('/stream')
    t.equal(streamed.body, 'chunk')
    t.equal(app.unsignCookie(streamed.cookies.find((k) => k.name === 'streamed').value).value, 'yes', 'a stream sets cookies before its first chunk')
    const bad = (await app.inject('/bad')).json()
    t.equal(bad.code, 'FST_BLOCKING_NOT_CLONEABLE')
    t.match(bad.message, /reply\.setCookie\('x'\): the options cannot be sent.*options\.encode/)
  })
}

test('requestProperties is checked at register time', async (t) => {
  const { default: Fastify } = await import('fastify')
  const { default: blocking } = await import('fastify-blocking')
  for (const [value, message] of [
    ['user', /requestProperties must be an array/],
    [[''], /non-empty strings/],
    [['body'], /'body' is already on the worker's request/],
    [['__proto__'], /is not a request property that can be sent/]
  ]) {
    const app = Fastify()
    await t.rejects(async () => { await app.register(blocking, { requestProperties: value }) }, { code: 'FST_BLOCKING_INVALID_OPTION', message })
  }
  const app = Fastify()
  await app.register(blocking, { maxThreads: 1 })
  t.teardown(() => app.close())
  t.throws(() => app.get('/x', { blocking: { requestProperties: ['signal'] } }, c.whoAmI), { message: /blocking\.requestProperties: 'signal'/ })
})
