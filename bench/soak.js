// npm run soak: a long run of mixed load, to show that memory, threads,
// handles and temporary files stay flat (issue 7, item 5).
//
//   node bench/soak.js [--minutes N] [--pool piscina|tinypool] [--rate R]
//                      [--concurrency C] [--interval S] [--threads T] [--churn S] [--out FILE]
//
// --minutes   minutes of load per pool (default 20). Without --pool both pools
//             run, one after the other, each for the full time (so the
//             default run takes a little over 40 minutes): a leak needs time
//             to show, and halving each pool's share would halve what the
//             test can see.
// --rate      requests started per second (default 80), at most `concurrency`
//             (default 8) in flight. A soak runs below saturation: at
//             saturation, background tasks (which wait whenever a request
//             does) pile up by design, and their backlog would hide a leak or
//             pass for one. 80/s keeps 2 threads on a shared 2-core machine
//             about half busy.
// --interval  seconds between samples (default: the minutes, clamped to 1..5 s).
// --churn     seconds between deliberate thread deaths, alternately a
//             process.exit() and a timeout (default 20; 0: none).
//
// Each pool gets a fresh server process (bench/servers/soak.js) whose TMPDIR
// is a fresh directory; this process is the load generator: requests of
// kinds drawn by weight (KINDS below), started at a steady rate over at most
// `concurrency` connections, a share of them aborted by destroying the socket
// while the request is queued or running, mid-stream or mid-upload. The
// server samples itself every `interval` s. Before the load, a pass of each
// kind and a quiet wait give the baseline; after it, the load stops, and the
// server must come back to the baseline. Verdicts: bench/soak-report.js.
// Results: bench/results/soak.json.
import { execFileSync, fork } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import os from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { verdicts } from './soak-report.js'

const here = (path) => fileURLToPath(new URL(path, import.meta.url))
const serverFile = here('./servers/soak.js')

const { values: flags } = parseArgs({
  options: {
    minutes: { type: 'string', default: '20' },
    pool: { type: 'string' },
    concurrency: { type: 'string', default: '8' },
    rate: { type: 'string', default: '80' },
    interval: { type: 'string' },
    threads: { type: 'string', default: '2' },
    churn: { type: 'string', default: '20' },
    out: { type: 'string', default: here('./results/soak.json') },
    help: { type: 'boolean', short: 'h' }
  }
})
if (flags.help || (flags.pool !== undefined && !['piscina', 'tinypool'].includes(flags.pool))) {
  console.log('usage: node bench/soak.js [--minutes N] [--pool piscina|tinypool] [--rate R] [--concurrency C] [--interval S] [--threads T] [--churn S] [--out FILE]')
  process.exit(flags.help ? 0 : 1)
}
const minutes = Number(flags.minutes)
const settings = {
  minutes,
  pools: flags.pool === undefined ? ['piscina', 'tinypool'] : [flags.pool],
  concurrency: Number(flags.concurrency),
  rate: Number(flags.rate),
  interval: Number(flags.interval ?? Math.min(5, Math.max(1, minutes))),
  threads: Number(flags.threads),
  churn: Number(flags.churn),
  /** A request not answered within this many ms counts as hung. */
  requestTimeout: 30_000,
  /** How long the server may take to come back to its baseline once the load stops. */
  drainTimeout: 30_000
}

function log (line) {
  console.log(`[${new Date().toISOString().slice(11, 19)}] ${line}`)
}

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

