// The soak test's verdicts and its section of docs/benchmarks.md, from
// bench/results/soak.json (written by bench/soak.js).
//
// "Flat" compares the last quarter of the load with the second one: the
// first quarter is warm-up (code compiled, pools and caches filled, the
// allocator's arenas grown), so a leak is what still grows after it.
import { median, num, table, target, targetsTable, withSpread } from './lib/report.js'

export const title = 'Soak: mixed load, memory, threads, handles and files over time'

const MiB = 2 ** 20
/** RSS and heap: the last quarter's median may exceed the second's by this ratio. */
const GROWTH = 1.10
/** Heap after a full GC is a few tens of MiB: this much absolute growth is within noise too. */
const HEAP_SLACK = 2 * MiB
/** Background tasks may wait in bursts (a request queues 2 or 3 at once); a backlog that grows more than this is not flat. */
const BACKLOG_SLACK = 50
/** A thread that dies may hold one running task and 16 that wait for their clients, all answered 500 or cut. */
const TASKS_PER_THREAD = 17

/** The load's samples by quarter of its duration (samples taken after the load are left out). */
export function quarters (run) {
  const length = run.loadSeconds / 4
  const out = [[], [], [], []]
  for (const s of run.samples) {
    if (s.t > run.loadSeconds) continue
    out[Math.min(3, Math.floor(s.t / length))].push(s)
  }
  return out
}

const med = (samples, pick) => median(samples.map(pick))
const one = (value) => ({ median: value, min: value, max: value })
const times = (v) => `${num(v)}x`
const signed = (v) => (v > 0 ? `+${count(v)}` : count(v))

function resourceDiff (before, after) {
  const types = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort()
  return types.filter((t) => (before[t] ?? 0) !== (after[t] ?? 0)).map((t) => `${t} ${before[t] ?? 0} → ${after[t] ?? 0}`)
}

function requestTotals (run) {
  let unexpected = 0
  let hung = 0
  let badBody = 0
  let collateral = 0
  for (const c of Object.values(run.requests)) {
    unexpected += c.unexpected
    hung += c.hung
    badBody += c.badBody
    collateral += c.collateral
  }
  return { unexpected, hung, badBody, collateral }
}

/**
 * One pool's checks, as targets (see bench/lib/report.js target()): what,
 * goal, measured (text), pass, and `limit` saying what a miss means.
 */
