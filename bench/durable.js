// Durable background tasks (issue 13): what the `queue` option costs a
// request, how many trivial jobs worker processes get through, and the lock
// test against a plain BullMQ worker that does the CPU work inline.
//
//   node bench/durable.js [--quick]
//
// Everything talks to a redis-server of its own on 127.0.0.1 (a free port, no
// persistence), flushed between runs. Results: bench/results/durable.json;
// docs/benchmarks.md shows them (bench/durable-report.js renders the section).
//
// a) Latency: GET /ok with 10 autocannon connections for 5 s (1 s warmup),
//    four servers (bench/servers/durable.js): the handler alone; plus
//    reply.background(noop) run in process; plus the same with `queue`, where
//    the response waits until Redis has the job; and, as the anchor, a handler
//    that awaits BullMQ's queue.add() itself. 3 rounds, order alternated.
// b) Throughput: 1 and 2 fastify-blocking-worker processes (1 pool thread,
//    concurrency 16 each) started and ready; then JOBS trivial jobs added at
//    once (addBulk); the time until the last one is completed. 3 rounds.
// c) Locks: one job whose task spins on the CPU for 3 x lockDuration
//    (lockDuration 1000 ms, stalledInterval 500 ms), run by a
//    fastify-blocking-worker, then by a plain BullMQ worker process doing the
//    same work inline; a stalled-job checker that takes no job runs in this
//    process. How often the task ran, the stalls seen, how the job ended.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs'
import { createServer } from 'node:net'
import os from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { Queue, QueueEvents, Worker } from 'bullmq'
import { Redis } from 'ioredis'
import { measure, startServer } from './lib/harness.js'

const here = (path) => fileURLToPath(new URL(path, import.meta.url))
const { values: flags } = parseArgs({ options: { quick: { type: 'boolean', default: false } } })
const REPS = flags.quick ? 1 : 3
const DURATION = flags.quick ? 2 : 5
const WARMUP = 1
const CONNECTIONS = 10
const JOBS = flags.quick ? 1000 : 4000
const LOCK = { lockDuration: 1000, stalledInterval: 500 }
const SPIN_MS = 3 * LOCK.lockDuration
const bin = here('../dist/bin/fastify-blocking-worker.js')
const tasks = here('./servers/durable-tasks.js')

function log (line) {
  console.log(`[${new Date().toISOString().slice(11, 19)}] ${line}`)
}

async function freePort () {
  const server = createServer()
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address()
  await new Promise((resolve) => server.close(resolve))
  return port
}

/** A process that prints `ready` on stdout once it works; killed when this process exits. */
async function start (args, ready) {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] })
  const kill = () => child.kill('SIGKILL')
  process.once('exit', kill)
  let out = ''
  await new Promise((resolve, reject) => {
    child.stdout.on('data', (chunk) => {
      out += chunk
      if (out.includes(ready)) resolve()
    })
    child.once('exit', (code) => reject(new Error(`${args.join(' ')} exited (${code}) before it was ready: ${out}`)))
  })
  return {
    async stop () {
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = once(child, 'exit')
      child.kill('SIGTERM')
      await exited
      process.off('exit', kill)
    }
  }
}

const port = await freePort()
const url = `redis://127.0.0.1:${port}`
const redisProcess = spawn('redis-server', ['--port', String(port), '--save', '', '--appendonly', 'no', '--bind', '127.0.0.1'], { stdio: ['ignore', 'pipe', 'inherit'] })
process.once('exit', () => redisProcess.kill('SIGKILL'))
await new Promise((resolve) => redisProcess.stdout.on('data', (chunk) => { if (String(chunk).includes('Ready to accept')) resolve() }))
const redis = new Redis(port, '127.0.0.1', { maxRetriesPerRequest: null })
const queue = new Queue('fastify-blocking', { connection: redis })
const workerArgs = (extra) => [bin, '--tasks', tasks, '--connection', url, '--threads', '1', ...extra]

// a) Latency.
const latency = []
const modes = ['plain', 'background', 'queued', 'bullmq']
for (let rep = 1; rep <= REPS; rep++) {
  for (const mode of rep % 2 === 1 ? modes : [...modes].reverse()) {
    await redis.flushall()
    const server = await startServer(here('./servers/durable.js'), [mode, url])
    const r = await measure({ server, path: '/ok', connections: CONNECTIONS, warmup: WARMUP, duration: DURATION })
    await server.close()
    const jobs = mode === 'queued' || mode === 'bullmq' ? await queue.count() : 0
    latency.push({ rep, mode, requestsPerSec: r.requestsPerSec, p50: r.latency.p50, p99: r.latency.p99, errors: r.errors, non2xx: r.non2xx, jobs })
    log(`latency ${mode}: ${r.requestsPerSec.toFixed(0)} req/s, p50 ${r.latency.p50.toFixed(2)} ms, p99 ${r.latency.p99.toFixed(2)} ms${mode === 'queued' ? `, ${jobs} jobs in Redis` : ''}`)
  }
}

