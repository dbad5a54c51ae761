import { test } from 'tap'
import Fastify from 'fastify'
import blocking from 'fastify-blocking'
import { build, pools } from './helpers.js'
import { untagged } from './fixtures/untagged.js'
import { mainOnly } from './fixtures/main-only.js'
import { broken } from './fixtures/broken-in-worker.js'
import { snapshot } from './fixtures/routes.js'

for (const pool of pools) {
  test(`${pool}: blocking on an untagged handler rejects app.ready() naming the route and the fix`, async (t) => {
    const app = await build(t, pool)
    app.get('/untagged', { blocking: true }, untagged)
    app.post('/arrow', { blocking: true }, async () => 'inline arrow')
    await t.rejects(app.ready(), {
      code: 'FST_BLOCKING_HANDLER_NOT_DEFINED',
      message: /GET \/untagged: its handler was not made with defineHandler[\s\S]*defineHandler\(import\.meta\.url[\s\S]*POST \/arrow/
    })
  })

  test(`${pool}: a handler the worker cannot find or load is reported at app.ready()`, async (t) => {
    const app = await build(t, pool)
    app.get('/main-only', { blocking: true }, mainOnly)
    app.get('/broken', { blocking: true }, broken)
    app.get('/fine', { blocking: true }, snapshot)
    const err = await app.ready().catch((e) => e)
    t.equal(err.code, 'FST_BLOCKING_HANDLER_NOT_DEFINED')
    t.match(err.message, /GET \/main-only: a worker thread cannot load its handler .*main-only\.js#0.*made fewer definitions/)
    t.match(err.message, /GET \/broken: .*this module cannot load in a worker/)
    t.notMatch(err.message, /\/fine/)
  })

  test(`${pool}: a module that builds the app cannot be imported by a worker`, async (t) => {
    // The fixture builds its own app with the default pool; the message is the same on both.
    await t.rejects(import(`./fixtures/starts-app.js?pool=${pool}`), {
      code: 'FST_BLOCKING_HANDLER_NOT_DEFINED',
      message: /starts-app\.js\S* registers fastify-blocking[\s\S]*Move blocking handlers and tasks into their own module/
    })
  })

  test(`${pool}: invalid options are rejected at register with the option's name`, async (t) => {
    const cases = [
      [{ pool: 'threads' }, /options\.pool must be 'piscina' or 'tinypool'/],
      [{ maxThreads: 0 }, /options\.maxThreads must be a positive integer/],
      [{ maxThreads: 1.5 }, /options\.maxThreads must be a positive integer/],
      [{ maxThreads: 2, minThreads: 3 }, /options\.minThreads \(3\) must not exceed options\.maxThreads \(2\)/],
      [{ maxQueue: -1 }, /options\.maxQueue must be a non-negative integer/],
      [{ taskTimeout: '1s' }, /options\.taskTimeout must be a non-negative integer/],
      [{ resourceLimits: 5 }, /options\.resourceLimits must be an object/],
      [{ multipart: { limits: { fileSizes: 1 } } }, /options\.multipart\.limits\.fileSizes is not a multipart limit/]
    ]
    for (const [options, message] of cases) {
      const app = Fastify()
      await t.rejects(app.register(blocking, { pool, ...options }).ready(), { code: 'FST_BLOCKING_INVALID_OPTION', message }, JSON.stringify(options))
      await app.close()
    }
  })

  test(`${pool}: invalid route options are rejected with the route's name`, async (t) => {
    const app = await build(t, pool)
    t.throws(() => app.get('/bad', { blocking: 'yes' }, snapshot), { code: 'FST_BLOCKING_INVALID_OPTION', message: /GET \/bad: blocking must be true or an object/ })
    t.throws(() => app.get('/bad2', { blocking: { timout: 5 } }, snapshot), { message: /blocking\.timout is not an option/ })
    t.throws(() => app.get('/bad3', { blocking: { timeout: -5 } }, snapshot), { message: /^GET \/bad3: blocking\.timeout must be a non-negative integer/ })
    t.throws(() => app.post('/bad4', { blocking: { highWaterMark: 0 } }, snapshot), { message: /^POST \/bad4: blocking\.highWaterMark must be a positive integer/ })
    t.throws(() => app.post('/bad5', { blocking: { multipart: 1 } }, snapshot), { message: /^POST \/bad5: blocking\.multipart must be an object/ })
    t.throws(() => app.post('/bad6', { blocking: { multipart: { limits: { files: -1 } } } }, snapshot), { message: /^POST \/bad6: blocking\.multipart\.limits\.files must be a non-negative integer/ })
    t.throws(() => app.post('/bad7', { blocking: { multipart: { limits: { filez: 1 } } } }, snapshot), { message: /^POST \/bad7: blocking\.multipart\.limits\.filez is not a multipart limit/ })
  })

  test(`${pool}: registering the plugin twice is an error`, async (t) => {
    const app = await build(t, pool)
    app.register(blocking, { pool })
    await t.rejects(app.ready(), { code: 'FST_BLOCKING_INVALID_OPTION', message: /already registered/ })
  })
}
