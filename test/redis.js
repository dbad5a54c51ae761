// For the durable queue's tests: a redis-server of the test's own on a free
// port of 127.0.0.1 (no persistence), worker processes, and what they wrote.
import { spawn } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Redis } from 'ioredis'

export const tasksFile = fileURLToPath(new URL('./fixtures/durable.js', import.meta.url))
const repoRoot = fileURLToPath(new URL('..', import.meta.url))
const bin = join(repoRoot, 'dist/bin/fastify-blocking-worker.js')

function freePort () {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

/** Resolves when `predicate(text)` holds for what `stream` has written, rejects if the process exits first. */
function waitForOutput (proc, stream, predicate, what, timeout = 15_000) {
  return new Promise((resolve, reject) => {
    let text = ''
    const timer = setTimeout(() => done(new Error(`timed out waiting for ${what}: ${text.slice(-2000)}`)), timeout)
    const onData = (chunk) => {
      text += chunk
      if (predicate(text)) done()
    }
    const onExit = (code, signal) => done(new Error(`exited (${code ?? signal}) before ${what}: ${text.slice(-2000)}`))
    function done (err) {
      clearTimeout(timer)
      stream.removeListener('data', onData)
      proc.removeListener('exit', onExit)
      if (err) reject(err)
      else resolve(text)
    }
    stream.on('data', onData)
    proc.once('exit', onExit)
  })
}

/** A redis-server of this test's own, stopped at its end. */
export async function startRedis (t) {
  const port = await freePort()
  let proc
  const redis = {
    port,
    url: `redis://127.0.0.1:${port}`,
    async start () {
      proc = spawn('redis-server', ['--port', String(port), '--save', '', '--appendonly', 'no', '--bind', '127.0.0.1'], { stdio: ['ignore', 'pipe', 'pipe'] })
      proc.stdout.setEncoding('utf8')
      await waitForOutput(proc, proc.stdout, (text) => text.includes('Ready to accept connections'), 'redis-server to start')
    },
    /** Stops it (its data is gone: it keeps none). */
    async stop () {
      if (proc === undefined || proc.exitCode !== null || proc.signalCode !== null) return
      const exited = new Promise((resolve) => proc.once('exit', resolve))
      proc.kill('SIGCONT')
      proc.kill('SIGKILL')
      await exited
    },
    /** Freezes it: connections stay open and nothing answers. */
    pause () { proc.kill('SIGSTOP') },
    resume () { proc.kill('SIGCONT') },
    /** A client for the test's own checks, closed at the test's end. */
    client () {
      const client = new Redis(port, '127.0.0.1', { maxRetriesPerRequest: null })
      t.teardown(() => client.disconnect())
      return client
    }
  }
  await redis.start()
  t.teardown(() => redis.stop())
  return redis
}

/** The clients connected to Redis now, but the asking one, as `CLIENT LIST` gives them. */
export async function otherClients (client) {
  const list = await client.client('LIST')
  const me = await client.client('ID')
  return list.trim().split('\n').filter((line) => !line.startsWith(`id=${me} `))
}

/**
 * The task module copied to another absolute path, under the same path from
 * its app's root (a directory with a package.json), with fastify-blocking
 * reachable from it as an installed package. Returns the copy's path.
 */
export function copyTasks (t) {
  const dir = mkdtempSync(join(tmpdir(), 'fastify-blocking-durable-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'copied-app', private: true, type: 'module' }))
  mkdirSync(join(dir, 'node_modules'))
  symlinkSync(repoRoot, join(dir, 'node_modules', 'fastify-blocking'), 'dir')
  const copy = join(dir, relative(repoRoot, tasksFile))
  mkdirSync(dirname(copy), { recursive: true })
  cpSync(tasksFile, copy)
  return copy
}

/**
 * A fastify-blocking-worker process; `ready` resolves once it runs jobs.
 * `lines()` parses what it has logged so far.
 */
export function startWorker (t, redis, { tasks = [tasksFile], args = [], env = {} } = {}) {
  const proc = spawn(process.execPath, [bin, '--tasks', ...tasks, '--connection', redis.url, '--threads', '1', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, LOG_LEVEL: 'debug', ...env }
  })
  proc.stdout.setEncoding('utf8')
  proc.stderr.setEncoding('utf8')
  let out = ''
  let err = ''
  proc.stdout.on('data', (chunk) => { out += chunk })
  proc.stderr.on('data', (chunk) => { err += chunk })
  const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })))
  t.teardown(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL')
      await exited
    }
  })
  const ready = waitForOutput(proc, proc.stdout, (text) => text.includes('durable queue'), 'the worker to start')
  // A test that expects the worker to fail at startup awaits `exited`, not `ready`.
  ready.catch(() => {})
  return {
    proc,
    exited,
    ready,
    lines: () => out.trim().split('\n').filter(Boolean).map((line) => JSON.parse(line)),
    stderr: () => err
  }
}

/** The JSON lines a task fixture appended to `file` so far. */
export function notes (file) {
  if (!existsSync(file)) return []
  return readFileSync(file, 'utf8').trim().split('\n').filter(Boolean).map((line) => JSON.parse(line))
}

/**
 * BullMQ seen from the test: the queue, its events (`stalled` counts every
 * stall any worker saw), and a way to wait for a job's state.
 */
export async function bull (t, redis, name = 'fastify-blocking') {
  const { Queue, QueueEvents } = await import('bullmq')
  const queue = new Queue(name, { connection: redis.client() })
  const events = new QueueEvents(name, { connection: redis.client() })
  const stalled = []
  events.on('stalled', ({ jobId }) => stalled.push(jobId))
  await events.waitUntilReady()
  t.teardown(async () => {
    await events.close()
    await queue.close()
  })
  return {
    queue,
    events,
    stalled,
    /** Resolves to the job once it is in one of `states`; polls with a deadline. */
    async settled (id, states = ['completed', 'failed'], timeout = 20_000) {
      const deadline = Date.now() + timeout
      for (;;) {
        const job = await queue.getJob(id)
        const state = job === undefined ? 'missing' : await job.getState()
        // Read again: the job may have moved between the two reads (the state is read last).
        if (states.includes(state)) return await queue.getJob(id)
        if (Date.now() > deadline) throw new Error(`job ${id} is ${state}, not ${states.join(' or ')}`)
        await new Promise((resolve) => setTimeout(resolve, 20))
      }
    }
  }
}
