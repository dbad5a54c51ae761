import { execFileSync, spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { test } from 'tap'
import { build } from './app.js'

function hasRedis () {
  try {
    execFileSync('redis-server', ['--version'], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

async function freePort () {
  const server = createServer()
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address()
  await new Promise((resolve) => server.close(resolve))
  return port
}

/** A process, and a promise of its output once it has printed `ready`. */
function run (t, command, args, env, ready) {
  const proc = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  const exited = new Promise((resolve) => proc.once('exit', (code) => resolve(code)))
  const started = new Promise((resolve, reject) => {
    proc.stdout.on('data', (chunk) => {
      out += chunk
      if (out.includes(ready)) resolve()
    })
    exited.then((code) => reject(new Error(`${command} exited (${code}) before it was ready: ${out}`)))
  })
  t.teardown(async () => {
    if (proc.exitCode === null) {
      proc.kill('SIGKILL')
      await exited
    }
  })
  return { proc, started, exited }
}

async function until (predicate) {
  while (!predicate()) await sleep(20)
}

test('the HTTP process queues jobs in Redis; a separate worker process runs them', { skip: !hasRedis() && 'redis-server is not installed' }, async (t) => {
  const port = await freePort()
  const redisUrl = `redis://127.0.0.1:${port}`
  const redis = run(t, 'redis-server', ['--port', String(port), '--save', '', '--appendonly', 'no', '--bind', '127.0.0.1'], {}, 'Ready to accept connections')
  await redis.started
  const outbox = join(t.testdir(), 'outbox.jsonl')
  const lines = () => existsSync(outbox) ? readFileSync(outbox, 'utf8').trim().split('\n').map((l) => JSON.parse(l)) : []

  const app = await build({ redisUrl })
  t.teardown(() => app.close())

  // Queued while no worker runs: the job waits in Redis.
  const signup = await app.inject({ method: 'POST', url: '/signup', payload: { email: 'ada@example.com' } })
  t.equal(signup.statusCode, 202)
  const first = await app.inject({ method: 'POST', url: '/reports/7' })
  const again = await app.inject({ method: 'POST', url: '/reports/7' })
  t.same(first.json(), { jobId: 'report-7' })
  t.same(again.json(), { jobId: 'report-7' }, 'one job per report')

  const worker = run(t, process.execPath, [fileURLToPath(new URL('./worker.js', import.meta.url))], { REDIS_URL: redisUrl, OUTBOX: outbox, LOG_LEVEL: 'info' }, 'durable queue')
  await worker.started
  await until(() => lines().length === 2)
  const byTask = Object.fromEntries(lines().map((l) => [l.task, l]))
  t.match(byTask['email.welcome'], { to: 'ada@example.com', signedUpAt: /^\d{4}-\d\d-\d\dT/, pid: worker.proc.pid })
  t.match(byTask.report, { reportId: '7', pid: worker.proc.pid })
  t.not(worker.proc.pid, process.pid, 'the jobs ran in the worker process, not in the HTTP one')

  // SIGTERM: the worker closes and exits 0.
  worker.proc.kill('SIGTERM')
  t.equal(await worker.exited, 0)
})