async function startServer (pool, tmp) {
  const child = fork(serverFile, [pool, String(settings.threads)], {
    execArgv: ['--expose-gc'],
    env: { ...process.env, TMPDIR: tmp },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc']
  })
  const kill = () => child.kill('SIGKILL')
  process.once('exit', kill)
  child.once('exit', () => process.off('exit', kill))
  const samples = []
  const waiting = new Map()
  let nextId = 0
  child.on('message', (message) => {
    if (message.type !== 'sample') return
    if (message.id === undefined) samples.push(message.sample)
    else waiting.get(message.id)?.(message.sample)
  })
  const [listening] = await Promise.race([
    once(child, 'message'),
    once(child, 'exit').then(([code, signal]) => { throw new Error(`the soak server ended (${signal ?? code}) before it listened`) })
  ])
  return {
    port: listening.port,
    samples,
    start: (interval) => child.send({ type: 'start', interval }),
    quiet: () => child.send({ type: 'quiet' }),
    sample () {
      const id = nextId++
      return new Promise((resolve, reject) => {
        if (child.exitCode !== null || child.signalCode !== null) {
          reject(new Error(`the soak server ended (${child.signalCode ?? child.exitCode})`))
          return
        }
        const onExit = (code, signal) => reject(new Error(`the soak server ended (${signal ?? code}) during the run`))
        child.once('exit', onExit)
        waiting.set(id, (sample) => {
          waiting.delete(id)
          child.off('exit', onExit)
          resolve(sample)
        })
        child.send({ type: 'sample', id })
      })
    },
    async stop () {
      if (child.exitCode !== null || child.signalCode !== null) return String(child.signalCode ?? child.exitCode)
      const exited = once(child, 'exit')
      child.send({ type: 'stop' })
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000)
      const [code, signal] = await exited
      clearTimeout(timer)
      return String(signal ?? code)
    }
  }
}

/** Whether the server is back to rest: nothing queued or running, no temporary file. */
function idle (s) {
  return s.stats.queued === 0 && s.stats.running === 0 && s.stats.background.queued === 0 &&
    s.stats.background.running === 0 && s.tmpFiles === 0
}

const sameResources = (a, b) => JSON.stringify(Object.entries(a).sort()) === JSON.stringify(Object.entries(b).sort())

/** Samples, 250 ms apart, that must agree before the server counts as settled: 2 s (a thread replaced at the end of the warm-up may take that long to start). */
const STEADY_SAMPLES = 9

/**
 * Samples every 250 ms until the server is idle and the last STEADY_SAMPLES
 * samples have the same resources and threads (and, when given, the
 * baseline's); or until `timeout` ms have passed. Returns the samples taken
 * and whether it settled.
 */
async function settle (server, timeout, baseline) {
  const taken = []
  const deadline = performance.now() + timeout
  for (;;) {
    const s = await server.sample()
    taken.push(s)
    const recent = taken.slice(-STEADY_SAMPLES)
    const steady = recent.length === STEADY_SAMPLES && recent.every((r) => sameResources(r.resources, s.resources) && r.osThreads === s.osThreads && idle(r))
    const home = baseline === undefined || (sameResources(baseline.resources, s.resources) && baseline.osThreads === s.osThreads)
    if (idle(s) && steady && home) return { samples: taken, settled: true }
    if (performance.now() > deadline) return { samples: taken, settled: false }
    await sleep(250)
  }
}

// ---------------------------------------------------------------------------
// The load
// ---------------------------------------------------------------------------