export function verdicts (run, settings) {
  const [, q2, , q4] = quarters(run)
  const p = run.pool
  const out = []
  if (q2.length === 0 || q4.length === 0) {
    out.push({ what: `${p}: samples in the second and last quarters`, goal: '≥ 1 each', measured: `${q2.length} and ${q4.length}`, pass: false, limit: 'the run was too short for its sampling interval' })
    return out
  }
  const rss = med(q4, (s) => s.rss) / med(q2, (s) => s.rss)
  out.push(target({
    what: `${p}: RSS, last quarter vs second (medians)`,
    goal: `≤ ${times(GROWTH)}`,
    measured: one(rss),
    test: (v) => v <= GROWTH,
    format: times,
    limit: 'the process (main thread and pool threads together) kept more memory as the load went on'
  }))
  const heapQ2 = med(q2, (s) => s.heapUsed)
  const heapQ4 = med(q4, (s) => s.heapUsed)
  out.push({
    what: `${p}: main-thread heap after a full GC, last quarter vs second (medians)`,
    goal: `≤ ${times(GROWTH)} or ≤ +${HEAP_SLACK / MiB} MiB`,
    measured: `${times(heapQ4 / heapQ2)} (${signed((heapQ4 - heapQ2) / MiB)} MiB)`,
    pass: heapQ4 <= heapQ2 * GROWTH || heapQ4 - heapQ2 <= HEAP_SLACK,
    limit: 'objects the main thread keeps alive grew during the load'
  })
  out.push(target({
    what: `${p}: OS threads under load, last quarter vs second (medians)`,
    goal: '≤ +0',
    measured: one(med(q4, (s) => s.osThreads) - med(q2, (s) => s.osThreads)),
    test: (v) => v <= 0,
    format: signed,
    limit: 'threads accumulate (a replaced pool thread that never ends?)'
  }))
  out.push(target({
    what: `${p}: OS threads after the load vs before`,
    goal: '+0',
    measured: one(run.final.osThreads - run.baseline.osThreads),
    test: (v) => v === 0,
    format: signed,
    limit: 'threads outlived the load'
  }))
  const diff = resourceDiff(run.baseline.resources, run.final.resources)
  out.push({
    what: `${p}: active handles and requests after the load vs before, by type`,
    goal: 'equal',
    measured: diff.length === 0 ? `equal (${run.final.handles})` : diff.join(', '),
    pass: diff.length === 0,
    limit: 'handles outlived the load (sockets, ports, timers or file requests left open)'
  })
  out.push(target({
    what: `${p}: active handles under load, last quarter vs second (medians)`,
    goal: `≤ +${settings.concurrency} (the clients' sockets)`,
    measured: one(med(q4, (s) => s.handles) - med(q2, (s) => s.handles)),
    test: (v) => v <= settings.concurrency,
    format: signed,
    limit: 'handles accumulate during the load'
  }))
  out.push(target({
    what: `${p}: temporary files once the load stopped (and after the server exited)`,
    goal: '0',
    measured: one(run.final.tmpFiles + run.leftoverFiles),
    test: (v) => v === 0,
    format: String,
    limit: 'spooled files outlived their requests'
  }))
  out.push(target({
    what: `${p}: temporary files under load (max of the last quarter)`,
    goal: `≤ ${settings.concurrency * 4} (uploads in flight × files each)`,
    measured: one(Math.max(...q4.map((s) => s.tmpFiles))),
    test: (v) => v <= settings.concurrency * 4,
    format: String,
    limit: 'spooled files accumulate'
  }))
  const backlog = med(q4, (s) => s.stats.background.queued) - med(q2, (s) => s.stats.background.queued)
  out.push(target({
    what: `${p}: background tasks queued under load, last quarter vs second (medians)`,
    goal: `≤ +${BACKLOG_SLACK}`,
    measured: one(backlog),
    test: (v) => v <= BACKLOG_SLACK,
    format: signed,
    limit: 'the background backlog grows: the load is above what the pool sustains, so memory grows with the backlog (not a leak); lower --rate'
  }))
  out.push(target({
    what: `${p}: requests queued under load, last quarter (max)`,
    goal: `≤ ${settings.concurrency} (the clients' connections)`,
    measured: one(Math.max(...q4.map((s) => s.stats.queued))),
    test: (v) => v <= settings.concurrency,
    format: String,
    limit: 'more requests waited than clients can send'
  }))
  const f = run.final.stats
  const rest = [
    f.queued === 0 && f.running === 0 ? undefined : `${f.queued} queued, ${f.running} running`,
    f.background.queued === 0 && f.background.running === 0 ? undefined : `background ${f.background.queued} queued, ${f.background.running} running`,
    f.threads === settings.threads ? undefined : `${f.threads} pool threads`,
    run.drain.settled ? undefined : `not settled within ${settings.drainTimeout / 1000} s`,
    run.exit === '0' ? undefined : `server exit ${run.exit}`
  ].filter((x) => x !== undefined)
  out.push({
    what: `${p}: back to rest after the load (nothing queued or running, ${settings.threads} pool threads, clean exit)`,
    goal: `within ${settings.drainTimeout / 1000} s`,
    measured: rest.length === 0 ? `in ${num(run.drain.ms / 1000)} s` : rest.join('; '),
    pass: rest.length === 0,
    limit: 'work or threads were left behind'
  })
  const totals = requestTotals(run)
  out.push({
    what: `${p}: requests answered as expected (no unexpected status, 5xx or error; none hung; bodies right)`,
    goal: '0 unexpected, 0 hung, 0 wrong',
    measured: `${totals.unexpected} unexpected, ${totals.hung} hung, ${totals.badBody} wrong`,
    pass: totals.unexpected + totals.hung + totals.badBody === 0,
    limit: 'see the requests table'
  })
  out.push(target({
    what: `${p}: failures caused by the ${run.churns} deliberate thread deaths`,
    goal: `≤ ${run.churns * TASKS_PER_THREAD} (${TASKS_PER_THREAD} tasks a thread may hold, each)`,
    measured: one(totals.collateral),
    test: (v) => v <= run.churns * TASKS_PER_THREAD,
    format: String,
    limit: 'a thread death took down more than the tasks it held'
  }))
  return out
}

/** Counts print as integers (a median may be a half). */
const count = (v) => (Number.isInteger(v) ? String(v) : num(v))

const METRICS = [
  ['RSS, MiB', (s) => s.rss / MiB, num],
  ['heap used after GC, MiB', (s) => s.heapUsed / MiB, num],
  ['OS threads', (s) => s.osThreads, count],
  ['pool threads (stats)', (s) => s.stats.threads, count],
  ['active handles', (s) => s.handles, count],
  ['temporary files', (s) => s.tmpFiles, count],
  ['queued', (s) => s.stats.queued, count],
  ['running', (s) => s.stats.running, count],
  ['background queued', (s) => s.stats.background.queued, count]
]

function spreadOf (samples, pick, format) {
  if (samples.length === 0) return 'n/a'
  const values = samples.map(pick)
  return withSpread({ median: median(values), min: Math.min(...values), max: Math.max(...values) }, format)
}

function samplesTable (run) {
  const qs = quarters(run)
  const rows = METRICS.map(([name, pick, format]) => [name, format(pick(run.baseline)), ...qs.map((q) => spreadOf(q, pick, format)), format(pick(run.final))])
  return table(['metric', 'before', 'Q1 (warm-up)', 'Q2', 'Q3', 'Q4', 'after'], rows)
}

