// f. Thread priority (issue 8): the event-loop scenario's load (8 connections
// on the ~20 ms CPU route, /ping every 5 ms) on both pools with the plugin's
// `priority` at 0, 5, 10 and 19, all in the same rounds. Does lowering the
// pool threads' priority keep /ping under 1 ms at p99, and what does it cost
// the CPU-bound route? A ninth contender, no load at all, gives the /ping
// latency this machine shows with nothing to compete with.
import { setTimeout as sleep } from 'node:timers/promises'
import { cpuMeter, threadNices } from '../lib/cpu.js'
import { measure, percentiles, renice, startProbe } from '../lib/harness.js'
import { byContender, contenderRows, failures, num, plural, ratio, spread, table, target, targetsTable, times, withSpread } from '../lib/report.js'
import { blockingPools, labels as poolLabels } from './contenders.js'

export const id = 'priority'
export const title = 'Thread priority under full CPU load'
// 9 contenders of about 7 s each (quiet check, start, warmup, run, stop):
// about a minute a round, at most 6 rounds with the ones made up for
// disturbed rounds, and at most 2 minutes of waiting for a quiet machine.
export const defaults = { warmup: 1, duration: 4, reps: 4 }

const PRIORITIES = [0, 5, 10, 19]
const connections = 8
const interval = 5
/** The nice value of the probe: the server's main thread's. */
const PROBE_NICE = 0
const P99_GOAL = 1
const RPS_GOAL = 0.8

/** The reference: server.js's inline server, no load, only the probe. */
const IDLE = 'inline'

const NORMAL_LIMIT = 'at normal priority the two pool threads have the same weight as the main thread and keep both ' +
  'cores busy with /cpu, so a ping waits for a core behind them (as in scenario a).'
const FLOOR_LIMIT = (floor) => 'the goal is under what this machine measures with no load at all: against an idle ' +
  `server the same probe sees a p99 of ${floor} (the *no load* row). What holds those pings back is there without the ` +
  'pool (a virtual machine with 2 vCPUs, shared with other work), so no priority can take /ping below it; ' +
  'the ratio to that floor says how much of the way back a priority goes.'
const RPS_LIMIT = 'the main thread and the probe get their CPU first, and the pool threads share what they leave with ' +
  'the load generator (at the same nice value).'

const name = (pool, priority) => `${pool}:${priority}`
const loaded = blockingPools.flatMap((pool) => PRIORITIES.map((p) => name(pool, p)))
const contenders = [IDLE, ...loaded]
const labels = {
  [IDLE]: 'no load: the probe alone against an idle server (reference)',
  ...Object.fromEntries(blockingPools.flatMap((pool) => PRIORITIES.map((p) => [name(pool, p), `${poolLabels[pool]}, \`priority: ${p}\``])))
}

/** The nice value the load generator runs at for a contender: its pool threads' (see the rendered text for why). */
const loadNiceOf = (priority) => priority

