// b. Per-request overhead: a trivial route ({ ok: true }) under load, then
// unloaded. What does a trip to a worker thread cost?
import { measure, unloaded } from '../lib/harness.js'
import { busyNote, contenderRows, difference, failures, num, plural, ratio, table, target, targetsTable, times, withSpread } from '../lib/report.js'
import { blockingPools, contenders, labels } from './contenders.js'

export const id = 'overhead'
export const title = 'Per-request overhead'
export const defaults = { warmup: 1, duration: 4 }

const connections = 16
/** Seconds of back-to-back requests on one connection, after the load. */
const unloadedSeconds = 1.5

export async function run (ctx) {
  const seconds = Math.min(unloadedSeconds, ctx.duration)
  const runs = await ctx.rounds(contenders, async (server) => {
    const loaded = await measure({ server, path: '/ok', connections, warmup: ctx.warmup, duration: ctx.duration })
    const alone = await unloaded(server, '/ok', seconds)
    return {
      ...loaded,
      unloaded: alone,
      summary: `${num(loaded.requestsPerSec)} req/s, p50 ${num(loaded.latency.p50)} ms, ` +
        `main thread ${num(perRequest(loaded, 'serverMain'))} µs/req; unloaded p50 ${num(alone.p50 * 1000)} µs`
    }
  })
  return { settings: { connections, unloadedSeconds: seconds }, runs }
}

const us = (ms) => num(ms * 1000)

/** CPU µs the server spent per request: on its main thread ('serverMain') or on all its threads ('server'). */
function perRequest (run, key) {
  return run.cpu[key] / run.requestsPerSec * 1e6
}

export function render ({ settings, runs, reps, duration, threads }) {
  const loadP50 = (r) => r.latency.p50
  const aloneP50 = (r) => r.unloaded.p50
  const rps = (r) => r.requestsPerSec
  const rows = contenderRows(runs, contenders, labels, [
    rps,
    loadP50,
    (r) => r.latency.p99,
    [aloneP50, us],
    [(r) => r.unloaded.p99, us]
  ])
  const cpuRows = contenderRows(runs, contenders, labels, [
    (r) => perRequest(r, 'serverMain'),
    (r) => perRequest(r, 'server'),
    (r) => r.cpu.serverMain,
    (r) => r.cpu.load,
    (r) => r.cpu.other
  ])
  const ratios = [...blockingPools, 'by-hand'].map((c) => [
    labels[c],
    withSpread(ratio(runs, c, 'inline', rps), times),
    c === 'by-hand' ? '—' : withSpread(ratio(runs, c, 'by-hand', rps), times),
    c === 'by-hand' ? '—' : withSpread(ratio(runs, c, 'by-hand', (r) => perRequest(r, 'serverMain')), times),
    withSpread(ratio(runs, c, 'inline', (r) => perRequest(r, 'serverMain')), times),
    withSpread(difference(runs, c, 'inline', aloneP50), us),
    withSpread(difference(runs, c, 'inline', loadP50), us)
  ])
  const mainUs = (r) => perRequest(r, 'serverMain')
  const targets = blockingPools.flatMap((pool) => [
    target({
      what: `${pool}: /ok req/s vs piscina by hand`,
      goal: '≥ 1.2x',
      measured: ratio(runs, pool, 'by-hand', rps),
      test: (v) => v >= 1.2,
      format: times,
      limit: 'req/s is the main thread\'s µs/req (see below) once two cores are shared by everything: what the plugin ' +
        'still adds there (the request snapshot cloned, the scheduler, status and headers replayed, stats) comes ' +
        'straight out of it; a gap within the range of the rounds is the shared machine\'s noise.' + busyNote(runs, pool)
    }),
    target({
      what: `${pool}: main thread µs per /ok request vs inline`,
      goal: '≤ 1.1x',
      measured: ratio(runs, pool, 'inline', mainUs),
      test: (v) => v <= 1.1,
      format: times,
      limit: 'inline pays only HTTP and the handler; an offloaded request also pays its share of a message each way ' +
        '(several requests a message under load), cloning its request snapshot, and resolving its promise.'
    })
  ])
  return {
    targets,
    body: `
The route returns \`{ ok: true }\`; every pool has the same ${threads} threads, at normal priority
(\`priority: 0\`, as piscina by hand), and autocannon runs in a process of its own (the bench
runner's) at the same nice value: a co-located client otherwise competes with lower-priority
threads as no remote client would.
*Under load*: ${settings.connections} autocannon connections for ${duration} s (req/s, and the latency
of every response at full precision). *Unloaded*: right after, one connection sends requests back
to back for ${settings.unloadedSeconds} s with nothing else running; its p50 minus inline's p50 in
the same round is the time a request spends crossing to a worker and back. On this VM these figures
are bimodal: a wake-up on the other vCPU costs some 50 µs more than on the same one (inline, pinned
with \`taskset\`: about 55 µs with the probe on the server's vCPU, 125 µs on the other), and where
each process runs is the scheduler's choice. Pinning everything to one vCPU made the pools'
figures worse and less stable (up to 400 µs), so the phase is not pinned; read the ranges.
Median of ${plural(reps, 'run')} per contender, with the range (min–max) in brackets.

${table(['contender', 'req/s', 'p50 ms', 'p99 ms', 'unloaded p50 µs', 'unloaded p99 µs'], rows)}

${failures(runs, labels)}

Where the CPU went under load (from /proc): the server's CPU time per request, on its main thread
and on all its threads, and the cores used by the server's main thread, by autocannon and by
other processes of the shared machine. CPU per request depends far less on the neighbours
than req/s does.

${table(['contender', 'main thread µs/req', 'all threads µs/req', 'main thread cores', 'autocannon cores', 'other processes cores'], cpuRows)}

Ratios and differences, each taken between runs made in the same round:

${table(['contender', 'req/s vs inline', 'req/s vs by hand', 'main thread µs/req vs by hand', 'main thread µs/req vs inline', 'added µs, unloaded p50', 'added µs, p50 under load'], ratios)}

${targetsTable(targets)}
`
  }
}