function requestsTable (run) {
  const rows = Object.entries(run.requests).filter(([, c]) => c.sent > 0).map(([name, c]) => [
    name,
    String(c.sent),
    Object.entries(c.statuses).map(([s, n]) => `${s}: ${n}`).join(', ') || '–',
    String(c.aborted),
    String(c.collateral),
    c.unexpected === 0 ? '0' : `${c.unexpected} (${c.unexpectedSamples.join('; ')})`,
    c.latency.p50 === null ? '–' : num(c.latency.p50),
    c.latency.p99 === null ? '–' : num(c.latency.p99)
  ])
  return table(['kind', 'sent', 'answers', 'aborted', 'collateral', 'unexpected', 'p50 ms', 'p99 ms'], rows)
}

function logLines (run) {
  const lines = Object.entries(run.final.logged ?? {})
  if (lines.length === 0) return 'The server logged nothing at warn level or above.'
  return 'Lines the server logged at warn level or above (level, message: count): ' +
    lines.sort((a, b) => b[1] - a[1]).map(([k, n]) => `\`${k}\`: ${n}`).join('; ') + '.'
}

/**
 * The soak's section: `body` is markdown without its own heading (see
 * `title`), `targets` the checks of every pool, in the shape of a
 * scenario's targets (bench/lib/report.js).
 */
export function renderSoak (result) {
  const { settings, machine } = result
  // Recomputed from the samples, so that the section always follows this file's thresholds.
  const targets = Object.values(result.pools).flatMap((run) => verdicts(run, settings))
  const pools = Object.values(result.pools).map((run) => {
    const total = Object.values(run.requests).reduce((n, c) => n + c.sent, 0)
    return `### ${run.pool}

${num(run.loadSeconds / 60)} min of load, ${total.toLocaleString('en-US')} requests (${num(total / run.loadSeconds)} per second),
${run.churns} deliberate thread deaths; ${run.samples.length} samples. Each cell: median (min–max) over the quarter's samples;
*before* is the baseline after the warm-up pass, *after* the server once the load stopped and it came back to rest
(in ${num(run.drain.ms / 1000)} s, the last 2 s of them steady).

${samplesTable(run)}

${requestsTable(run)}

${logLines(run)}
`
  }).join('\n')
  const body = `
Node.js ${machine.node}, ${machine.cpus} CPUs (${machine.cpuModel}), a shared machine (load average at the start
${machine.loadAverage.join(', ')}), fastify-blocking at commit ${machine.commit}. Run it with \`npm run soak\`
(\`-- --minutes N\`, \`--pool piscina|tinypool\`; see \`bench/soak.js\`).

Server: \`bench/servers/soak.js <pool>\` (${settings.threads} threads, \`minThreads\` = \`maxThreads\`; multipart
\`fileSize\` 512 KiB, \`spoolThreshold\` 64 KiB), a fresh process per pool with \`TMPDIR\` set to a fresh directory,
started with \`--expose-gc\`. It samples itself every ${settings.interval} s: RSS, the main thread's heap after a full
GC, OS threads (\`/proc/self/status\`), \`process.getActiveResourcesInfo()\` by type, files in its temporary
directory and \`app.blocking.stats()\`. Load, from the parent process: ${settings.rate} requests started per second
over at most ${settings.concurrency} connections (below saturation: at saturation the background tasks, which wait
whenever a request does, pile up by design and their backlog would pass for a leak), drawn by weight: \`/ping\`; blocking JSON (1–3 ms of CPU), some of which throw on purpose
(422 and 500); streams of 16–512 KiB; multipart uploads of 1–3 files of 0.5–300 KiB (those above 64 KiB spooled);
uploads over \`fileSize\` (413) and cut short (400); \`reply.background()\` from the main thread (3 tasks with
owned Buffers) and from a worker (2 tasks); and aborted requests, the socket destroyed while a 100 ms handler is
queued or running, at a stream's first bytes (of 32 MiB asked for), or a third of the way through an upload.
Every ${settings.churn} s a thread dies on purpose, alternately by \`process.exit()\` and by a timeout (a
handler that never stops, \`blocking: { timeout: 200 }\`); what it held fails with it (500
\`FST_BLOCKING_WORKER_CRASHED\`, or a stream cut after its head): *collateral* in the tables below, bounded by
${TASKS_PER_THREAD} tasks per death. A request unanswered after ${settings.requestTimeout / 1000} s counts as hung.
Before the load, each kind is sent once and the server left to settle: the *before* column.

Flat means: the last quarter against the second (the first is warm-up): medians of RSS within ${times(GROWTH)}
(a leak of 1 KiB per request would add tens of MiB per quarter at these rates, far beyond it, while GC and
allocator noise stay within it); the heap after a full GC within ${times(GROWTH)} or ${HEAP_SLACK / MiB} MiB (it is
small, so a few MiB is noise); OS threads and active handles not above the second quarter's (handles may move by
the clients' ${settings.concurrency} sockets); and once the load stops, the server back to its baseline: the same
OS threads and the same active handles type by type, no temporary file, nothing queued or running.
${settings.minutes < 10 ? `\nThis run is short (${settings.minutes} min per pool): its quarters are ${num(settings.minutes * 15)} s long, which can show a fast leak but not a slow one; \`npm run soak\` (20 min per pool) is the real test.\n` : ''}
${pools}
${targetsTable(targets)}
`
  return { targets, body }
}
