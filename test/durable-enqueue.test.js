// The durable queue, producer side: jobs are in Redis before the response,
// arguments survive JSON or are refused, jobId makes one job, counts and
// diagnostics say what was queued, and app.close() leaves no connection.
import diagnostics from 'node:diagnostics_channel'
import { join } from 'node:path'
import { test } from 'tap'
import { channels } from 'fastify-blocking'
import { build, pools, until } from './helpers.js'
import { bull, notes, otherClients, startRedis } from './redis.js'
import * as tasks from './fixtures/durable.js'

const RECORD = 'test/fixtures/durable.js#record'

test('reply.background adds the job before the response is sent; nothing runs it here with work: false', async (t) => {
  const redis = await startRedis(t)
  const { queue } = await bull(t, redis)
  const app = await build(t, 'piscina', { queue: { connection: redis.url, work: false } })
  let waitingAtSend
  // Runs after the plugin's own onSend hook, just before the response is written.
  app.addHook('onSend', async (request, reply, payload) => {
    waitingAtSend = await queue.getWaitingCount()
    return payload
  })
  app.post('/signup', async (request, reply) => {
    reply.background(tasks.record, 'unused', { email: request.body.email, at: new Date(0) })
    return { ok: true }
  })
  const res = await app.inject({ method: 'POST', url: '/signup', payload: { email: 'ada@example.com' } })
  t.equal(res.statusCode, 200)
  t.equal(waitingAtSend, 1, 'the job was in Redis when the response was sent')
  const [job] = await queue.getWaiting()
  t.equal(job.name, RECORD, 'named by its module path from the app root and its export name')
  t.same(job.data, {
    args: ['unused', { email: 'ada@example.com', at: '1970-01-01T00:00:00.000Z' }],
    revive: [[[1, 'at'], 'date']],
    reqId: app.logs.find((l) => l.req?.url === '/signup').reqId
  })
  t.equal(job.opts.attempts, 1, 'queue.jobs applies: one attempt by default')
  t.equal(app.blocking.stats().queue.added, 1)
  t.equal(app.blocking.stats().background.completed, 0, 'nothing ran in process')
})

for (const pool of pools) {
  test(`${pool}: arguments survive JSON: Dates, Buffers and undefined arrive as themselves; others are refused with their path`, async (t) => {
    const redis = await startRedis(t)
    const { settled } = await bull(t, redis)
    const app = await build(t, pool, { queue: { connection: redis.url } })
    const file = join(t.testdir(), 'notes')
    app.get('/bad/:what', async (request, reply) => {
      const bad = {
        map: new Map(),
        set: new Set([1]),
        bigint: 1n,
        fn: () => {},
        instance: new (class Money { constructor () { this.cents = 1 } })(),
        nan: NaN
      }[request.params.what]
      reply.background(tasks.record, file, { user: { when: bad } })
      return 'unreachable'
    })
    for (const [what, says] of [['map', 'a Map'], ['set', 'a Set'], ['bigint', 'a BigInt'], ['fn', 'a function (fn)'], ['instance', 'a Money'], ['nan', 'NaN']]) {
      const res = await app.inject(`/bad/${what}`)
      t.equal(res.statusCode, 500, what)
      t.equal(res.json().code, 'FST_BLOCKING_NOT_SERIALIZABLE', what)
      t.match(res.json().message, `args[1].user.when is ${says}, which JSON cannot carry`, what)
    }
    const cycle = { name: 'loop' }
    cycle.self = cycle
    await t.rejects(app.blocking.enqueue(tasks.record, [file, cycle]), { code: 'FST_BLOCKING_NOT_SERIALIZABLE', message: /args\[1\]\.self refers back/ })

    const { id } = await app.blocking.enqueue(tasks.describe, [file, new Date(Date.UTC(2024, 1, 29)), Buffer.from('bytes'), undefined, { nested: Buffer.from('n'), gone: undefined, at: new Date(0) }])
    t.equal((await settled(id)).finishedOn > 0, true)
    const [seen] = notes(file).filter((n) => n.task === 'describe')
    t.same(seen.kinds, ['Date', 'Buffer', 'undefined', 'object'])
    t.same(seen.values.slice(0, 2), ['2024-02-29T00:00:00.000Z', 'bytes'])
    t.same(seen.nested[3], { nested: 'Uint8Array', at: 'Date' }, 'a nested Buffer arrives as a Uint8Array (as in process); an undefined property is left out')
    t.equal(seen.isMainThread, false, 'ran on a pool thread')
  })
}

