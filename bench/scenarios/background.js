// d. Background backlog (issue 4): does a trivial blocking route stay fast
// while 10,000 background tasks of 5 ms wait for the same two threads?
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { measure } from '../lib/harness.js'
import { byContender, contenderRows, failures, num, plural, spread, table, target, targetsTable, times } from '../lib/report.js'
import { blockingPools, labels as poolLabels } from './contenders.js'

export const id = 'background'
export const title = 'Requests beside a background backlog'
export const defaults = { warmup: 1, duration: 3, reps: 3 }

const server = fileURLToPath(new URL('../servers/background.js', import.meta.url))
/** The pools as configured by default, and piscina with its threads at the lowest priority (no target: it shows what the CPU share costs). */
const bg19 = blockingPools.map((pool) => `${pool}-bg19`)
const contenders = [...blockingPools, 'piscina-priority', ...bg19]
const labels = {
  ...poolLabels,
  'piscina-priority': "blocking, `pool: 'piscina'`, `priority: 19`",
  ...Object.fromEntries(blockingPools.map((pool) => [`${pool}-bg19`, `${poolLabels[pool]}, \`priority: { background: 19 }\``]))
}
const connections = 10
const TASKS = 10_000
const TASK_MS = 5

async function stats (url) {
  const res = await fetch(`${url}/stats`)
  return (await res.json()).background
}

export async function run (ctx) {
  const runs = await ctx.rounds(contenders, async (server) => {
    const unloaded = await measure({ server, path: '/ok', connections, warmup: ctx.warmup, duration: ctx.duration })
    // The backlog: one request whose handler calls reply.background() TASKS times.
    const res = await fetch(`${server.url}/backlog?n=${TASKS}&ms=${TASK_MS}`, { method: 'POST' })
    if (res.status !== 200) throw new Error(`POST /backlog: ${res.status} ${await res.text()}`)
    // The tasks are queued once the response is over: wait until the queue holds them.
    let before = await stats(server.url)
    for (let i = 0; i < 40 && before.queued + before.running + before.completed < TASKS; i++) {
      await sleep(25)
      before = await stats(server.url)
    }
    const loaded = await measure({ server, path: '/ok', connections, duration: ctx.duration })
    const after = await stats(server.url)
    const result = {
      unloaded,
      loaded,
      backlog: {
        queuedAtStart: before.queued,
        queuedAtEnd: after.queued,
        ranDuringLoad: after.completed - before.completed,
        failed: after.failed
      },
      cpu: { ...loaded.cpu, other: Math.max(loaded.cpu.other, unloaded.cpu.other) },
      errors: unloaded.errors + loaded.errors,
      non2xx: unloaded.non2xx + loaded.non2xx
    }
    return {
      ...result,
      summary: `p99 ${num(unloaded.latency.p99)} ms alone, ${num(loaded.latency.p99)} ms with ${after.queued} tasks still queued ` +
        `(${num(unloaded.requestsPerSec)} -> ${num(loaded.requestsPerSec)} req/s, ${result.backlog.ranDuringLoad} tasks ran meanwhile)`
    }
  }, { server })
  return { settings: { connections, tasks: TASKS, taskMs: TASK_MS }, runs }
}

export function render ({ settings, runs, reps, duration, threads }) {
  const growth = (r) => r.loaded.latency.p99 / r.unloaded.latency.p99
  const rows = contenderRows(runs, contenders, labels, [
    (r) => r.unloaded.requestsPerSec,
    (r) => r.unloaded.latency.p50,
    (r) => r.unloaded.latency.p99,
    (r) => r.loaded.requestsPerSec,
    (r) => r.loaded.latency.p50,
    (r) => r.loaded.latency.p99,
    [growth, times],
    (r) => r.backlog.ranDuringLoad,
    (r) => r.backlog.queuedAtEnd,
    (r) => r.loaded.cpu.server,
    (r) => r.cpu.other
  ])
  const targets = blockingPools.map((pool) => target({
    what: `${pool}: /ok p99 with ${num(settings.tasks)} queued tasks vs none`,
    goal: '≤ 2x',
    measured: spread(byContender(runs, pool), growth),
    test: (v) => v <= 2,
    format: times,
    limit: `requests pass every queued background task, but never a running one: with ${threads} threads both ` +
      `busy with ${settings.taskMs} ms tasks whenever no request waits, a request that arrives then waits up to ` +
      `${settings.taskMs} ms for a thread, several times the route's own latency. And the busy-waiting tasks take ` +
      'both cores, which the main thread and autocannon then share with them: with `priority: 19` (last row), ' +
      `the ratio is ${times(spread(byContender(runs, 'piscina-priority'), growth).median)} (median), at the price of ` +
      'fewer background tasks run meanwhile. ' +
      'Keeping a thread free of background work (a cap on the threads the background lane may use) would remove ' +
      'most of the wait for a thread.'
  }))
  for (const pool of blockingPools) {
    targets.push(target({
      what: `${pool}, \`priority: { background: 19 }\`: /ok p99 with ${num(settings.tasks)} queued tasks vs none`,
      goal: '≤ 2x',
      measured: spread(byContender(runs, `${pool}-bg19`), growth),
      test: (v) => v <= 2,
      format: times,
      limit: 'the background tasks run on threads of their own at the lowest priority, so a request never waits for a thread; ' +
        'what is left is the CPU: the request threads, the main thread and autocannon still share two cores with ' +
        'busy-waiting threads, which the OS scheduler lowers but does not stop (a nice-19 thread keeps a small share).'
    }))
  }
  return {
    targets,
    body: `
Server: \`bench/servers/background.js <pool>\` (${threads} threads, \`backgroundQueue\` 100,000), a fresh
process per run. \`priority: 19\` is piscina with every pool thread at the lowest scheduling priority,
shown for comparison, with no target of its own; the \`priority: { background: 19 }\` rows run background
tasks on ${threads} threads of their own at the lowest priority, beside ${threads} request threads at normal priority. \`GET /ok\` is the blocking
route of the overhead scenario (\`{ ok: true }\`).
Each run: *alone*, ${settings.connections} autocannon connections on \`/ok\` (warmup, then ${duration} s);
then \`POST /backlog\`, whose main-thread handler calls \`reply.background(spin, ${settings.taskMs})\`
${num(settings.tasks)} times (\`spin\`, made with \`defineTask\`, busy-waits ${settings.taskMs} ms), and once
the tasks are queued, *with backlog*, the same load for ${duration} s on the same server. The backlog
(${num(settings.tasks * settings.taskMs / threads / 1000)} s of work for ${threads} threads) outlasts the run;
the last columns say how many tasks ran meanwhile and how many still waited at the end.
Median of ${plural(reps, 'run')} per pool, with the range (min–max) in brackets; the ratio is taken within each run.

${table(['pool', 'alone req/s', 'alone p50 ms', 'alone p99 ms', 'with backlog req/s', 'with backlog p50 ms', 'with backlog p99 ms', 'p99 with / alone', 'tasks run during the load', 'tasks queued at the end', 'server cores with backlog', 'other processes, cores'], rows)}

${failures(runs, labels)}

${targetsTable(targets)}
`
  }
}