// b) Throughput.
const throughput = []
for (let rep = 1; rep <= REPS; rep++) {
  for (const workers of rep % 2 === 1 ? [1, 2] : [2, 1]) {
    await redis.flushall()
    const running = []
    for (let i = 0; i < workers; i++) running.push(await start(workerArgs(['--concurrency', '16']), 'durable queue'))
    const started = performance.now()
    await queue.addBulk(Array.from({ length: JOBS }, () => ({ name: 'bench.noop', data: { args: [] } })))
    let completed = 0
    while ((completed = await queue.getCompletedCount()) < JOBS) {
      if (performance.now() - started > 120_000) throw new Error(`only ${completed} of ${JOBS} jobs completed in 120 s`)
      await sleep(10)
    }
    const seconds = (performance.now() - started) / 1000
    const failed = await queue.getFailedCount()
    await Promise.all(running.map((w) => w.stop()))
    throughput.push({ rep, workers, jobs: JOBS, seconds, jobsPerSec: JOBS / seconds, failed })
    log(`throughput, ${workers} worker process${workers > 1 ? 'es' : ''}: ${JOBS} jobs in ${seconds.toFixed(2)} s = ${(JOBS / seconds).toFixed(0)} jobs/s`)
  }
}

// c) Locks.
const locks = []
const dir = mkdtempSync(join(os.tmpdir(), 'fastify-blocking-bench-'))
for (let rep = 1; rep <= REPS; rep++) {
  for (const contender of ['fastify-blocking-worker', 'plain BullMQ worker']) {
    await redis.flushall()
    const worker = contender === 'fastify-blocking-worker'
      ? await start(workerArgs(['--lock-duration', String(LOCK.lockDuration), '--stalled-interval', String(LOCK.stalledInterval)]), 'durable queue')
      : await start([here('./servers/durable-plain-worker.js'), url, String(LOCK.lockDuration), String(LOCK.stalledInterval)], 'durable queue')
    // A checker in this process: it finds jobs whose lock expired, and takes none itself.
    const connections = [redis.duplicate(), redis.duplicate()]
    const checker = new Worker('fastify-blocking', null, { connection: connections[0], autorun: false, ...LOCK })
    const events = new QueueEvents('fastify-blocking', { connection: connections[1] })
    await events.waitUntilReady()
    await checker.startStalledCheckTimer()
    let stalls = 0
    events.on('stalled', () => { stalls++ })
    const file = join(dir, `${contender}-${rep}`)
    writeFileSync(file, '')
    const started = performance.now()
    const job = await queue.add('bench.spin', { args: [file, SPIN_MS] })
    let state
    while (!['completed', 'failed'].includes(state = await job.getState())) {
      if (performance.now() - started > 30_000) break
      await sleep(20)
    }
    const seconds = (performance.now() - started) / 1000
    const fresh = await queue.getJob(job.id)
    const runs = readFileSync(file, 'utf8').trim().split('\n').filter(Boolean).length
    await checker.close()
    await events.close()
    for (const connection of connections) connection.disconnect()
    await worker.stop()
    locks.push({ rep, contender, runs, stalls, state, failedReason: fresh?.failedReason ?? null, seconds })
    log(`locks, ${contender}: ran ${runs}x, ${stalls} stall(s), ${state}${fresh?.failedReason ? ` (${fresh.failedReason})` : ''}, ${seconds.toFixed(1)} s`)
  }
}
rmSync(dir, { recursive: true, force: true })

await queue.close()
redis.disconnect()
redisProcess.kill('SIGKILL')

const result = {
  date: new Date().toISOString(),
  command: `node bench/durable.js${flags.quick ? ' --quick' : ''}`,
  machine: {
    node: process.version,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    loadAverage: os.loadavg().map((v) => Number(v.toFixed(2))),
    redis: (await import('node:child_process')).execFileSync('redis-server', ['--version'], { encoding: 'utf8' }).trim(),
    bullmq: JSON.parse(readFileSync(here('../node_modules/bullmq/package.json'), 'utf8')).version
  },
  settings: { reps: REPS, duration: DURATION, warmup: WARMUP, connections: CONNECTIONS, jobs: JOBS, ...LOCK, spinMs: SPIN_MS },
  latency,
  throughput,
  locks
}
if (!existsSync(here('./results/'))) mkdirSync(here('./results/'))
writeFileSync(here('./results/durable.json'), JSON.stringify(result, null, 2) + '\n')
log('wrote bench/results/durable.json')
