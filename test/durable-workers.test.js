// Worker processes (the fastify-blocking-worker bin): they run jobs wherever
// their copy of the task modules lives, a process that dies leaves its job to
// another, and SIGTERM lets the running job finish.
import { join } from 'node:path'
import { test } from 'tap'
import { build, until } from './helpers.js'
import { bull, copyTasks, notes, startRedis, startWorker, tasksFile } from './redis.js'
import * as tasks from './fixtures/durable.js'

// Small lock and stall timings, so that a dead worker's job is found in about a second.
const FAST = ['--lock-duration', '1000', '--stalled-interval', '300']

async function producer (t, redis) {
  const app = await build(t, 'piscina', { maxThreads: 1, queue: { connection: redis.url, work: false } })
  await app.ready()
  return app
}

test('a worker whose copy of the task modules lives at another absolute path runs the app\'s jobs', async (t) => {
  const redis = await startRedis(t)
  const { settled } = await bull(t, redis)
  const copy = copyTasks(t)
  t.not(copy, tasksFile)
  const worker = startWorker(t, redis, { tasks: [copy] })
  await worker.ready
  const app = await producer(t, redis)
  const file = join(t.testdir(), 'notes')
  const { id } = await app.blocking.enqueue(tasks.record, [file, { n: 1 }])
  const { id: named } = await app.blocking.enqueue(tasks.sendEmail, [file, 'ada@example.com'])
  const job = await settled(id)
  await settled(named)
  t.same(job.returnvalue, { recorded: { n: 1 } })
  t.match(notes(file), [
    { task: 'record', value: { n: 1 }, pid: worker.proc.pid, isMainThread: false },
    { task: 'email.send', to: 'ada@example.com', pid: worker.proc.pid }
  ])
  t.ok(worker.lines().some((l) => l.jobId === id && l.task === 'test/fixtures/durable.js#record' && l.attempt === 1 && l.msg.includes('done')), 'logged with jobId, task and attempt')
})

test('SIGKILL of a worker mid-job: another worker completes it; the stall is seen once', async (t) => {
  const redis = await startRedis(t)
  const { settled, stalled } = await bull(t, redis)
  const first = startWorker(t, redis, { args: FAST })
  await first.ready
  const app = await producer(t, redis)
  const dir = t.testdir()
  const file = join(dir, 'notes')
  const { id } = await app.blocking.enqueue(tasks.slowOnce, [file, join(dir, 'marker'), 60_000])
  await until(() => notes(file).length === 1, { what: 'the job to start' })
  first.proc.kill('SIGKILL')
  await first.exited
  const second = startWorker(t, redis, { args: FAST })
  const job = await settled(id)
  t.equal(await job.getState(), 'completed')
  t.match(notes(file), [
    { first: true, pid: first.proc.pid },
    { first: false, pid: second.proc.pid },
    { done: true, pid: second.proc.pid }
  ])
  t.same(stalled, [id], 'stalled once')
  t.ok(second.lines().some((l) => l.jobId === id && /stalled/.test(l.msg)), 'the worker that found the stall logged it')
})

test('a task that kills its process every time ends failed once it has stalled more than maxStalledCount', async (t) => {
  const redis = await startRedis(t)
  const { queue, settled, stalled } = await bull(t, redis)
  const app = await producer(t, redis)
  const file = join(t.testdir(), 'notes')
  const { id } = await app.blocking.enqueue(tasks.killsProcess, [file], { attempts: 5 })
  let deaths = 0
  // Each worker takes the job (once the previous one's lock has expired) and dies of it, until a stalled check fails it.
  for (;;) {
    const worker = startWorker(t, redis, { args: FAST })
    const outcome = await Promise.race([worker.exited, settled(id, ['failed'], 30_000).then(() => 'failed')])
    if (outcome === 'failed') break
    t.equal(outcome.signal, 'SIGKILL', 'the task killed its worker')
    deaths++
    t.ok(deaths <= 2, 'no more than maxStalledCount + 1 deaths')
    if (deaths > 2) break
  }
  const job = await queue.getJob(id)
  t.equal(await job.getState(), 'failed')
  t.match(job.failedReason, /stalled more than allowable limit/)
  t.equal(deaths, 2)
  t.equal(notes(file).length, 2, 'it ran twice, on two processes')
  t.same(stalled, [id, id], 'it stalled twice: back to waiting the first time, failed the second (maxStalledCount 1)')
})

test('SIGTERM mid-job: the worker stops taking jobs, finishes the running one and exits 0', async (t) => {
  const redis = await startRedis(t)
  const { queue, settled } = await bull(t, redis)
  const worker = startWorker(t, redis, { args: ['--close-timeout', '10000'] })
  await worker.ready
  const app = await producer(t, redis)
  const file = join(t.testdir(), 'notes')
  const { id } = await app.blocking.enqueue(tasks.nap, [file, 1000])
  await until(() => notes(file).length === 1, { what: 'the job to start' })
  worker.proc.kill('SIGTERM')
  const { id: after } = await app.blocking.enqueue(tasks.record, [file, 'after'])
  t.same(await worker.exited, { code: 0, signal: null })
  t.equal(await (await settled(id)).getState(), 'completed', 'the running job finished')
  t.match(notes(file), [{ task: 'nap', start: true }, { task: 'nap', done: true }])
  t.equal(await (await queue.getJob(after)).getState(), 'waiting', 'a job queued after SIGTERM was left for another worker')
  t.equal(worker.stderr(), '')
})

test('a worker that loads two tasks of one name refuses to start', async (t) => {
  const redis = await startRedis(t)
  const worker = startWorker(t, redis, { tasks: [tasksFile, join(tasksFile, '../durable-duplicate.js')] })
  const { code } = await worker.exited
  t.equal(code, 1)
  t.match(worker.stderr(), /FST_BLOCKING_INVALID_OPTION[\s\S]*two tasks are named 'email\.send'/)
})