test('reply.background in a worker handler: checked at the call, queued before the response', async (t) => {
  const redis = await startRedis(t)
  const { queue } = await bull(t, redis)
  const app = await build(t, 'piscina', { queue: { connection: redis.url, work: false } })
  app.get('/ok', { blocking: true }, tasks.queuesFromWorker)
  app.get('/bad', { blocking: true }, tasks.queuesMapFromWorker)
  const ok = await app.inject('/ok')
  t.same(ok.json(), { queued: true })
  t.equal(await queue.getWaitingCount(), 1, 'the job is in Redis')
  const bad = await app.inject('/bad')
  t.equal(bad.statusCode, 500)
  t.match(bad.json(), { code: 'FST_BLOCKING_NOT_SERIALIZABLE', message: /args\[1\]\.tags is a Map/ })
})

test('app.blocking.enqueue: jobId twice is one job; job options pass through; stats and the diagnostics channel see it', async (t) => {
  const redis = await startRedis(t)
  const { queue } = await bull(t, redis)
  // An ioredis instance of the app's own: the plugin duplicates it and leaves it alone.
  const own = redis.client()
  const app = await build(t, 'tinypool', { queue: { connection: own, work: false, jobs: { removeOnComplete: true } } })
  await app.ready()
  const messages = []
  const listener = (message) => messages.push(message)
  diagnostics.subscribe(channels.task, listener)
  t.teardown(() => diagnostics.unsubscribe(channels.task, listener))

  const first = await app.blocking.enqueue(tasks.sendEmail, ['unused', 'ada@example.com'], { jobId: 'welcome-ada', delay: 60_000, priority: 3 })
  const second = await app.blocking.enqueue(tasks.sendEmail, ['unused', 'ada@example.com'], { jobId: 'welcome-ada' })
  t.same(first, { id: 'welcome-ada' })
  t.same(second, { id: 'welcome-ada' })
  t.equal(await queue.getDelayedCount(), 1, 'one job')
  const job = await queue.getJob('welcome-ada')
  t.equal(job.name, 'email.send', 'a name given with defineTask')
  t.match(job.opts, { delay: 60_000, priority: 3, removeOnComplete: true })
  t.match(messages, [
    { lane: 'background', name: 'email.send', outcome: 'queued', jobId: 'welcome-ada' },
    { lane: 'background', name: 'email.send', outcome: 'queued', jobId: 'welcome-ada' }
  ])
  app.blocking.stats()
  await until(() => app.blocking.stats().queue.counts !== undefined, { what: 'the counts' })
  t.match(app.blocking.stats().queue, { name: 'fastify-blocking', connected: true, counts: { delayed: 1, waiting: 0 }, added: 2 })
  await t.rejects(app.blocking.enqueue(tasks.sendEmail, 'not an array'), { code: 'FST_BLOCKING_INVALID_OPTION' })
  await t.rejects(app.blocking.enqueue(() => {}, []), { code: 'FST_BLOCKING_HANDLER_NOT_DEFINED' })
  await app.close()
  t.equal(await own.ping(), 'PONG', 'the app\'s own connection is still open')
})

test('without queue, app.blocking.enqueue runs the task in the pool and no Redis is needed', async (t) => {
  const app = await build(t, 'piscina')
  const file = join(t.testdir(), 'notes')
  const { id } = await app.blocking.enqueue(tasks.record, [file, 7])
  t.match(id, /^local:/)
  await until(() => notes(file).length === 1, { what: 'the task' })
  t.match(notes(file), [{ task: 'record', value: 7, isMainThread: false }])
  t.equal(app.blocking.stats().queue, undefined)
  await t.rejects(app.blocking.enqueue(tasks.record, [file, () => {}]), { code: 'FST_BLOCKING_NOT_CLONEABLE' })
})

