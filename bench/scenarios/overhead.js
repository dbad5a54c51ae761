// b. Per-request overhead: a trivial route ({ ok: true }) under load, then
// unloaded. What does a trip to a worker thread cost?
import { measure, unloaded } from '../lib/harness.js'
import { byContender, median, num, plural, ratio, spread, table, target, targetsTable, times, withSpread } from '../lib/report.js'
import { blockingPools, labels } from './contenders.js'

export const id = 'overhead'
export const title = 'Per-request overhead'
export const defaults = { warmup: 1, duration: 5 }

const contenders = ['inline', 'piscina', 'tinypool', 'by-hand']
const connections = 16
/** Seconds of back-to-back requests on one connection, after the load. */
const unloadedSeconds = 2

export async function run (ctx) {
  const seconds = Math.min(unloadedSeconds, ctx.duration)
  const runs = await ctx.rounds(contenders, async (server) => {
    const loaded = await measure({ server, path: '/ok', connections, warmup: ctx.warmup, duration: ctx.duration })
    const alone = await unloaded(server, '/ok', seconds)
    return {
      ...loaded,
      unloaded: alone,
      summary: `${num(loaded.requestsPerSec)} req/s, p50 ${num(loaded.latency.p50)} ms; unloaded p50 ${num(alone.p50 * 1000)} µs`
    }
  })
  return { settings: { connections, unloadedSeconds: seconds }, runs }
}

const us = (ms) => num(ms * 1000)

/** Added µs over inline, in each round (pairs made in the same round). */
function added (runs, contender, pick) {
  const values = []
  for (const run of byContender(runs, contender)) {
    const inline = runs.find((r) => r.contender === 'inline' && r.rep === run.rep)
    values.push((pick(run) - pick(inline)) * 1000)
  }
  return { median: median(values), min: Math.min(...values), max: Math.max(...values) }
}

export function render ({ settings, runs, reps, duration, threads }) {
  const loadP50 = (r) => r.latency.p50
  const aloneP50 = (r) => r.unloaded.p50
  const rps = (r) => r.requestsPerSec
  const rows = contenders.map((c) => {
    const mine = byContender(runs, c)
    return [
      labels[c],
      withSpread(spread(mine, rps)),
      withSpread(spread(mine, loadP50)),
      withSpread(spread(mine, (r) => r.latency.p99)),
      withSpread(spread(mine, aloneP50), us),
      withSpread(spread(mine, (r) => r.unloaded.p99), us),
      c === 'inline' ? '—' : withSpread(added(runs, c, aloneP50)),
      String(mine.reduce((n, r) => n + r.errors + r.non2xx, 0))
    ]
  })
  const ratios = [...blockingPools, 'by-hand'].map((c) => [
    labels[c],
    withSpread(ratio(runs, c, 'inline', rps), times),
    c === 'by-hand' ? '—' : withSpread(ratio(runs, c, 'by-hand', rps), times),
    withSpread(added(runs, c, loadP50))
  ])
  const targets = blockingPools.map((pool) => target({
    what: `${pool}: /ok req/s vs piscina by hand`,
    goal: '≥ 0.85x',
    measured: ratio(runs, pool, 'by-hand', rps),
    test: (v) => v >= 0.85,
    format: times,
    limit: 'the plugin sends a snapshot of the request (headers, query, params) to the worker and replays ' +
      'status and headers from it, where the hand-written route sends one small object; on two shared cores ' +
      'every microsecond of main-thread work per request shows in req/s.'
  }))
  return { targets, body: `
The route returns \`{ ok: true }\`; every pool has the same ${threads} threads.
*Under load*: ${settings.connections} autocannon connections for ${duration} s (req/s, and the latency
of every response at full precision). *Unloaded*: right after, one connection sends requests back
to back for ${settings.unloadedSeconds} s with nothing else running; its p50 minus inline's p50 in
the same round is the time a request spends crossing to a worker and back.
Median of ${plural(reps, 'run')} per contender, with the range (min–max) in brackets.

${table(['contender', 'req/s', 'p50 ms', 'p99 ms', 'unloaded p50 µs', 'unloaded p99 µs', 'added µs (unloaded p50)', 'errors'], rows)}

Ratios and differences, each taken between runs made in the same round:

${table(['contender', 'req/s vs inline', 'req/s vs by hand', 'added µs (p50 under load)'], ratios)}

${targetsTable(targets)}
` }
}
