// The server of the soak test (bench/soak.js), forked with an IPC channel:
//
//   node --expose-gc bench/servers/soak.js <piscina|tinypool> [threads]
//
// Routes:
//   GET  /ping        inline
//   POST /json        blocking: CPU for `ms`, JSON back; `fail` throws (deliberate 4xx/500)
//   GET  /stream      blocking generator: `chunks` chunks of `size` bytes
//   POST /upload      blocking, multipart parsed in the worker (files above 64 KiB spooled)
//   POST /background  inline handler, `n` reply.background() calls with Buffer arguments
//   POST /bg-worker   blocking handler, `n` reply.background() calls from the worker
//   GET  /crash       blocking: process.exit() in the worker (deliberate 500)
//   GET  /hang        blocking with a 200 ms timeout, never stops (deliberate 503)
//
// Its temporary files go to os.tmpdir(): the parent sets TMPDIR to a fresh
// directory, so every file there is ours. It sends { type: 'listening', port }
// once it listens, a sample (see sample()) every `interval` ms once told
// { type: 'start', interval } until { type: 'quiet' }, one at once on
// { type: 'sample', id }, and closes on { type: 'stop' }.
import { readFileSync } from 'node:fs'
import { readdir } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { performance } from 'node:perf_hooks'
import { Writable } from 'node:stream'
import Fastify from 'fastify'
import blocking from 'fastify-blocking'
import { backgroundFromWorker, chore, crash, hang, json, stream, upload } from './soak-functions.js'

const [pool, threadsArg = '2'] = process.argv.slice(2)
const threads = Number(threadsArg)

/** Log lines at warn and above, by level and message: a failing background task or a dropped one shows here. */
const logged = {}
const logStream = new Writable({
  write (chunk, _encoding, callback) {
    for (const line of chunk.toString().split('\n')) {
      if (line === '') continue
      const { level, msg } = JSON.parse(line)
      const key = `${level} ${String(msg).slice(0, 120)}`
      logged[key] = (logged[key] ?? 0) + 1
    }
    callback()
  }
})

const app = Fastify({ logger: { level: 'warn', stream: logStream } })
await app.register(blocking, {
  pool,
  maxThreads: threads,
  minThreads: threads,
  idleTimeout: 600_000,
  multipart: { limits: { fileSize: 512 * 1024, files: 4, fields: 16, parts: 24 }, spoolThreshold: 64 * 1024 }
})

app.get('/ping', async () => ({ pong: true }))
app.post('/json', { blocking: true }, json)
app.get('/stream', { blocking: true }, stream)
app.post('/upload', { blocking: true }, upload)
app.post('/background', (request, reply) => {
  const n = Number(request.query.n ?? 3)
  // Buffer.alloc() owns its memory: moved to the worker, not copied.
  for (let i = 0; i < n; i++) reply.background(chore, Buffer.alloc(4096, i), 1)
  return { queued: n }
})
app.post('/bg-worker', { blocking: true }, backgroundFromWorker)
app.get('/crash', { blocking: true }, crash)
app.get('/hang', { blocking: { timeout: 200 } }, hang)

function osThreads () {
  try {
    return Number(/^Threads:\s+(\d+)/m.exec(readFileSync('/proc/self/status', 'utf8'))[1])
  } catch {
    return null
  }
}

let startedAt = performance.now()

/** One sample: memory, threads, the pool's stats, active resources by type, files in the temp dir. */
async function sample () {
  // After a full collection (--expose-gc), heapUsed is what the main thread keeps alive.
  globalThis.gc?.()
  const tmpFiles = (await readdir(tmpdir())).length
  const memory = process.memoryUsage()
  const resources = {}
  for (const type of process.getActiveResourcesInfo()) resources[type] = (resources[type] ?? 0) + 1
  const stats = app.blocking.stats()
  return {
    t: (performance.now() - startedAt) / 1000,
    rss: memory.rss,
    heapUsed: memory.heapUsed,
    external: memory.external,
    arrayBuffers: memory.arrayBuffers,
    osThreads: osThreads(),
    resources,
    handles: Object.values(resources).reduce((a, b) => a + b, 0),
    tmpFiles,
    stats: {
      threads: stats.threads,
      queued: stats.queued,
      running: stats.running,
      completed: stats.completed,
      failed: stats.failed,
      background: {
        queued: stats.background.queued,
        running: stats.background.running,
        completed: stats.background.completed,
        failed: stats.background.failed
      }
    },
    logged: { ...logged }
  }
}

let timer
process.on('message', async (message) => {
  switch (message.type) {
    case 'start':
      startedAt = performance.now()
      clearInterval(timer)
      timer = setInterval(async () => process.send({ type: 'sample', sample: await sample() }), message.interval)
      break
    case 'quiet':
      clearInterval(timer)
      break
    case 'sample':
      process.send({ type: 'sample', id: message.id, sample: await sample() })
      break
    case 'stop':
      clearInterval(timer)
      await app.close()
      process.exit(0)
  }
})
process.on('disconnect', () => process.exit(0)) // the parent is gone

await app.listen({ host: '127.0.0.1', port: 0 })
process.send({ type: 'listening', port: app.server.address().port })
