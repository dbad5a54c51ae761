// Redis unreachable: reply.background answers within queue.timeout per
// queue.whenDown, nothing hangs, and jobs drain once Redis is back.
import { join } from 'node:path'
import { test } from 'tap'
import { build, until } from './helpers.js'
import { bull, notes, startRedis, startWorker } from './redis.js'
import * as tasks from './fixtures/durable.js'

const TIMEOUT = 300

function routes (app, file) {
  app.post('/order', async (request, reply) => {
    reply.background(tasks.record, file, request.body)
    return { ok: true }
  })
}

test("whenDown 'fail': a Redis that hangs gets 503 FST_BLOCKING_QUEUE_UNAVAILABLE within queue.timeout; queued jobs drain after it returns", async (t) => {
  const redis = await startRedis(t)
  const { queue, settled } = await bull(t, redis)
  const app = await build(t, 'piscina', { queue: { connection: redis.url, work: false, timeout: TIMEOUT } })
  const file = join(t.testdir(), 'notes')
  routes(app, file)
  t.equal((await app.inject({ method: 'POST', url: '/order', payload: { n: 1 } })).statusCode, 200)

  redis.pause()
  const started = Date.now()
  const res = await app.inject({ method: 'POST', url: '/order', payload: { n: 2 } })
  const took = Date.now() - started
  t.equal(res.statusCode, 503)
  t.match(res.json(), { code: 'FST_BLOCKING_QUEUE_UNAVAILABLE', message: /within 300 ms/ })
  t.ok(took >= TIMEOUT && took < TIMEOUT + 1000, `answered in ${took} ms`)
  await t.rejects(app.blocking.enqueue(tasks.record, [file, 3]), { code: 'FST_BLOCKING_QUEUE_UNAVAILABLE' })
  t.equal(app.blocking.stats().queue.unavailable, 2)
  redis.resume()

  // A worker started now runs what was queued before the outage.
  const { startQueueWorker } = await import('fastify-blocking')
  const worker = await startQueueWorker({ tasks: new URL('./fixtures/durable.js', import.meta.url), connection: redis.url, maxThreads: 1, logger: false })
  t.teardown(() => worker.close())
  const [first] = await queue.getJobs(['waiting', 'active', 'completed'], 0, 0, true)
  await settled(first.id)
  t.match(notes(file)[0], { value: { n: 1 } })
  // A Redis that hangs mid-command still holds what it was sent: it takes those
  // jobs when it wakes, although their callers were told they failed (at
  // least once: make tasks idempotent). The app says so for each.
  await until(() => app.logs.filter((l) => /reached Redis after queue\.timeout; it will run although its caller was told it failed/.test(l.msg)).length === 2, { what: 'the late jobs to be reported' })
  await until(() => worker.stats().queue.completed === 3, { what: 'the worker to run every job' })
})

test("whenDown 'local': with Redis stopped the task runs in this process (warned); after a restart the app's worker drains new jobs", async (t) => {
  const redis = await startRedis(t)
  // runRetryDelay: how long the worker waits before it fetches again after losing Redis.
  const app = await build(t, 'tinypool', { queue: { connection: redis.url, whenDown: 'local', timeout: TIMEOUT, worker: { runRetryDelay: 100 } } })
  const file = join(t.testdir(), 'notes')
  routes(app, file)
  await app.ready()
  await redis.stop()

  const started = Date.now()
  const res = await app.inject({ method: 'POST', url: '/order', payload: { n: 1 } })
  t.equal(res.statusCode, 200)
  t.ok(Date.now() - started < TIMEOUT + 1000, 'within the bound')
  await until(() => notes(file).length === 1, { what: 'the task to run in process' })
  t.match(notes(file), [{ value: { n: 1 }, pid: process.pid, isMainThread: false }])
  t.ok(app.logs.some((l) => l.level === 40 && /runs in this process/.test(l.msg) && l.task === 'test/fixtures/durable.js#record'), 'warned')
  t.equal(app.blocking.stats().queue.ranLocally, 1)

  await redis.start()
  const { queue, settled } = await bull(t, redis)
  await until(() => app.blocking.stats().queue.connected, { what: 'the app to reconnect' })
  const again = await app.inject({ method: 'POST', url: '/order', payload: { n: 2 } })
  t.equal(again.statusCode, 200)
  const [job] = await queue.getJobs(['waiting', 'active', 'completed'])
  t.equal((await settled(job.id)).returnvalue.recorded.n, 2, 'the app\'s worker, reconnected, ran the new job')
  t.equal(app.blocking.stats().queue.ranLocally, 1)
})

test("a call once the response is sent cannot hold it: with 'fail' a job Redis did not take is logged as dropped", async (t) => {
  const redis = await startRedis(t)
  const app = await build(t, 'piscina', { queue: { connection: redis.url, work: false, timeout: TIMEOUT } })
  const file = join(t.testdir(), 'notes')
  app.addHook('onResponse', async (request, reply) => { reply.background(tasks.record, file, 'after') })
  app.get('/', async () => 'ok')
  await app.ready()
  redis.pause()
  t.teardown(() => redis.resume())
  t.equal((await app.inject('/')).statusCode, 200)
  await until(() => app.logs.some((l) => l.level === 50 && /background task test\/fixtures\/durable\.js#record was dropped: the task queue is unavailable/.test(l.msg)), { what: 'the drop to be logged' })
  t.equal(app.blocking.stats().queue.unavailable, 1)
})

test('SIGTERM on a worker process while Redis refuses connections: it still exits 0, in bounded time', async (t) => {
  const redis = await startRedis(t)
  const worker = startWorker(t, redis, { args: ['--close-timeout', '1000'] })
  await worker.ready
  await redis.stop()
  // Its connections notice.
  await until(() => worker.lines().some((l) => /lost Redis|connection failed/.test(l.msg)), { what: 'the worker to see Redis gone' })
  const started = Date.now()
  worker.proc.kill('SIGTERM')
  t.same(await worker.exited, { code: 0, signal: null })
  t.ok(Date.now() - started < 10_000, `exited in ${Date.now() - started} ms`)
  t.ok(worker.lines().some((l) => l.level === 40 && /did not close within queue\.timeout/.test(l.msg)), 'said why it took queue.timeout')
})
