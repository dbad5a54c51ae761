// A route declared with `blocking` that the plugin never saw fails at ready().
import { test } from 'tap'
import Fastify from 'fastify'
import blocking from 'fastify-blocking'
import { pools } from './helpers.js'
import { snapshot } from './fixtures/routes.js'

function untagged () {
  return 'on the main thread'
}

for (const pool of pools) {
  test(`${pool}: the plugin registered without await: its routes fail at ready()`, async (t) => {
    const app = Fastify()
    t.teardown(() => app.close())
    app.register(blocking, { pool, maxThreads: 1 })
    app.get('/tagged', { blocking: true }, snapshot)
    app.get('/untagged', { config: { blocking: true } }, untagged)
    app.get('/inline', snapshot)
    const err = await app.ready().then(() => undefined, (e) => e)
    t.equal(err?.code, 'FST_BLOCKING_HANDLER_NOT_DEFINED')
    t.match(err.message, /GET \/tagged: declared with blocking, but fastify-blocking never saw the route.*await app\.register\(blocking\)/)
    t.match(err.message, /GET \/untagged: declared with blocking/)
    t.notMatch(err.message, /\/inline/, 'a route without blocking is not named')
  })

  test(`${pool}: a route in a context the plugin does not reach fails at ready()`, async (t) => {
    const app = Fastify()
    t.teardown(() => app.close())
    app.register(async (inside) => {
      await inside.register(blocking, { pool, maxThreads: 1 })
      inside.get('/inside', { blocking: true }, snapshot)
    })
    app.register(async (sibling) => {
      sibling.get('/sibling', { blocking: true }, snapshot)
    })
    const err = await app.ready().then(() => undefined, (e) => e)
    t.equal(err?.code, 'FST_BLOCKING_HANDLER_NOT_DEFINED')
    t.match(err.message, /GET \/sibling: declared with blocking, but fastify-blocking never saw the route/)
    t.notMatch(err.message, /\/inside/, 'the route the plugin reaches is fine')
  })

  test(`${pool}: routes declared before the plugin are fine when they are not blocking`, async (t) => {
    const app = Fastify()
    t.teardown(() => app.close())
    app.get('/health', () => 'ok')
    await app.register(blocking, { pool, maxThreads: 1 })
    app.get('/work', { blocking: true }, snapshot)
    await app.ready()
    t.equal((await app.inject('/health')).body, 'ok')
    t.equal((await app.inject('/work')).json().isMainThread, false)
  })
}
