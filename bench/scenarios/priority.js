// f. Thread priority (issue 8): the event-loop scenario's load (8 connections
// on the ~20 ms CPU route, /ping every 5 ms) on both pools with the plugin's
// `priority` at 0, 5, 10 and 19, all in the same rounds. Does lowering the
// pool threads' priority keep /ping under 1 ms at p99, and what does it cost
// the CPU-bound route?
import { measure } from '../lib/harness.js'
import { threadNices } from '../lib/cpu.js'
import { byContender, contenderRows, failures, num, plural, ratio, spread, table, target, targetsTable, times, withSpread } from '../lib/report.js'
import { blockingPools, labels as poolLabels } from './contenders.js'

export const id = 'priority'
export const title = 'Thread priority under full CPU load'
// 8 contenders of about 7 s each (start, warmup, run, stop): about a minute a
// round, at most 7 rounds with the ones made up for disturbed rounds.
export const defaults = { warmup: 1, duration: 5, reps: 5 }

const PRIORITIES = [0, 5, 10, 19]
const connections = 8
const interval = 5
/** The nice value of the probe: the server's main thread's. */
const PROBE_NICE = 0
const P99_GOAL = 1
const RPS_GOAL = 0.8

const NORMAL_LIMIT = 'at normal priority the two pool threads have the same weight as the main thread and keep both ' +
  'cores busy with /cpu, so a ping waits for a core behind them (as in scenario a).'
const WAKEUP_LIMIT = 'a nice value sets a thread\'s share of the CPU over time; it does not make the scheduler switch ' +
  'a running pool thread out the moment the main thread wakes up. With both cores running /cpu, a ping first waits ' +
  'for a core for the main thread, then the probe, woken by the answer, waits for one too.'
const RPS_LIMIT = 'the main thread and the probe get their CPU first, and the pool threads share what they leave with ' +
  'the load generator (at the same nice value).'

const name = (pool, priority) => `${pool}:${priority}`
const contenders = blockingPools.flatMap((pool) => PRIORITIES.map((p) => name(pool, p)))
const labels = Object.fromEntries(blockingPools.flatMap((pool) => PRIORITIES.map((p) => [name(pool, p), `${poolLabels[pool]}, \`priority: ${p}\``])))

/** The nice value the load generator runs at for a contender: its pool threads' (see the rendered text for why). */
const loadNiceOf = (priority) => priority

export async function run (ctx) {
  const runs = await ctx.rounds(contenders, (server, contender) => measureAt(ctx, server, Number(contender.split(':')[1])))
  return {
    settings: { connections, interval, workMs: ctx.workMs, iterations: ctx.iterations, priorities: PRIORITIES, probeNice: PROBE_NICE, loadNice: 'the pool threads\' priority' },
    runs
  }
}

async function measureAt (ctx, server, priority) {
  const loadNice = loadNiceOf(priority)
  const r = await measure({
    server,
    path: '/cpu',
    connections,
    warmup: ctx.warmup,
    duration: ctx.duration,
    probe: { interval, nice: PROBE_NICE },
    loadNice
  })
  // Read while the server still runs: the nice value of each of its threads.
  const nices = threadNices(server.pid)
  return {
    ...r,
    priority,
    loadNice,
    nices,
    summary: `/cpu ${num(r.requestsPerSec)} req/s, /ping p50 ${num(r.ping.p50)} ms p99 ${num(r.ping.p99)} ms max ${num(r.ping.max)} ms, ` +
      `threads by nice value ${JSON.stringify(nices)}`
  }
}

const p99 = (r) => r.ping.p99
const rps = (r) => r.requestsPerSec

/** Did every run of the contender have `threads` threads at nice `priority` (and the rest at 0)? */
function applied (runs, contender, priority, threads) {
  const mine = byContender(runs, contender)
  if (priority === 0) return mine.every((r) => Object.keys(r.nices).every((n) => n === '0'))
  return mine.every((r) => r.nices[priority] === threads)
}

