// Failure and retry of durable jobs run by the app's own pool: attempts and
// backoff, a thread that dies, a job nobody defines, and a CPU-bound task
// that runs three lock durations: once, without a stall.
import { join } from 'node:path'
import { test } from 'tap'
import { build, pools } from './helpers.js'
import { bull, notes, startRedis } from './redis.js'
import * as tasks from './fixtures/durable.js'

for (const pool of pools) {
  test(`${pool}: a failing task is retried with backoff until attemptsMade === attempts; every attempt is logged`, async (t) => {
    const redis = await startRedis(t)
    const { settled } = await bull(t, redis)
    const app = await build(t, pool, { queue: { connection: redis.url, jobs: { attempts: 3, backoff: { type: 'fixed', delay: 200 } } } })
    await app.ready()
    const file = join(t.testdir(), 'notes')
    const { id } = await app.blocking.enqueue(tasks.failing, [file])
    const job = await settled(id)
    t.equal(await job.getState(), 'failed')
    t.equal(job.attemptsMade, 3)
    t.equal(job.failedReason, 'task broke')
    const runs = job.processedOn - job.timestamp
    t.ok(runs >= 400, `two backoffs of 200 ms passed between the first attempt and the last (${runs} ms)`)
    t.equal(notes(file).length, 3, 'it ran three times')
    const lines = app.logs.filter((l) => l.jobId === id && l.level === 50)
    t.same(lines.map((l) => [l.attempt, l.task]), [[1, 'test/fixtures/durable.js#failing'], [2, 'test/fixtures/durable.js#failing'], [3, 'test/fixtures/durable.js#failing']])
    t.match(lines[0].msg, /attempt 1 of 3; it will be retried/)
    t.match(lines[2].msg, /attempt 3 of 3$/)
    t.equal(lines[2].err.message, 'task broke')
    t.match(app.blocking.stats().queue, { failed: 3, completed: 0, running: 0 })
  })

  test(`${pool}: a task that ends its thread is a failed attempt; the thread is replaced and the next job runs`, async (t) => {
    const redis = await startRedis(t)
    const { settled } = await bull(t, redis)
    const app = await build(t, pool, { queue: { connection: redis.url } })
    await app.ready()
    const file = join(t.testdir(), 'notes')
    const { id } = await app.blocking.enqueue(tasks.endsThread, [file], { attempts: 2 })
    const job = await settled(id)
    t.equal(await job.getState(), 'failed')
    t.equal(job.attemptsMade, 2)
    t.match(job.failedReason, /died/)
    const { id: next } = await app.blocking.enqueue(tasks.record, [file, 'next'])
    t.equal(await (await settled(next)).getState(), 'completed')
  })

  test(`${pool}: a CPU-bound task three lock durations long runs once, and no stall is seen`, async (t) => {
    const redis = await startRedis(t)
    const { settled, stalled } = await bull(t, redis)
    const lockDuration = 500
    const app = await build(t, pool, { queue: { connection: redis.url, worker: { lockDuration, stalledInterval: 200 } } })
    await app.ready()
    // Another checker of stalled jobs that takes no job itself: it would find an expired lock.
    const { Worker } = await import('bullmq')
    const checker = new Worker('fastify-blocking', null, { connection: redis.client(), autorun: false, stalledInterval: 200, lockDuration })
    t.teardown(() => checker.close())
    await checker.startStalledCheckTimer()
    const file = join(t.testdir(), 'notes')
    const { id } = await app.blocking.enqueue(tasks.spin, [file, 3 * lockDuration])
    const job = await settled(id)
    t.equal(await job.getState(), 'completed')
    t.equal(job.attemptsStarted, 1)
    t.equal(notes(file).filter((n) => n.start).length, 1, 'it ran once')
    t.same(stalled, [], 'no stall')
    t.equal(job.stalledCounter, 0)
  })
}

test('a job whose name no loaded module defines fails at once, without retries, and is logged', async (t) => {
  const redis = await startRedis(t)
  const { queue, settled } = await bull(t, redis)
  const app = await build(t, 'piscina', { queue: { connection: redis.url } })
  await app.ready()
  const job = await queue.add('reports/monthly.js#build', { args: [] }, { attempts: 5 })
  const failed = await settled(job.id)
  t.equal(await failed.getState(), 'failed')
  t.equal(failed.attemptsMade, 1)
  t.match(failed.failedReason, /no module loaded by this worker defines the task 'reports\/monthly\.js#build'/)
  t.ok(app.logs.some((l) => l.level === 50 && l.jobId === job.id && /no module loaded by this process defines it|which no module loaded/.test(l.msg)))
  const garbled = await queue.add('test/fixtures/durable.js#record', 'not our data', { attempts: 5 })
  const bad = await settled(garbled.id)
  t.equal(bad.attemptsMade, 1)
  t.match(bad.failedReason, /not queued by fastify-blocking/)
})
