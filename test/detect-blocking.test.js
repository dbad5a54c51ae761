// detectBlocking: a warning for a handler or hook that holds the event loop.
import { test } from 'tap'
import { performance } from 'node:perf_hooks'
import { build } from './helpers.js'
import * as f from './fixtures/failures.js'

/** Keeps the main thread busy for `ms` without yielding. */
function spinFor (ms) {
  const end = performance.now() + ms
  while (performance.now() < end);
}

test('detectBlocking logs a handler or hook that holds the event loop, once per route', async (t) => {
  const app = await build(t, 'piscina', { detectBlocking: { thresholdMs: 20 } })
  app.get('/slow', async () => { spinFor(30); return 'done' })
  app.get('/slow-callback', (request, reply) => { spinFor(30); reply.send('done') })
  app.get('/fast', async () => 'done')
  app.get('/slow-hook', { preHandler: [(request, reply, done) => done(), async () => spinFor(30)] }, async () => 'done')
  app.get('/blocking', { blocking: true, onRequest: (request, reply, done) => { spinFor(30); done() } }, f.quick)
  for (let i = 0; i < 2; i++) {
    for (const url of ['/slow', '/slow-callback', '/fast', '/slow-hook', '/blocking']) t.equal((await app.inject(url)).statusCode, 200, url)
  }
  const found = app.logs.filter((l) => l.level === 40 && l.route !== undefined)
  t.same(found.map((l) => `${l.route} ${l.stage}`).sort(), [
    'GET /blocking onRequest hook',
    'GET /slow handler',
    'GET /slow-callback handler',
    'GET /slow-hook preHandler hook #2'
  ], 'each slow stretch once, nothing for fast ones or for a blocking handler')
  const slow = found.find((l) => l.route === 'GET /slow')
  t.ok(slow.ms >= 30)
  t.equal(slow.thresholdMs, 20)
  t.match(slow.msg, /GET \/slow held the event loop for [\d.]+ ms in its handler; .*blocking: true/)
})

test('detectBlocking is off by default; true means 100 ms', async (t) => {
  const off = await build(t, 'piscina')
  off.get('/slow', async () => { spinFor(120); return 'done' })
  await off.inject('/slow')
  t.notOk(off.logs.some((l) => l.stage !== undefined))
  const on = await build(t, 'piscina', { detectBlocking: true })
  on.get('/slow', async () => { spinFor(120); return 'done' })
  on.get('/medium', async () => { spinFor(30); return 'done' })
  await on.inject('/slow')
  await on.inject('/medium')
  t.same(on.logs.filter((l) => l.stage !== undefined).map((l) => [l.route, l.thresholdMs]), [['GET /slow', 100]])
})

test('the detectBlocking options are checked at register', async (t) => {
  const Fastify = (await import('fastify')).default
  const blocking = (await import('fastify-blocking')).default
  for (const [options, message] of [
    [{ detectBlocking: { thresholdMs: 0 } }, /options\.detectBlocking\.thresholdMs must be a positive integer/],
    [{ detectBlocking: { threshold: 5 } }, /options\.detectBlocking\.threshold is not an option/]
  ]) {
    const app = Fastify()
    await t.rejects(app.register(blocking, options).ready(), { code: 'FST_BLOCKING_INVALID_OPTION', message }, JSON.stringify(options))
  }
})