/**
 * The smallest increment that meets both targets on both pools; else the one
 * with the lowest /ping p99 (worse pool's median) among those that keep the
 * throughput target on both pools.
 */
export function recommend (runs) {
  const perPriority = PRIORITIES.map((p) => {
    const worstP99 = Math.max(...blockingPools.map((pool) => spread(byContender(runs, name(pool, p)), p99).median))
    const worstRps = p === 0 ? 1 : Math.min(...blockingPools.map((pool) => ratio(runs, name(pool, p), name(pool, 0), rps).median))
    return { priority: p, worstP99, worstRps, p99Pass: worstP99 <= P99_GOAL, rpsPass: worstRps >= RPS_GOAL }
  })
  const both = perPriority.find((x) => x.p99Pass && x.rpsPass)
  const keeping = perPriority.filter((x) => x.rpsPass)
  const best = both ?? keeping.reduce((a, b) => (b.worstP99 < a.worstP99 ? b : a), keeping[0] ?? perPriority[0])
  return { ...best, metBoth: both !== undefined, perPriority }
}

export function render ({ settings, runs, reps, threads }) {
  const rows = contenders.map((c, i) => {
    const priority = PRIORITIES[i % PRIORITIES.length]
    const [row] = contenderRows(runs, [c], labels, [
      (r) => r.ping.p50,
      p99,
      (r) => r.ping.max,
      rps,
      (r) => r.latency.p99,
      (r) => r.cpu.serverMain,
      (r) => r.cpu.server - r.cpu.serverMain,
      (r) => r.cpu.load,
      (r) => r.cpu.probe,
      (r) => r.cpu.other
    ])
    return [row[0], applied(runs, c, priority, threads) ? `${priority} (seen)` : `**${priority} asked, not seen**`, ...row.slice(1)]
  })
  const ratios = contenders.filter((c) => !c.endsWith(':0')).map((c) => {
    const base = `${c.split(':')[0]}:0`
    return [labels[c], withSpread(ratio(runs, c, base, p99), times), withSpread(ratio(runs, c, base, rps), times)]
  })
  const targets = blockingPools.flatMap((pool) => PRIORITIES.flatMap((p) => {
    const c = name(pool, p)
    const list = [target({
      what: `${pool}, priority ${p}: /ping p99`,
      goal: `≤ ${P99_GOAL} ms`,
      measured: spread(byContender(runs, c), p99),
      test: (v) => v <= P99_GOAL,
      format: (v) => `${num(v)} ms`,
      limit: p === 0 ? NORMAL_LIMIT : WAKEUP_LIMIT
    })]
    if (p > 0) {
      list.push(target({
        what: `${pool}, priority ${p}: /cpu req/s vs priority 0`,
        goal: `≥ ${RPS_GOAL}x`,
        measured: ratio(runs, c, name(pool, 0), rps),
        test: (v) => v >= RPS_GOAL,
        format: times,
        limit: RPS_LIMIT
      }))
    }
    return list
  }))
  const busy = contenders.map((c) => [c, spread(byContender(runs, c), (r) => r.cpu.other).median]).filter(([, v]) => v > 0.3)
  const busyNote = busy.length === 0
    ? ''
    : `\n\nOther processes of the shared machine took more than 0.3 cores (median) during the runs of ${busy.map(([c, v]) => `${c} (${num(v)})`).join(', ')}: ` +
      'those figures are theirs as much as the contender\'s.'
  const rec = recommend(runs)
  const perPriority = table(['priority', '/ping p99, worse pool (median ms)', '/cpu req/s vs priority 0, worse pool (median)'],
    rec.perPriority.map((x) => [String(x.priority), `${num(x.worstP99)}${x.p99Pass ? '' : ' (over 1 ms)'}`, x.priority === 0 ? '1x (the reference)' : `${times(x.worstRps)}${x.rpsPass ? '' : ' (under 0.8x)'}`]))
  const base = rec.perPriority[0]
  const recommendation = rec.metBoth
    ? `The data supports \`priority: ${rec.priority}\` as the default: it is the smallest increment with \`/ping\` p99 at ` +
      `or under ${P99_GOAL} ms on both pools (${num(rec.worstP99)} ms on the worse one) while \`/cpu\` keeps ${times(rec.worstRps)} ` +
      'of its throughput at normal priority.'
    : rec.priority === 0
      ? `No increment brings \`/ping\` p99 to ${P99_GOAL} ms here, and none lowers it below its ${num(base.worstP99)} ms at priority 0 ` +
        'while keeping the throughput target: the data supports leaving the default at `priority: 0`.'
      : `No increment brings \`/ping\` p99 to ${P99_GOAL} ms here. The data supports \`priority: ${rec.priority}\` as the default: ` +
        `it gives the lowest \`/ping\` p99 (${num(rec.worstP99)} ms on the worse pool, against ${num(base.worstP99)} ms at priority 0) ` +
        `and \`/cpu\` keeps ${times(rec.worstRps)} of its throughput at normal priority (goal ≥ ${RPS_GOAL}x).`
  const seen = rows.every((row) => row[1].endsWith('(seen)'))
  return {
    targets,
    recommendation: rec,
    body: `
The load of the event-loop scenario (a): ${settings.connections} autocannon connections send \`GET /cpu\`
(${num(settings.iterations)} pbkdf2-sha256 rounds, about ${settings.workMs} ms on one idle core) back to back,
and the probe sends \`GET /ping\` every ${settings.interval} ms. The server is \`bench/servers/server.js <pool>:<priority>\`,
which registers the plugin with that \`priority\` (${threads} threads); each pool thread applies it to itself
with \`nice()\` from \`@napi-rs/nice\`. All ${contenders.length} contenders take turns in every round, so the ratios below compare runs made
minutes apart at most. Median of ${plural(reps, 'run')} per contender, with the range (min–max) in brackets.

The load generator's share. On this 2-core machine autocannon (in the bench process) and the probe run beside
the server, where real clients would not. Pinning them with \`taskset\` does not take them out of the
competition: on 2 cores, whichever core they are given they share with a pool thread or the main thread, at equal weight.
So they are placed by priority instead:

- autocannon runs at the nice value of the contender's pool threads (0, 5, 10 or 19: the bench process lowers the
  priority of all its threads during the warmup and the measured seconds, and restores it after; that needs root).
  It never weighs on the main thread more than a pool thread does, and at priority 0 the setup is exactly
  that of the event-loop scenario: the reference for the throughput ratios. It needs little CPU
  (the *load generator* column), and the 6 requests waiting in the server's queue cover its delays, so the pool
  threads are never short of work.
- the probe runs at nice ${settings.probeNice}, the main thread's: its own wake-up, when an answer comes, is part of every
  \`/ping\` latency below, as it is in scenario a.

${seen ? 'The *nice of pool threads* column is read from /proc during every run: each server had its ' + threads + ' pool threads at the asked priority and every other thread (the main thread included) at 0.' : 'The *nice of pool threads* column is read from /proc during every run; **some runs did not have their pool threads at the asked priority** (is `@napi-rs/nice` installed?).'}

${table(['contender', 'nice of pool threads', '/ping p50 ms', '/ping p99 ms', '/ping max ms', '/cpu req/s', '/cpu p99 ms', 'main thread, cores', 'other server threads, cores', 'load generator, cores', 'probe, cores', 'other processes, cores'], rows)}

${failures(runs, labels)}

Ratios against the same pool at priority 0, each taken within a round (median and range over the rounds):

${table(['contender', '/ping p99 vs priority 0', '/cpu req/s vs priority 0'], ratios)}

${targetsTable(targets)}${busyNote}

### Which default

${perPriority}

${recommendation}
` }
}
