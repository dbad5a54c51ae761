// The section of docs/benchmarks.md for bench/durable.js (bench/results/durable.json).
import { median, num, plural, table, target, targetsTable, times } from './lib/report.js'

export const title = 'Durable background tasks (BullMQ on Redis)'

/** Median and range of `pick` over `rows`. */
function spreadOf (rows, pick) {
  const values = rows.map(pick)
  return { median: median(values), min: Math.min(...values), max: Math.max(...values) }
}

const show = ({ median, min, max }, format = num) => `${format(median)} (${format(min)}–${format(max)})`

/** Ratios of `pick` between two kinds of rows of the same round. */
function pairedRatio (rows, key, a, b, pick) {
  const reps = [...new Set(rows.map((r) => r.rep))]
  const values = reps.map((rep) => {
    const x = rows.find((r) => r.rep === rep && r[key] === a)
    const y = rows.find((r) => r.rep === rep && r[key] === b)
    return pick(x) / pick(y)
  })
  return { median: median(values), min: Math.min(...values), max: Math.max(...values) }
}

export function renderDurable (result) {
  const { settings, latency, throughput, locks } = result
  const modes = {
    plain: 'handler alone',
    background: '+ `reply.background(noop)`, in process',
    queued: '+ `reply.background(noop)` with `queue` (job in Redis before the response)',
    bullmq: 'anchor: + `await queue.add()` of plain BullMQ in the handler'
  }
  const latencyRows = Object.entries(modes).map(([mode, label]) => {
    const rows = latency.filter((r) => r.mode === mode)
    return [label, show(spreadOf(rows, (r) => r.requestsPerSec)), show(spreadOf(rows, (r) => r.p50)), show(spreadOf(rows, (r) => r.p99))]
  })
  const queuedRows = latency.filter((r) => r.mode === 'queued')
  const plainRows = latency.filter((r) => r.mode === 'plain')
  const addedP50 = spreadOf(queuedRows.map((q) => ({ q, p: plainRows.find((p) => p.rep === q.rep) })), ({ q, p }) => q.p50 - p.p50)
  const addedP99 = spreadOf(queuedRows.map((q) => ({ q, p: plainRows.find((p) => p.rep === q.rep) })), ({ q, p }) => q.p99 - p.p99)
  const throughputRows = [1, 2].map((workers) => {
    const rows = throughput.filter((r) => r.workers === workers)
    return [workers === 1 ? '1 worker process' : `${workers} worker processes`, show(spreadOf(rows, (r) => r.jobsPerSec)), show(spreadOf(rows, (r) => r.seconds)), String(rows.reduce((n, r) => n + r.failed, 0))]
  })
  const scaling = pairedRatio(throughput, 'workers', 2, 1, (r) => r.jobsPerSec)
  const lockRows = ['fastify-blocking-worker', 'plain BullMQ worker'].map((contender) => {
    const rows = locks.filter((r) => r.contender === contender)
    const ends = [...new Set(rows.map((r) => r.state + (r.failedReason ? ` (${r.failedReason})` : '')))].join(', ')
    return [contender, rows.map((r) => r.runs).join(', '), rows.map((r) => r.stalls).join(', '), ends, show(spreadOf(rows, (r) => r.seconds), (v) => v.toFixed(1))]
  })
  const ours = locks.filter((r) => r.contender === 'fastify-blocking-worker')
  const plain = locks.filter((r) => r.contender === 'plain BullMQ worker')
  const redisLimit = 'the response waits for one call of BullMQ\'s add script on a Redis that shares the two cores with the server and autocannon; on a loaded machine its tail follows the load.'
  const onceRounds = ours.filter((r) => r.runs === 1 && r.stalls === 0 && r.state === 'completed').length
  const added = [['p50 (a Redis round trip on 127.0.0.1)', addedP50, 1], ['p99', addedP99, 5]]
  const targets = [
    ...added.map(([which, measured, ms]) => target({
      what: `latency that reply.background adds with \`queue\`, ${which}`,
      goal: `≤ ${ms} ms`,
      measured,
      test: (v) => v <= ms,
      format: (v) => `${num(v)} ms`,
      limit: redisLimit
    })),
    target({
      what: 'a CPU-bound job of 3 x lockDuration on fastify-blocking-worker: rounds in which it ran once, without a stall',
      goal: `all ${ours.length}`,
      measured: { median: onceRounds, min: onceRounds, max: onceRounds },
      test: (v) => v === ours.length,
      format: (v) => `${v} of ${ours.length}`,
      limit: 'the pool thread runs the task; a stall means the worker\'s event loop was held past lockDuration.'
    }),
    target({
      what: 'the same job on a plain BullMQ worker doing the work inline (the anchor): rounds in which it stalled',
      goal: `all ${plain.length} (the anchor fails)`,
      measured: { median: plain.filter((r) => r.stalls > 0).length, min: plain.filter((r) => r.stalls > 0).length, max: plain.filter((r) => r.stalls > 0).length },
      test: (v) => v === plain.length,
      format: (v) => `${v} of ${plain.length}`,
      limit: 'the anchor did not stall: the lock test did not test anything in that round.'
    })
  ]
  const body = `
What the \`queue\` option costs a request, how many trivial jobs worker processes get through,
and whether a long CPU-bound job is run once. Everything runs on this machine against a
redis-server (${result.machine.redis.split(' ')[2] ?? ''}) of the benchmark's own on 127.0.0.1, without persistence, flushed between
runs; BullMQ ${result.machine.bullmq}. ${plural(settings.reps, 'round')}; medians, with the range (min–max) in brackets.
The load average at the end was ${result.machine.loadAverage.join(', ')}: a shared machine, so read absolute
numbers with that in mind.

**Latency.** \`GET /ok\` on a server with one pool thread (\`bench/servers/durable.js\`),
${settings.connections} autocannon connections, ${settings.warmup} s warmup + ${settings.duration} s per run.
The handler returns \`{ ok: true }\`; the next two also call \`reply.background(noop)\`, run in
process, or added to Redis (\`queue\`, \`work: false\`) before the response is sent; the anchor
awaits BullMQ's own \`queue.add()\` in the handler, what one would write by hand.

${table(['server', 'req/s', 'p50 ms', 'p99 ms'], latencyRows)}

With \`queue\`, the response waits for Redis: ${num(addedP50.median)} ms more at p50 and ${num(addedP99.median)} ms more at p99
than the handler alone (differences taken within each round, medians). Against the anchor,
BullMQ's own \`queue.add()\` awaited in the handler, the plugin's path serves
${show(pairedRatio(latency, 'mode', 'queued', 'bullmq', (r) => r.requestsPerSec), times)} the req/s (same round): the cost is BullMQ's and Redis's, not the plugin's.
Redis shares the two cores with the server and autocannon here.

**Throughput.** ${settings.jobs} trivial jobs (\`bench.noop\`) added at once (\`addBulk\`) to a queue
served by fastify-blocking-worker processes (1 pool thread, \`--concurrency 16\` each), started
and ready beforehand; the time until the last job is completed.

${table(['workers', 'jobs/s', 'seconds', 'failed'], throughputRows)}

Two processes against one: ${show(scaling, times)}. Per job, BullMQ makes a few Redis round trips
(fetch, lock, complete) and the plugin a hand-over to a pool thread; on this 2-core machine the
worker processes, Redis and the benchmark share the cores, so a second process adds little: the
limit is the machine, not the worker.

**Locks.** One job whose task spins on the CPU for ${settings.spinMs} ms, 3 x \`lockDuration\`
(${settings.lockDuration} ms; \`stalledInterval\` ${settings.stalledInterval} ms), run by a fastify-blocking-worker, then by a plain
BullMQ worker process whose function processor does the same work inline
(\`bench/servers/durable-plain-worker.js\`, the anchor). A stalled-job checker that takes no job
(a BullMQ \`Worker\` with \`autorun: false\` and \`startStalledCheckTimer()\`) runs in the benchmark's
process. Per round: how many times the task ran, the \`stalled\` events seen, how the job ended.

${table(['worker', 'runs, per round', 'stalls, per round', 'ended', 'seconds'], lockRows)}

The plain worker's event loop is blocked while the task runs, so it cannot renew the job's
lock: the lock expires after ${settings.lockDuration} ms, the checker moves the job back to waiting, the task
runs a second time, stalls again and the job fails (\`maxStalledCount\` 1). With
fastify-blocking the task runs on a pool thread and the worker's loop renews the lock every
${settings.lockDuration / 2} ms: ${ours.every((r) => r.runs === 1 && r.stalls === 0) ? 'one run, no stall' : 'see the table'}${plain.length > 0 ? '' : ''}.

${targetsTable(targets)}
`
  return { targets, body }
}
