// What the benchmarks and the demo share: a server in a child process, the
// /ping probe in another, and autocannon as the load generator (in the
// calling process). Every run is bounded by its duration.
import { fork, spawn } from 'node:child_process'
import { once } from 'node:events'
import { readdirSync } from 'node:fs'
import os from 'node:os'
import { relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import autocannon from 'autocannon'
import { cpuMeter } from './cpu.js'

const probeFile = fileURLToPath(new URL('./probe.js', import.meta.url))

// Killed with SIGTERM or SIGHUP, exit properly, so that the 'exit' hooks
// below stop the servers this process started.
for (const signal of ['SIGTERM', 'SIGHUP']) process.once(signal, () => process.exit(128 + 15))

/**
 * Starts `node file ...args` and waits for it to print its address
 * (`http://127.0.0.1:PORT`) on stdout.
 */
export async function startServer (file, args = [], { env } = {}) {
  const child = spawn(process.execPath, [file, ...args], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } })
  // Never leave a server behind, even when this process dies of an error.
  const kill = () => child.kill('SIGKILL')
  process.once('exit', kill)
  child.once('exit', () => process.off('exit', kill))
  child.stdout.setEncoding('utf8')
  const url = await new Promise((resolve, reject) => {
    let out = ''
    const onData = (chunk) => {
      out += chunk
      const match = /http:\/\/127\.0\.0\.1:(\d+)/.exec(out)
      if (match === null) return
      child.stdout.off('data', onData)
      child.stdout.resume() // anything printed later is dropped
      child.off('exit', onExit)
      resolve(match[0])
    }
    const onExit = (code, signal) => reject(new Error(`${relative(process.cwd(), file)} ${args.join(' ')} ended (${signal ?? code}) before it listened${out === '' ? '' : `: ${out.trim()}`}`))
    child.stdout.on('data', onData)
    child.once('exit', onExit)
  })
  return {
    url,
    port: Number(new URL(url).port),
    pid: child.pid,
    /** How the server ended, if it did before close(): 'SIGTERM', '1'... */
    get exited () {
      return child.exitCode === null && child.signalCode === null ? undefined : String(child.signalCode ?? child.exitCode)
    },
    async close () {
      if (this.exited !== undefined) return
      const exited = once(child, 'exit')
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(timer)
    }
  }
}

/** The child's next IPC message; rejects if it says { error } or exits first. */
function nextMessage (child) {
  return new Promise((resolve, reject) => {
    const onExit = (code, signal) => reject(new Error(`the probe exited (${signal ?? code})`))
    child.once('exit', onExit)
    child.once('message', (msg) => {
      child.off('exit', onExit)
      if (msg.error !== undefined) reject(new Error(`the probe failed: ${msg.error}`))
      else resolve(msg)
    })
  })
}

/**
 * Forks the probe (see probe.js) and waits until it is connected; `start()`
 * then `stop()` gives its latencies in ms, or `stopWithTimes()` gives
 * { latencies, sentAt } (sentAt[i]: when ping i was sent, ms after start()).
 */
export async function startProbe (port, { path = '/ping', interval = 5 } = {}) {
  const child = fork(probeFile, [String(port), path, String(interval)])
  await nextMessage(child)
  return {
    pid: child.pid,
    start: () => child.send('start'),
    async stopWithTimes () {
      child.send('stop')
      const { latencies, sentAt } = await nextMessage(child)
      return { latencies, sentAt }
    },
    async stop () {
      return (await this.stopWithTimes()).latencies
    }
  }
}

/**
 * The slowest ping of each `bucketMs` of the measured window, by the time it
 * was sent: { bucketMs, max } with max[i] the worst latency (ms, to the
 * microsecond) of the pings sent in [i * bucketMs, (i + 1) * bucketMs), null
 * for a bucket with none. Enough for a chart, small enough for the JSON.
 */
export function timeline (latencies, sentAt, bucketMs) {
  const max = []
  for (let i = 0; i < latencies.length; i++) {
    const bucket = Math.floor(sentAt[i] / bucketMs)
    while (max.length <= bucket) max.push(null)
    max[bucket] = Math.max(max[bucket] ?? 0, Math.round(latencies[i] * 1000) / 1000)
  }
  return { bucketMs, max }
}