function multipart (parts) {
  const boundary = `----soak${randomBytes(8).toString('hex')}`
  const chunks = []
  for (const part of parts) {
    const disposition = part.filename === undefined
      ? `form-data; name="${part.name}"`
      : `form-data; name="${part.name}"; filename="${part.filename}"\r\nContent-Type: application/octet-stream`
    chunks.push(Buffer.from(`--${boundary}\r\nContent-Disposition: ${disposition}\r\n\r\n`), Buffer.from(part.data), Buffer.from('\r\n'))
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`))
  return { body: Buffer.concat(chunks), contentType: `multipart/form-data; boundary=${boundary}` }
}

const pick = (list) => list[Math.floor(Math.random() * list.length)]
const FILE_SIZES = [512, 4096, 48 * 1024, 100 * 1024, 300 * 1024]

/**
 * One HTTP request on its own terms. Resolves (never rejects) with what
 * happened: { status, code?, body?, size, ms } or { error, cut? } or
 * { aborted } or { hung }. `abort`: 'after' ms (destroy the socket then,
 * answered or not), 'firstChunk' (destroy at the first body bytes), or
 * 'midBody' (send part of the body, then destroy).
 */
function send (port, agent, { method = 'GET', path, headers = {}, body, keepBody = true, abort }) {
  return new Promise((resolve) => {
    const started = performance.now()
    let res
    let done = false
    let size = 0
    const chunks = []
    const finish = (outcome) => {
      if (done) return
      done = true
      clearTimeout(timer)
      resolve({ ms: performance.now() - started, status: res?.statusCode, size, ...outcome })
    }
    const req = http.request({ host: '127.0.0.1', port, method, path, headers, agent: abort === undefined ? agent : false })
    const timer = setTimeout(() => {
      finish({ hung: true })
      req.destroy()
    }, settings.requestTimeout)
    const abortNow = () => {
      finish({ aborted: true })
      req.destroy()
    }
    req.on('response', (r) => {
      res = r
      // An error's body is kept even when the body is not (`keepBody: false`):
      // its code tells a deliberate thread death's collateral from a fault.
      const keep = keepBody || r.statusCode >= 400
      r.on('data', (chunk) => {
        size += chunk.length
        if (keep) chunks.push(chunk)
        if (abort?.firstChunk) abortNow()
      })
      r.on('end', () => {
        const text = keep ? Buffer.concat(chunks).toString() : undefined
        let code
        if (r.statusCode >= 400 && text !== undefined) {
          try {
            code = JSON.parse(text).code
          } catch {}
        }
        finish({ body: text, code })
      })
      r.on('error', (err) => finish({ error: err.code ?? err.message, cut: true }))
    })
    req.on('error', (err) => finish({ error: err.code ?? err.message, cut: res !== undefined }))
    req.on('close', () => finish(res === undefined ? { error: 'closed before a response' } : { error: 'closed mid-response', cut: true }))
    if (abort?.after !== undefined) setTimeout(abortNow, abort.after)
    if (body === undefined) {
      req.end()
    } else if (abort?.midBody !== undefined) {
      // Part of the body, then the client goes.
      req.write(body.subarray(0, abort.midBody))
      setTimeout(abortNow, Math.random() * 30)
    } else {
      req.end(body)
    }
  })
}

const json = (value) => ({ method: 'POST', headers: { 'content-type': 'application/json' }, body: Buffer.from(JSON.stringify(value)) })

/**
 * The kinds of request, their weights, what each sends and what answer it
 * expects (`expect`: statuses; `check`: the body is right). `abort` kinds
 * destroy their socket on purpose.
 */
const KINDS = {
  ping: { weight: 8, make: () => ({ path: '/ping' }), expect: [200], check: (r) => JSON.parse(r.body).pong === true },
  json: {
    weight: 24,
    make: () => {
      const echo = randomBytes(6).toString('hex')
      return { ...json({ echo, ms: 1 + Math.random() * 2, items: 32 }), path: '/json', echo }
    },
    expect: [200],
    check: (r, req) => {
      const body = JSON.parse(r.body)
      return body.echo === req.echo && body.items.length === 32
    }
  },
  jsonFail: { weight: 3, make: () => ({ ...json({ fail: pick([422, 500]) }), path: '/json' }), expect: [422, 500] },
  stream: {
    weight: 14,
    make: () => {
      const chunks = 1 + Math.floor(Math.random() * 32)
      return { path: `/stream?chunks=${chunks}&size=16384`, keepBody: false, bytes: chunks * 16384 }
    },
    expect: [200],
    check: (r, req) => r.size === req.bytes
  },
  upload: {
    weight: 14,
    make: () => {
      const files = Array.from({ length: 1 + Math.floor(Math.random() * 3) }, (_, i) => ({ name: `f${i}`, filename: `file ${i}.bin`, data: Buffer.alloc(pick(FILE_SIZES), i) }))
      const { body, contentType } = multipart([{ name: 'note', data: 'soak' }, ...files])
      return { method: 'POST', path: '/upload', headers: { 'content-type': contentType }, body, sizes: files.map((f) => f.data.length) }
    },
    expect: [200],
    check: (r, req) => {
      const body = JSON.parse(r.body)
      // By name: request.files lists files as they finish, so a spooled file may come after a smaller one that followed it.
      const sizes = Object.fromEntries(body.files.map((f) => [f.name, f.size]))
      return body.fields.note === 'soak' && body.files.length === req.sizes.length && req.sizes.every((size, i) => sizes[`f${i}`] === size)
    }
  },
  uploadLimit: {
    weight: 2,
    make: () => {
      const { body, contentType } = multipart([{ name: 'big', filename: 'big.bin', data: Buffer.alloc(600 * 1024) }])
      return { method: 'POST', path: '/upload', headers: { 'content-type': contentType }, body }
    },
    expect: [413]
  },
  uploadMalformed: {
    weight: 1,
    make: () => {
      const { body, contentType } = multipart([{ name: 'f', filename: 'f.bin', data: Buffer.alloc(20_000) }])
      // Cut before the closing boundary: the body ends early.
      return { method: 'POST', path: '/upload', headers: { 'content-type': contentType }, body: body.subarray(0, body.length - 40) }
    },
    expect: [400]
  },
  background: { weight: 6, make: () => ({ method: 'POST', path: '/background?n=3' }), expect: [200], check: (r) => JSON.parse(r.body).queued === 3 },
  bgWorker: { weight: 6, make: () => ({ method: 'POST', path: '/bg-worker?n=2' }), expect: [200], check: (r) => JSON.parse(r.body).queued === 2 },
  // Aborted: queued or running (a 100 ms handler, the client leaves within 120 ms) ...
  abortJson: { weight: 7, abort: true, make: () => ({ ...json({ ms: 100 }), path: '/json', abort: { after: Math.random() * 120 } }) },
  // ... mid-stream (32 MiB asked for, the client leaves at the first bytes) ...
  abortStream: { weight: 5, abort: true, make: () => ({ path: '/stream?chunks=2048&size=16384', keepBody: false, abort: { firstChunk: true } }) },
  // ... mid-upload (a third of a 384 KiB file sent).
  abortUpload: {
    weight: 5,
    abort: true,
    make: () => {
      const { body, contentType } = multipart([{ name: 'f', filename: 'f.bin', data: Buffer.alloc(384 * 1024) }])
      return { method: 'POST', path: '/upload', headers: { 'content-type': contentType, 'content-length': String(body.length) }, body, abort: { midBody: 128 * 1024 } }
    }
  },
  // Deliberate thread deaths (not drawn by weight: one every `churn` seconds).
  crash: { weight: 0, make: () => ({ path: '/crash' }), expect: [500] },
  hang: { weight: 0, make: () => ({ path: '/hang' }), expect: [503] }
}

const drawn = Object.entries(KINDS).filter(([, k]) => k.weight > 0)
const totalWeight = drawn.reduce((sum, [, k]) => sum + k.weight, 0)
function drawKind () {
  let x = Math.random() * totalWeight
  for (const [name, kind] of drawn) {
    x -= kind.weight
    if (x < 0) return name
  }
  return drawn[0][0]
}

/** Codes a 5xx answer may carry because of a deliberate thread death (its other tasks die with it). */
const COLLATERAL_CODE = 'FST_BLOCKING_WORKER_CRASHED'

function newCounts () {
  return Object.fromEntries(Object.keys(KINDS).map((k) => [k, {
    sent: 0,
    statuses: {},
    codes: {},
    aborted: 0,
    /** Answered before the client could leave (abort kinds). */
    answeredFirst: 0,
    /** Failures a deliberate thread death explains: a 500 with COLLATERAL_CODE, a stream cut after its head. */
    collateral: 0,
    unexpected: 0,
    unexpectedSamples: [],
    errors: {},
    hung: 0,
    badBody: 0,
    latencies: []
  }]))
}

function record (counts, name, request, r) {
  const kind = KINDS[name]
  const c = counts[name]
  c.sent++
  if (r.hung) {
    c.hung++
    return
  }
  if (r.aborted) {
    c.aborted++
    return
  }
  if (r.status !== undefined && !r.cut) {
    c.statuses[r.status] = (c.statuses[r.status] ?? 0) + 1
    if (r.code !== undefined) c.codes[r.code] = (c.codes[r.code] ?? 0) + 1
    if (kind.abort) {
      c.answeredFirst++
      if (r.status >= 500 && r.code !== COLLATERAL_CODE) note(c, `${r.status} ${r.code ?? ''}`)
      return
    }
    c.latencies.push(r.ms)
    if (kind.expect.includes(r.status)) {
      if (r.status === 200 && kind.check !== undefined) {
        let ok = false
        try {
          ok = kind.check(r, request)
        } catch {}
        if (!ok) c.badBody++
      }
    } else if (r.status === 500 && r.code === COLLATERAL_CODE && settings.churn > 0) {
      c.collateral++
    } else {
      note(c, `${r.status} ${r.code ?? ''}`)
    }
    return
  }
  c.errors[r.error] = (c.errors[r.error] ?? 0) + 1
  // A stream whose thread died after its first chunk is cut (its head said 200).
  if (r.cut && r.status === 200 && settings.churn > 0 && (name === 'stream' || name === 'abortStream')) {
    c.collateral++
  } else {
    note(c, r.error)
  }
}

function note (c, what) {
  c.unexpected++
  if (c.unexpectedSamples.length < 5) c.unexpectedSamples.push(what)
}

async function runLoad (port, seconds, counts) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: settings.concurrency })
  const deadline = performance.now() + seconds * 1000
  const one = async (name) => {
    const request = KINDS[name].make()
    record(counts, name, request, await send(port, agent, request))
  }
  // Requests start on a schedule of `rate` per second, shared by the clients;
  // a client whose turn has passed sends at once (the clients bound what is
  // in flight), and a schedule more than a second behind starts again from now.
  let nextAt = performance.now()
  const client = async () => {
    for (;;) {
      const now = performance.now()
      if (nextAt < now - 1000) nextAt = now
      const at = nextAt
      nextAt += 1000 / settings.rate
      if (at > now) await sleep(at - now)
      if (performance.now() >= deadline) return
      await one(drawKind())
    }
  }
  let churns = 0
  const churn = async () => {
    if (settings.churn <= 0) return
    while (performance.now() + settings.churn * 1000 < deadline) {
      await sleep(settings.churn * 1000)
      await one(churns++ % 2 === 0 ? 'crash' : 'hang')
    }
  }
  await Promise.all([...Array.from({ length: settings.concurrency }, client), churn()])
  agent.destroy()
  return churns
}

// ---------------------------------------------------------------------------
// A pool's run
// ---------------------------------------------------------------------------

function percentiles (values) {
  if (values.length === 0) return { p50: null, p99: null, max: null }
  values.sort((a, b) => a - b)
  const at = (p) => values[Math.min(values.length - 1, Math.ceil(p / 100 * values.length) - 1)]
  return { p50: at(50), p99: at(99), max: values.at(-1) }
}

async function soak (pool) {
  const tmp = mkdtempSync(join(os.tmpdir(), 'fastify-blocking-soak-'))
  const server = await startServer(pool, tmp)
  try {
    // Warm-up: each kind once (the thread deaths included), then a quiet wait: the baseline.
    const warm = newCounts()
    const agent = new http.Agent({ keepAlive: true })
    for (const name of Object.keys(KINDS)) {
      const request = KINDS[name].make()
      record(warm, name, request, await send(server.port, agent, request))
    }
    agent.destroy()
    const before = await settle(server, settings.drainTimeout)
    const baseline = before.samples.at(-1)
    log(`${pool}: baseline ${mib(baseline.rss)} MiB RSS, ${baseline.osThreads} OS threads, ${baseline.handles} handles; ${minutes} min of load`)

    server.start(settings.interval * 1000)
    const counts = newCounts()
    const seconds = minutes * 60
    const progress = setInterval(() => {
      const s = server.samples.at(-1)
      if (s !== undefined) log(`${pool}: ${Math.round(s.t)} s, ${mib(s.rss)} MiB RSS, ${mib(s.heapUsed)} MiB heap, ${s.osThreads} threads, ${s.handles} handles, ${s.tmpFiles} temp files, ${s.stats.completed} tasks done, ${s.stats.queued} queued, ${s.stats.background.queued} background queued`)
    }, Math.max(10_000, seconds * 100))
    const loadStarted = performance.now()
    const churns = await runLoad(server.port, seconds, counts)
    const loadSeconds = (performance.now() - loadStarted) / 1000
    clearInterval(progress)
    server.quiet()

    const drainStarted = performance.now()
    const after = await settle(server, settings.drainTimeout, baseline)
    const drainMs = performance.now() - drainStarted
    const final = after.samples.at(-1)
    const exit = await server.stop()
    const leftover = readdirSync(tmp)
    const requests = {}
    for (const [name, c] of Object.entries(counts)) {
      const { latencies, ...rest } = c
      requests[name] = { ...rest, latency: percentiles(latencies) }
    }
    const result = {
      pool,
      loadSeconds,
      churns,
      baseline,
      samples: server.samples,
      drain: { ms: drainMs, settled: after.settled, samples: after.samples.length },
      final,
      exit,
      leftoverFiles: leftover.length,
      warmup: Object.fromEntries(Object.entries(warm).map(([name, c]) => [name, { statuses: c.statuses, unexpected: c.unexpected }])),
      requests
    }
    return result
  } finally {
    await server.stop()
    rmSync(tmp, { recursive: true, force: true })
  }
}

const mib = (bytes) => (bytes / 2 ** 20).toFixed(1)

function machine () {
  let commit = 'unknown'
  try {
    const git = (...args) => execFileSync('git', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
    commit = git('rev-parse', '--short', 'HEAD') + (git('status', '--porcelain', '--', 'lib', 'workers') === '' ? '' : ' (with uncommitted changes to lib/ or workers/)')
  } catch {}
  const cpus = os.cpus()
  return {
    node: process.version,
    platform: `${os.type()} ${os.release()} ${os.arch()}`,
    cpuModel: cpus[0]?.model ?? 'unknown',
    cpus: cpus.length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    loadAverage: os.loadavg().map((n) => Math.round(n * 100) / 100),
    commit
  }
}

const command = ['npm run soak', ...(process.argv.length > 2 ? ['--', ...process.argv.slice(2)] : [])].join(' ')
log(`soak: ${settings.pools.join(' then ')}, ${minutes} min each, ${settings.rate} requests/s over at most ${settings.concurrency} connections, a sample every ${settings.interval} s`)
const result = { date: new Date().toISOString(), command, settings, machine: machine(), pools: {} }
let failed = false
for (const pool of settings.pools) {
  const run = await soak(pool)
  const checks = verdicts(run, settings)
  run.verdicts = checks
  result.pools[pool] = run
  for (const v of checks) {
    if (!v.pass) failed = true
    log(`${pool}: ${v.pass ? 'PASS' : 'MISS'} ${v.what}: ${v.measured} (goal ${v.goal})`)
  }
}
mkdirSync(join(flags.out, '..'), { recursive: true })
writeFileSync(flags.out, JSON.stringify(result, null, 1) + '\n')
log(`wrote ${flags.out}${failed ? '; some checks missed' : '; every check passed'}`)
process.exitCode = failed ? 1 : 0