export async function run (ctx) {
  const runs = await ctx.rounds(contenders, (server, contender) =>
    contender === IDLE ? measureIdle(ctx, server) : measureAt(ctx, server, Number(contender.split(':')[1])))
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

/** The floor: the probe alone against an idle server, for the same seconds. */
async function measureIdle (ctx, server) {
  const pinger = await startProbe(server.port, { interval })
  renice(pinger.pid, PROBE_NICE)
  const meter = cpuMeter({ server: server.pid, probe: pinger.pid })
  pinger.start()
  await sleep(ctx.duration * 1000)
  const cpu = meter()
  const ping = percentiles(await pinger.stop())
  return {
    requestsPerSec: NaN,
    requests: 0,
    cpu,
    errors: 0,
    non2xx: 0,
    ping,
    nices: threadNices(server.pid),
    summary: `no load, /ping p50 ${num(ping.p50)} ms p99 ${num(ping.p99)} ms max ${num(ping.max)} ms`
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
  const idle = byContender(runs, IDLE)
  const floor = idle.length === 0 ? undefined : spread(idle, p99)
  const floorText = floor === undefined ? 'n/a' : `${withSpread(floor)} ms`
  const idleRow = floor === undefined
    ? []
    : [[labels[IDLE], '–', ...[(r) => r.ping.p50, p99, (r) => r.ping.max].map((f) => withSpread(spread(idle, f))), '–', '–',
        ...[(r) => r.cpu.serverMain, (r) => r.cpu.server - r.cpu.serverMain].map((f) => withSpread(spread(idle, f))), '–',
        ...[(r) => r.cpu.probe, (r) => r.cpu.other].map((f) => withSpread(spread(idle, f)))]]
  const rows = loaded.map((c, i) => {
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
  const ratios = loaded.map((c) => {
    const base = `${c.split(':')[0]}:0`
    const vsFloor = floor === undefined ? 'n/a' : withSpread(ratio(runs, c, IDLE, p99), times)
    return c === base
      ? [labels[c], '1x (the reference)', '1x (the reference)', vsFloor]
      : [labels[c], withSpread(ratio(runs, c, base, p99), times), withSpread(ratio(runs, c, base, rps), times), vsFloor]
  })
  const targets = blockingPools.flatMap((pool) => PRIORITIES.flatMap((p) => {
    const c = name(pool, p)
    const list = [target({
      what: `${pool}, priority ${p}: /ping p99`,
      goal: `≤ ${P99_GOAL} ms`,
      measured: spread(byContender(runs, c), p99),
      test: (v) => v <= P99_GOAL,
      format: (v) => `${num(v)} ms`,
      limit: floor !== undefined && floor.median > P99_GOAL ? FLOOR_LIMIT(floorText) : p === 0 ? NORMAL_LIMIT : undefined
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
      : `No increment brings \`/ping\` p99 to ${P99_GOAL} ms here${floor !== undefined && floor.median > P99_GOAL ? ` (with no load at all it is ${num(floor.median)} ms on this machine)` : ''}. ` +
        `The data supports \`priority: ${rec.priority}\` as the default: among the increments that keep \`/cpu\` at ${RPS_GOAL}x or more ` +
        `of its throughput at normal priority, it gives the lowest \`/ping\` p99 (${num(rec.worstP99)} ms on the worse pool, against ` +
        `${num(base.worstP99)} ms at priority 0${floor === undefined ? '' : ` and ${num(floor.median)} ms with no load`}), and \`/cpu\` keeps ${times(rec.worstRps)} of its throughput.`
  // A pick that a smaller increment comes within 10% of is a close call on a noisy machine: say so.
  const closest = rec.perPriority.filter((x) => x.priority < rec.priority && x.rpsPass && x.worstP99 <= rec.worstP99 * 1.1)
  const close = closest.length === 0
    ? ''
    : ` \`priority: ${closest[0].priority}\` comes within 10% of it (${num(closest[0].worstP99)} ms on its worse pool): ` +
      'on this machine the two are not told apart, and either gives most of the gain.'
  const cost = rec.perPriority.every((x) => x.rpsPass)
    ? ' No increment costs `/cpu` its throughput: the main thread, the probe and the load generator need ' +
      `${num(spread(runs.filter((r) => r.contender !== IDLE), (r) => r.cpu.serverMain + r.cpu.probe + r.cpu.load).median)} cores ` +
      'between them (median), so a lower priority only changes who runs first, and the pool threads still get all the CPU that is left.'
    : ''
  const seen = rows.every((row) => row[1].endsWith('(seen)'))
  const fullTable = [...idleRow, ...rows]
  return {
    targets,
    recommendation: rec,
    body: `
The load of the event-loop scenario (a): ${settings.connections} autocannon connections send \`GET /cpu\`
(${num(settings.iterations)} pbkdf2-sha256 rounds, about ${settings.workMs} ms on one idle core) back to back,
and the probe sends \`GET /ping\` every ${settings.interval} ms. The server is \`bench/servers/server.js <pool>:<priority>\`,
which registers the plugin with that \`priority\` (${threads} threads); each pool thread applies it to itself
with \`nice()\` from \`@napi-rs/nice\`. All ${contenders.length} contenders take turns in every round, so the ratios below compare runs made
minutes apart at most. The first row is a reference measured in the same rounds: the same probe for the same
seconds against an idle server (\`server.js inline\`, no load at all), the lowest \`/ping\` latency this machine shows.
Median of ${plural(reps, 'run')} per contender, with the range (min–max) in brackets.

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

${table(['contender', 'nice of pool threads', '/ping p50 ms', '/ping p99 ms', '/ping max ms', '/cpu req/s', '/cpu p99 ms', 'main thread, cores', 'other server threads, cores', 'load generator, cores', 'probe, cores', 'other processes, cores'], fullTable)}

${failures(runs, labels)}

Ratios against the same pool at priority 0, and against the no-load floor, each taken within a round (median and
range over the rounds):

${table(['contender', '/ping p99 vs priority 0', '/cpu req/s vs priority 0', '/ping p99 vs no load'], ratios)}

${targetsTable(targets)}${busyNote}

### Which default

${perPriority}

${recommendation}${close}${cost}
`
  }
}
