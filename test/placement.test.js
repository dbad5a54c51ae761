import { test } from 'tap'
import { request as httpRequest } from 'node:http'
import { build, gate, pools, until } from './helpers.js'
import { waitAtGate } from './fixtures/gate.js'
import * as f from './fixtures/failures.js'
import * as s from './fixtures/streams.js'
import { mark } from './fixtures/background.js'
import { second } from './fixtures/shifted.js'

for (const pool of pools) {
  test(`${pool}: tasks go to idle or new threads before they share one`, async (t) => {
    const app = await build(t, pool, { maxThreads: 2, minThreads: 1 })
    await app.ready()
    // (tinypool keeps every thread: wait until both have started.)
    if (pool === 'tinypool') await until(() => app.blocking.stats().threads === 2, { what: 'two threads' })
    const g = gate()
    const held = [app.blocking.run(waitAtGate, g.sab), app.blocking.run(waitAtGate, g.sab)]
    // Both reach the gate only if they run on two threads at once.
    await g.reached(2)
    g.open()
    const threads = await Promise.all(held)
    t.not(threads[0], threads[1])
  })

  test(`${pool}: a request with a timeout still runs beside a stream that waits for its client`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1, taskTimeout: 5000 })
    app.get('/big', { blocking: true }, s.big)
    app.get('/quick', { blocking: true }, f.quick)
    await app.listen({ port: 0, host: '127.0.0.1' })
    const { port } = app.server.address()
    const res = await new Promise((resolve) => httpRequest({ host: '127.0.0.1', port, path: '/big?n=100000' }, resolve).end())
    res.pause()
    await until(() => app.blocking.stats().running === 1, { what: 'the stream to start' })
    const quick = await app.inject('/quick')
    t.equal(quick.statusCode, 200, 'not starved by the waiting stream')
    res.destroy()
    await until(() => app.blocking.stats().running === 0, { what: 'the stream to end' })
  })

  test(`${pool}: reply.background after the response is over still runs`, async (t) => {
    const app = await build(t, pool)
    const sab = new SharedArrayBuffer(8)
    app.addHook('onResponse', async (request, reply) => { reply.background(mark, sab) })
    app.get('/', async () => 'ok')
    await app.inject('/')
    await until(() => Atomics.load(new Int32Array(sab), 0) === 1, { what: 'the task' })
    t.pass('ran')
  })

  test(`${pool}: a module that defines differently in a worker is reported at startup`, async (t) => {
    const app = await build(t, pool)
    app.get('/second', { blocking: true }, second)
    await t.rejects(app.ready(), { code: 'FST_BLOCKING_HANDLER_NOT_DEFINED', message: /GET \/second: its module makes 3 definitions on the main thread but 2 in a worker thread/ })
  })
}

/** Opens a stream from /big and pauses it: the generator soon waits for its client. */
function pausedStream (port) {
  return new Promise((resolve) => {
    const req = httpRequest({ host: '127.0.0.1', port, path: '/big?n=100000' }, (res) => {
      res.pause()
      resolve(res)
    })
    req.on('error', () => {})
    req.end()
  })
}

test('piscina: a task goes beside streams that wait for their clients before a new thread starts', async (t) => {
  const app = await build(t, 'piscina', { maxThreads: 2, minThreads: 1 })
  app.get('/big', { blocking: true }, s.big)
  app.get('/quick', { blocking: true }, f.quick)
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address()
  t.equal(app.blocking.stats().threads, 1)
  const stream = await pausedStream(port)
  await until(() => app.blocking.stats().running === 1, { what: 'the stream' })
  // Let the stream use its credit and wait (its thread is then quiet).
  await new Promise((resolve) => setTimeout(resolve, 100))
  t.equal((await app.inject('/quick')).statusCode, 200)
  t.equal(app.blocking.stats().threads, 1, 'no second thread was needed')
  stream.destroy()
})

/**
 * A one-thread app whose streams' cap is full: 16 streams waiting for clients
 * that do not read, and a 17th queued for a place. closeStreams() ends them all.
 */
async function fillStreamCap (t, pool, options) {
  const app = await build(t, pool, options)
  app.get('/big', { blocking: true }, s.big)
  app.get('/quick', { blocking: true }, f.quick)
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address()
  const streams = []
  for (let i = 0; i < 16; i++) streams.push(await pausedStream(port))
  await until(() => app.blocking.stats().running === 16, { what: '16 streams' })
  const queued = httpRequest({ host: '127.0.0.1', port, path: '/big?n=100000' })
  queued.on('error', () => {})
  queued.end()
  await until(() => app.blocking.stats().queued === 1, { what: 'the 17th stream to queue' })
  const closeStreams = async () => {
    queued.destroy()
    for (const stream of streams) stream.destroy()
    await until(() => app.blocking.stats().running === 0 && app.blocking.stats().queued === 0, { what: 'every stream to end' })
  }
  return { app, closeStreams }
}

for (const pool of pools) {
  test(`${pool}: past the streams' cap, a queued stream does not hold up requests behind it`, async (t) => {
    const { app, closeStreams } = await fillStreamCap(t, pool, { maxThreads: 1 })
    // The 17th waits for a place; the request behind it must not.
    t.equal((await app.inject('/quick')).statusCode, 200)
    await closeStreams()
  })
}

for (const pool of pools) {
  test(`${pool}: streams held back by their cap fill maxQueue only for work that would wait`, async (t) => {
    const { app, closeStreams } = await fillStreamCap(t, pool, { maxThreads: 1, maxQueue: 1 })
    // The queue holds maxQueue (1) tasks, but once the streams wait for their
    // clients a thread can take a request at once: it is not refused. (Asked
    // again while a stream still uses its credit, after a turn of the event
    // loop: app.inject() alone never lets the streams' messages in.)
    let quick
    const deadline = Date.now() + 10_000
    do {
      await new Promise((resolve) => setImmediate(resolve))
      quick = await app.inject('/quick')
    } while (quick.statusCode !== 200 && Date.now() < deadline)
    t.equal(quick.statusCode, 200, `a request a thread can take is not refused (${quick.body})`)
    // Another stream would wait: the queue is full.
    const refused = await app.inject('/big?n=1')
    t.equal(refused.statusCode, 503)
    t.equal(refused.json().code, 'FST_BLOCKING_QUEUE_FULL')
    t.ok(refused.headers['retry-after'])
    await closeStreams()
  })
}
