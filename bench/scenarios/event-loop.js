// a. Event-loop protection: 8 connections hammer a CPU-bound route while the
// probe sends GET /ping every 5 ms. Does /ping stay fast, and does the CPU
// route get the second core?
import { lineChart } from '../lib/chart.js'
import { measure } from '../lib/harness.js'
import { busyNote, byContender, contenderRows, failures, num, plural, ratio, spread, table, target, targetsTable, times, withSpread } from '../lib/report.js'
import { blockingPools, contenders, labels } from './contenders.js'

export const id = 'event-loop'
export const title = 'Event-loop protection'
export const defaults = { warmup: 1.5, duration: 5 }

const connections = 8
const interval = 5
/** The chart's resolution: the slowest ping of each such slice of a run is kept (ms). */
const BUCKET_MS = 50
const COLORS = { inline: '#cf222e', piscina: '#0969da', tinypool: '#1a7f37', 'by-hand': '#8250df' }
const DASHES = { 'by-hand': '5 3' }

const CORES_LIMIT = 'the two worker threads keep both cores busy with /cpu, so the main thread that answers ' +
  '/ping, the probe and autocannon all wait for a core behind them: on a 2-core machine no core is left idle ' +
  'for the event loop. With more cores than pool threads the main thread would not have to wait.'

export async function run (ctx) {
  const runs = await ctx.rounds(contenders, async (server) => {
    const r = await measure({
      server,
      path: '/cpu',
      connections,
      warmup: ctx.warmup,
      duration: ctx.duration,
      probe: { interval, timeline: BUCKET_MS }
    })
    return { ...r, summary: `/cpu ${num(r.requestsPerSec)} req/s, /ping p50 ${num(r.ping.p50)} ms p99 ${num(r.ping.p99)} ms` }
  })
  return { settings: { connections, interval, workMs: ctx.workMs, iterations: ctx.iterations }, runs }
}