test('app.close() stops the worker, closes the queue and leaves no Redis connection open', async (t) => {
  const redis = await startRedis(t)
  const watcher = redis.client()
  const { settled } = await bull(t, redis)
  const baseline = (await otherClients(watcher)).length
  const app = await build(t, 'piscina', { queue: { connection: redis.url } })
  await app.ready()
  const file = join(t.testdir(), 'notes')
  const { id } = await app.blocking.enqueue(tasks.record, [file, 1])
  await settled(id)
  t.ok((await otherClients(watcher)).length >= baseline + 3, 'the app has its connections: the queue\'s and the worker\'s two')
  await app.close()
  // Redis drops a closed connection from its list a moment later.
  let left
  const deadline = Date.now() + 5000
  while ((left = await otherClients(watcher)).length > baseline && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
  t.equal(left.length, baseline, `no connection left: ${left.join('\n')}`)
})

test('paths name the argument (quoted keys, array indexes); invalid Dates and symbols are refused; revived values sit at any depth', async (t) => {
  const redis = await startRedis(t)
  const { queue } = await bull(t, redis)
  const app = await build(t, 'piscina', { queue: { connection: redis.url, work: false } })
  await app.ready()
  const refused = async (args, message) => t.rejects(app.blocking.enqueue(tasks.record, args), { code: 'FST_BLOCKING_NOT_SERIALIZABLE', message }, String(message))
  await refused(['x', { 'content-type': [1, { deep: Symbol('s') }] }], /args\[1\]\["content-type"\]\[1\]\.deep is a symbol/)
  await refused(['x', new Date(NaN)], /args\[1\] is an invalid Date/)
  await refused(['x', [Infinity]], /args\[1\]\[0\] is Infinity/)
  await refused(['x', new Uint16Array(2)], /args\[1\] is a Uint16Array/)
  await refused(['x', Object.assign(Object.create(null), { ok: 1, n: 2n })], /args\[1\]\.n is a BigInt/)
  const { id } = await app.blocking.enqueue(tasks.record, ['x', { list: [new Date(0), [Buffer.from('a')]], none: [undefined] }])
  const job = await queue.getJob(id)
  t.same(job.data.revive, [[[1, 'list', 0], 'date'], [[1, 'list', 1, 0], 'bytes'], [[1, 'none', 0], 'undefined']])
})

test('startQueueWorker: tasks by glob or URL; a name that matches nothing, or no tasks, is refused', async (t) => {
  const redis = await startRedis(t)
  const { startQueueWorker } = await import('fastify-blocking')
  const base = { connection: redis.url, maxThreads: 1, logger: false }
  const worker = await startQueueWorker({ ...base, tasks: ['test/fixtures/dur?ble.js', new URL('./fixtures/**/durable.js', import.meta.url)] })
  t.equal(worker.stats().queue.name, 'fastify-blocking')
  await worker.close()
  await t.rejects(startQueueWorker({ ...base, tasks: 'test/fixtures/nothing-*.js' }), { code: 'FST_BLOCKING_INVALID_OPTION', message: /no file matches/ })
  await t.rejects(startQueueWorker({ ...base, tasks: 'test/fixtures/missing.js' }), { code: 'FST_BLOCKING_INVALID_OPTION', message: /is not a file/ })
  await t.rejects(startQueueWorker({ ...base, tasks: [] }), { code: 'FST_BLOCKING_INVALID_OPTION', message: /at least one task module/ })
  await t.rejects(startQueueWorker(null), { code: 'FST_BLOCKING_INVALID_OPTION' })
})

test('queue options are checked at registration', async (t) => {
  const Fastify = (await import('fastify')).default
  const blocking = (await import('fastify-blocking')).default
  for (const [queue, message] of [
    [{ connection: 'localhost:6379' }, /options\.queue\.connection must be a redis:\/\/ URL/],
    [{ connection: 'redis://127.0.0.1', name: 'a:b' }, /options\.queue\.name must be a non-empty string without ':'/],
    [{ connection: 'redis://127.0.0.1', whenDown: 'retry' }, /options\.queue\.whenDown must be 'fail' or 'local'/],
    [{ connection: 'redis://127.0.0.1', timeout: 0 }, /options\.queue\.timeout must be a positive integer/],
    [{ connection: 'redis://127.0.0.1', retries: 3 }, /options\.queue\.retries is not an option/]
  ]) {
    const app = Fastify()
    await t.rejects(async () => { await app.register(blocking, { maxThreads: 1, queue }) }, { code: 'FST_BLOCKING_INVALID_OPTION', message })
    await app.close()
  }
})
