// g. Cold threads (issue 15): how slow is the first burst of requests after
// the server starts, and after an idle period longer than idleTimeout, when
// the handler's module is heavy to import? Before: minThreads defaulted to the
// pool's own default (half the cores) and a thread imported a handler's module
// on the first request's time. After: minThreads defaults to maxThreads and
// every thread imports the blocking handler modules before ready() resolves.
// The "before" rows run an older commit's build (BEFORE_COMMIT), made here from
// the repository's history (or taken from BENCH_BEFORE, a built checkout).
import { execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs'
import http from 'node:http'
import os from 'node:os'
import { join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { cpuMeter } from '../lib/cpu.js'
import { percentiles } from '../lib/harness.js'
import { byContender, contenderRows, num, plural, ratio, spread, table, target, targetsTable, times, withSpread } from '../lib/report.js'
import { blockingPools, labels as poolLabels } from './contenders.js'

export const id = 'cold'
export const title = 'Cold threads: the first burst after start and after idle'
// Each run measures before/after side by side and its ratios are taken within
// the round: no extra rounds for disturbed ones (they would double the time).
export const defaults = { warmup: 0, duration: 0, reps: 3, extraRounds: 0 }

const server = fileURLToPath(new URL('../servers/cold.js', import.meta.url))
const repo = fileURLToPath(new URL('../../', import.meta.url))
/**
 * The last commit before the data plane (8a968b1), which made threads import
 * the blocking handler modules when they start and minThreads default to
 * maxThreads.
 */
const BEFORE_COMMIT = 'ea29234'
/** Concurrent requests of a burst, each on a connection of its own. */
const BURST = 16
/** Warm bursts: WARM_SKIP unmeasured, then WARM_MEASURED measured (their latencies pooled). */
const WARM_SKIP = 2
const WARM_MEASURED = 3
/** The pools' idleTimeout (ms), and the idle period: longer, so that idle threads have ended. */
const IDLE_TIMEOUT = 500
const IDLE_MS = 1500
/** A request that takes longer than this fails the run. */
const REQUEST_LIMIT = 30_000

const contenders = blockingPools.flatMap((pool) => [`${pool}-before`, pool])
const labels = Object.fromEntries(blockingPools.flatMap((pool) => [
  [`${pool}-before`, `before (${BEFORE_COMMIT}), ${poolLabels[pool]}`],
  [pool, `after, ${poolLabels[pool]}`]
]))

/** Latencies (ms) of `n` GET requests sent at once, each on a new connection. */
async function burst (port, n, seed) {
  const one = (i) => new Promise((resolve, reject) => {
    const t0 = performance.now()
    const req = http.get({ host: '127.0.0.1', port, path: `/image?seed=${seed + i}`, agent: false, timeout: REQUEST_LIMIT }, (res) => {
      res.resume()
      res.once('end', () => (res.statusCode === 200 ? resolve(performance.now() - t0) : reject(new Error(`GET /image: ${res.statusCode}`))))
    })
    req.once('timeout', () => req.destroy(new Error(`GET /image took more than ${REQUEST_LIMIT} ms`)))
    req.once('error', reject)
  })
  return Promise.all(Array.from({ length: n }, (_, i) => one(i)))
}

async function stats (url) {
  const res = await fetch(`${url}/stats`)
  return res.json()
}

/**
 * A built checkout of BEFORE_COMMIT: BENCH_BEFORE if set, else one made now
 * in a temporary directory (git archive, this checkout's node_modules linked,
 * tsc), removed by the returned cleanup.
 */
function beforeBuild (log) {
  if (process.env.BENCH_BEFORE) return { dir: resolve(process.env.BENCH_BEFORE), cleanup () {} }
  const dir = mkdtempSync(join(os.tmpdir(), 'fastify-blocking-before-'))
  // Also when the run is stopped (harness.js exits on SIGTERM and SIGHUP).
  const cleanup = () => {
    process.off('exit', cleanup)
    rmSync(dir, { recursive: true, force: true })
  }
  process.once('exit', cleanup)
  try {
    log(`cold: building ${BEFORE_COMMIT} for the "before" rows`)
    const archive = execFileSync('git', ['-C', repo, 'archive', BEFORE_COMMIT], { maxBuffer: 1 << 30 })
    execFileSync('tar', ['-x', '-C', dir], { input: archive })
    symlinkSync(join(repo, 'node_modules'), join(dir, 'node_modules'), 'dir')
    execFileSync(process.execPath, [join(repo, 'node_modules/typescript/bin/tsc'), '-p', dir], { stdio: 'inherit' })
    return { dir, cleanup }
  } catch (err) {
    cleanup()
    throw new Error(`could not build ${BEFORE_COMMIT} for the "before" rows (set BENCH_BEFORE to a built checkout of it): ${err.message}`)
  }
}

export async function run (ctx) {
  const before = beforeBuild(ctx.log)
  const plugin = join(before.dir, 'dist/lib/index.js')
  try {
    if (!existsSync(plugin)) throw new Error(`${plugin} is missing: BENCH_BEFORE must be a built checkout`)
    const runs = await ctx.rounds(contenders, async ({ url, port, pid }) => {
      const meter = cpuMeter({ server: pid })
      const start = await stats(url)
      const first = await burst(port, BURST, 0)
      const warmLatencies = []
      for (let i = 0; i < WARM_SKIP + WARM_MEASURED; i++) {
        const latencies = await burst(port, BURST, (i + 1) * BURST)
        if (i >= WARM_SKIP) warmLatencies.push(...latencies)
      }
      const busy = await stats(url)
      await sleep(IDLE_MS)
      const idle = await stats(url)
      const afterIdle = await burst(port, BURST, 0)
      const result = {
        startupMs: start.startupMs,
        threads: { atStart: start.threads, busy: busy.threads, idle: idle.threads },
        first: percentiles(first),
        warm: percentiles(warmLatencies),
        afterIdle: percentiles(afterIdle),
        cpu: meter(),
        errors: 0,
        non2xx: 0
      }
      return {
        ...result,
        summary: `listening after ${num(result.startupMs)} ms; first burst p99 ${num(result.first.p99)} ms, warm ${num(result.warm.p99)} ms, ` +
          `after ${IDLE_MS} ms idle ${num(result.afterIdle.p99)} ms (threads ${start.threads} at start, ${busy.threads} busy, ${idle.threads} idle)`
      }
    }, { server, env: { BENCH_BEFORE_PLUGIN: pathToFileURL(plugin).href, BENCH_IDLE_MS: String(IDLE_TIMEOUT) } })
    return { settings: { burst: BURST, warmMeasured: WARM_MEASURED, idleTimeout: IDLE_TIMEOUT, idleMs: IDLE_MS, beforeCommit: BEFORE_COMMIT }, runs }
  } finally {
    before.cleanup()
  }
}

export function render ({ settings, runs, reps, threads }) {
  const p99 = (phase) => (r) => r[phase].p99
  const rows = contenderRows(runs, contenders, labels, [
    (r) => r.startupMs,
    (r) => r.first.p50,
    (r) => r.first.p99,
    (r) => r.warm.p50,
    (r) => r.warm.p99,
    (r) => r.threads.idle,
    (r) => r.afterIdle.p50,
    (r) => r.afterIdle.p99,
    (r) => r.cpu.other
  ])
  const coldness = (phase) => (r) => r[phase].p99 / r.warm.p99
  const ratios = contenders.map((c) => [
    labels[c],
    withSpread(spread(byContender(runs, c), coldness('first')), times),
    withSpread(spread(byContender(runs, c), coldness('afterIdle')), times)
  ])
  const versus = blockingPools.map((pool) => [
    poolLabels[pool],
    withSpread(ratio(runs, pool, `${pool}-before`, p99('first')), times),
    withSpread(ratio(runs, pool, `${pool}-before`, p99('afterIdle')), times),
    withSpread(ratio(runs, pool, `${pool}-before`, (r) => r.startupMs), times)
  ])
  const JIT = 'the threads have imported the handler\'s module, but its code has never run in them: V8 compiles a function ' +
    'lazily and optimizes it once it is hot, so the first calls of `render()` in each thread take several times as long as ' +
    'warm ones (measured alone in a fresh thread: ~100–200 ms for the first two or three calls, 10–40 ms after). ' +
    'Importing modules at start cannot warm that up; only running the code can.'
  const targets = blockingPools.flatMap((pool) => [
    target({
      what: `${pool}: first burst p99, after vs before`,
      goal: '≤ 0.6x',
      measured: ratio(runs, pool, `${pool}-before`, p99('first')),
      test: (v) => v <= 0.6,
      format: times,
      limit: 'before, the startup check had already imported the handler modules on one thread, so the first burst there ' +
        'waited for one import at most (on the second thread, while the first served); ' +
        'what both pay is the JIT warm-up of the handler in each thread (next target), and with other processes taking ' +
        'most of the two cores (last column of the table), a second cold thread has little CPU to add.'
    }),
    target({
      what: `${pool}: first burst p99 vs warm`,
      goal: '≤ 2x',
      measured: spread(byContender(runs, pool), coldness('first')),
      test: (v) => v <= 2,
      format: times,
      limit: JIT
    }),
    target({
      what: `${pool}: burst after ${num(settings.idleMs / 1000)} s idle, p99 vs warm`,
      goal: '≤ 1.5x',
      measured: spread(byContender(runs, pool), coldness('afterIdle')),
      test: (v) => v <= 1.5,
      format: times,
      limit: `the threads stayed and are warm; what is left is the noise of a shared 2-core machine on a burst of ${settings.burst} requests.`
    })
  ])
  return {
    targets,
    body: `
Server: \`bench/servers/cold.js <pool> ${threads}\`, a fresh process per run, configured as a user who sets only
\`maxThreads: ${threads}\` would (\`minThreads\` left to its default), with \`idleTimeout: ${settings.idleTimeout}\`
so that idle threads end within the scenario. \`GET /image\` is the blocking handler of
\`bench/servers/cold-handlers.js\`: its module imports bullmq (with ioredis, msgpackr, lodash and luxon behind it)
and pako and builds a 64 K-entry table, ~0.5–1 s of work in a fresh thread here; the handler renders a
128×128 image, blurs it and deflates it (a few ms warm, code the JIT has never seen in a fresh thread).
*Before* is commit ${settings.beforeCommit}, the last before threads imported the handler modules when they start and
\`minThreads\` defaulted to \`maxThreads\`. There piscina kept its own default (half the cores, ${Math.max(1, threads / 2)} here) and tinypool
kept every thread (the plugin set its \`minThreads\` to \`maxThreads\`, so its threads never ended when idle); \`ready()\` ran a
startup check on one thread, which imported the handler modules there; any other thread imported a handler's module
when its first request came. \`bench/scenarios/cold.js\` builds that commit in a
temporary directory (\`git archive\`, \`tsc\`) and runs the same server file on it. *After* is this commit with the same options.

Each run: the server listens (*listening after*: from the process's start to \`ready()\` resolved, which now includes the
threads' imports); at once a burst of ${settings.burst} concurrent \`GET /image\`, each on a new connection (*first burst*);
then ${WARM_SKIP + settings.warmMeasured} more bursts one after the other, the last ${settings.warmMeasured} measured together (*warm*); then ${num(settings.idleMs / 1000)} s
with no request (*threads idle*: the pool's threads after it) and one more burst (*after idle*). Latencies in ms, from
the request sent to the last byte read, by a plain HTTP client in the bench process. Median of ${plural(reps, 'run')}
per row, with the range (min–max) in brackets.

${table(['server', 'listening after ms', 'first burst p50', 'first burst p99', 'warm p50', 'warm p99', 'threads idle', 'after idle p50', 'after idle p99', 'other processes, cores'], rows)}

With ${settings.burst} requests a burst, p99 is the slowest request of the burst.

How much slower than warm (p99 of the burst over the warm p99, within each run):

${table(['server', 'first burst / warm', 'after idle / warm'], ratios)}

After over before, round by round (below 1: faster after):

${table(['pool', 'first burst p99', 'after idle p99', 'listening after'], versus)}

${targetsTable(targets)}
`
  }
}