export function render ({ settings, runs, reps }) {
  const rows = contenderRows(runs, contenders, labels, [
    (r) => r.ping.p50,
    (r) => r.ping.p99,
    (r) => r.ping.max,
    (r) => r.requestsPerSec,
    (r) => r.latency.p99,
    (r) => r.cpu.other
  ])
  const p99 = (r) => r.ping.p99
  const rps = (r) => r.requestsPerSec
  const ratios = blockingPools.map((pool) => [
    labels[pool],
    withSpread(ratio(runs, pool, 'inline', p99), times),
    withSpread(ratio(runs, pool, 'inline', rps), times),
    withSpread(ratio(runs, pool, 'by-hand', rps), times)
  ])
  const targets = blockingPools.flatMap((pool) => {
    const busy = busyNote(runs, pool)
    return [
      target({
        what: `${pool}: /ping p99`,
        goal: '≤ 15 ms',
        measured: spread(byContender(runs, pool), p99),
        test: (v) => v <= 15,
        format: (v) => `${num(v)} ms`,
        limit: CORES_LIMIT + busy
      }),
      target({
        what: `${pool}: /ping p99 vs inline`,
        goal: '≤ 0.1x',
        measured: ratio(runs, pool, 'inline', p99),
        test: (v) => v <= 0.1,
        format: times,
        limit: CORES_LIMIT + busy
      }),
      target({
        what: `${pool}: /cpu req/s vs inline`,
        goal: '≥ 1.2x',
        measured: ratio(runs, pool, 'inline', rps),
        test: (v) => v >= 1.2,
        format: times,
        limit: 'two threads can at most double what one core does inline, and here they share the two cores with autocannon, the probe and the main thread.' + busy
      }),
      target({
        what: `${pool}: /cpu req/s vs piscina by hand`,
        goal: '≥ 1.0x',
        measured: ratio(runs, pool, 'by-hand', rps),
        test: (v) => v >= 1.0,
        format: times,
        limit: 'both send each request to one of the same number of threads; a gap here is the cost of the plugin\'s own work per request (see the overhead scenario) or noise of the shared machine (see the range).' + busy
      })
    ]
  })
  const chart = timelineChart(runs, settings)
  return {
    targets,
    files: chart === undefined ? {} : { 'event-loop.svg': chart.svg },
    body: `
${settings.connections} autocannon connections send \`GET /cpu\` back to back for each run's
measured seconds; the route does ${num(settings.iterations)} pbkdf2-sha256 rounds
(fixed work, calibrated to about ${settings.workMs} ms on one idle core at the start of the run).
Meanwhile the probe process sends \`GET /ping\` (answered on the main thread by every
contender) every ${settings.interval} ms over pre-opened keep-alive connections, on schedule
whether or not the previous ping has been answered, and records each latency.
Median of ${plural(reps, 'run')} per contender, with the range (min–max) in brackets.

${table(['contender', '/ping p50 ms', '/ping p99 ms', '/ping max ms', '/cpu req/s', '/cpu p99 ms', 'other processes, cores'], rows)}

*Other processes, cores*: CPU used meanwhile by processes other than the server, autocannon and
the probe (from /proc); the machine is shared, and every core they take is missing above.
${failures(runs, labels)}

${chart === undefined
? ''
: `![/ping latency over the seconds of one round, one line per contender, log scale](event-loop.svg)

*\`/ping\` latency over time* ([event-loop.svg](event-loop.svg), drawn by \`bench/scenarios/event-loop.js\`): the
slowest ping of each ${chart.bucketMs} ms of round ${chart.rep}'s runs (${chart.why}), on a log scale, by the time it was sent.
Inline, every \`/cpu\` request holds the event loop for its whole ~${settings.workMs} ms and pings queue behind the
requests already waiting; with a pool, the main thread only waits for a core.

`}Ratios, each taken between runs made in the same round (median and range over the rounds):

${table(['blocking contender', '/ping p99 vs inline', '/cpu req/s vs inline', '/cpu req/s vs by hand'], ratios)}

${targetsTable(targets)}
`
  }
}

/**
 * docs/event-loop.svg: /ping latency over the measured seconds, one line per
 * contender, all from one round: the one whose /ping p99s are closest to the
 * medians of the table. Undefined when the runs kept no timeline.
 */
function timelineChart (runs, settings) {
  if (!runs.every((r) => r.ping.timeline !== undefined)) return undefined
  const medians = Object.fromEntries(contenders.map((c) => [c, spread(byContender(runs, c), (r) => r.ping.p99).median]))
  const reps = [...new Set(runs.map((r) => r.rep))].filter((rep) => contenders.every((c) => runs.some((r) => r.rep === rep && r.contender === c)))
  if (reps.length === 0) return undefined
  const distance = (rep) => contenders.reduce((sum, c) => sum + Math.abs(Math.log(runs.find((r) => r.rep === rep && r.contender === c).ping.p99 / medians[c])), 0)
  const rep = reps.reduce((a, b) => (distance(b) < distance(a) ? b : a))
  const chosen = contenders.map((c) => runs.find((r) => r.rep === rep && r.contender === c))
  const bucketMs = chosen[0].ping.timeline.bucketMs
  const seconds = Math.max(...chosen.map((r) => r.ping.timeline.max.length)) * bucketMs / 1000
  const plain = (label) => label.replaceAll('`', '')
  const svg = lineChart({
    title: `/ping latency while ${settings.connections} connections load a ~${settings.workMs} ms CPU-bound route`,
    subtitle: `slowest of each ${bucketMs} ms of pings (one every ${settings.interval} ms), round ${rep}; log scale`,
    series: chosen.map((r) => ({
      label: `${plain(labels[r.contender])}: p99 ${num(r.ping.p99)} ms`,
      color: COLORS[r.contender],
      dash: DASHES[r.contender],
      points: r.ping.timeline.max.map((v, i) => [(i * bucketMs) / 1000, v])
    })),
    xMax: Math.floor(seconds),
    xStep: 1,
    xLabel: 'seconds into the measured run (when the ping was sent)',
    yLabel: 'slowest /ping of the slice, ms',
    yMin: 0.1,
    refs: [{ y: 15, label: 'target for the blocking pools: p99 ≤ 15 ms' }]
  })
  return { svg, rep, bucketMs, why: reps.length === 1 ? 'the only complete round counted' : `of the ${reps.length} rounds counted, the one whose \`/ping\` p99s are closest to the medians above` }
}