/** Gives every thread of process `pid` nice value `nice` (Linux: a nice value is per thread); returns the values they had. */
export function renice (pid, nice) {
  const before = new Map()
  for (const tid of readdirSync(`/proc/${pid}/task`).map(Number)) {
    try {
      before.set(tid, os.getPriority(tid))
      os.setPriority(tid, nice)
    } catch (err) {
      if (err.code !== 'ESRCH') throw err // a thread that ended meanwhile
    }
  }
  return before
}

/**
 * Runs `fn` with every thread of this process (the load generator) at nice
 * value `nice`, then puts them back. Undefined: leaves them alone. Children
 * started meanwhile would inherit the nice value, so start servers and the
 * probe outside. Lowering the nice value back needs root (CAP_SYS_NICE).
 */
export async function atNice (nice, fn) {
  if (nice === undefined) return fn()
  const mine = os.getPriority(process.pid)
  const before = renice(process.pid, nice)
  try {
    return await fn()
  } finally {
    try {
      for (const tid of readdirSync('/proc/self/task').map(Number)) os.setPriority(tid, before.get(tid) ?? mine)
    } catch (err) {
      // Said, not thrown: a throw here would replace the run's own outcome.
      console.error(`could not restore the load generator's priority (${err.message}): running the load generator at a lower priority needs root`)
      process.exitCode = 1
    }
  }
}

/**
 * Runs autocannon against `url` for `duration` seconds and returns req/s,
 * the latency of every response (ms, full precision: autocannon's own
 * histogram rounds to whole ms) and the count of errors and non-2xx answers.
 */
export function load ({ url, connections, duration, pipelining = 1 }) {
  const latencies = []
  return new Promise((resolve, reject) => {
    const instance = autocannon({ url, connections, duration, pipelining }, (err, result) => {
      if (err) return reject(err)
      resolve({
        requestsPerSec: result.requests.total / result.duration,
        requests: result.requests.total,
        errors: result.errors + result.timeouts,
        non2xx: result.non2xx,
        latencies
      })
    })
    instance.on('response', (client, statusCode, bytes, responseTime) => latencies.push(responseTime))
  })
}

/** p50, p99 and max of a list of numbers (the list is sorted in place). */
export function percentiles (values) {
  if (values.length === 0) return { p50: NaN, p99: NaN, max: NaN, count: 0 }
  values.sort((a, b) => a - b)
  const at = (p) => values[Math.min(values.length - 1, Math.ceil(p / 100 * values.length) - 1)]
  return { p50: at(50), p99: at(99), max: values[values.length - 1], count: values.length }
}

/**
 * One measured run: `warmup` seconds of load, then `duration` seconds of load
 * with the /ping probe running beside it (when `probe` is set). `cpu` says
 * how many cores each party used meanwhile (see cpu.js).
 * `probe.nice`: the probe's nice value (below this process's needs root).
 * `probe.timeline` (ms): also keep the slowest ping of each such slice of the
 * measured window (ping.timeline, see timeline()). `loadNice`: the nice value
 * of the load generator (this process) while it sends load (see atNice());
 * the probe, started outside, keeps this process's usual priority.
 */
export async function measure ({ server, path, connections, duration, warmup = 0, probe, pipelining, loadNice }) {
  const url = server.url + path
  if (warmup > 0) await atNice(loadNice, () => load({ url, connections, duration: warmup, pipelining }))
  const pinger = probe === undefined ? undefined : await startProbe(server.port, probe)
  if (probe?.nice !== undefined) renice(pinger.pid, probe.nice)
  const meter = cpuMeter({ server: server.pid, probe: pinger?.pid })
  pinger?.start()
  const result = await atNice(loadNice, () => load({ url, connections, duration, pipelining }))
  const cpu = meter()
  const pings = pinger === undefined ? undefined : await pinger.stopWithTimes()
  const slices = probe?.timeline === undefined || pings === undefined ? undefined : timeline(pings.latencies, pings.sentAt, probe.timeline)
  return {
    requestsPerSec: result.requestsPerSec,
    requests: result.requests,
    cpu,
    errors: result.errors,
    non2xx: result.non2xx,
    latency: percentiles(result.latencies),
    ping: pings === undefined ? undefined : { ...percentiles(pings.latencies), ...(slices === undefined ? {} : { timeline: slices }) }
  }
}

/** Latencies (ms) of `path` sent back to back over one connection for `seconds`, with no other load. */
export async function unloaded (server, path, seconds) {
  const probe = await startProbe(server.port, { path, interval: 0 })
  probe.start()
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000))
  return percentiles(await probe.stop())
}
