// c. Streaming (issue 3): a generator handler yields 256 MiB in 64 KiB chunks,
// from a worker (`blocking: true`, piscina and tinypool) or inline on the main
// thread (the same generator as Readable.from(gen())). How fast can one client
// read it, and how much memory does the server take while a slow client reads?
import { setTimeout as sleep } from 'node:timers/promises'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { cpuMeter } from '../lib/cpu.js'
import { startProbe, percentiles } from '../lib/harness.js'
import { rss, sampleRss } from '../lib/memory.js'
import { byContender, contenderRows, failures, median, num, plural, ratio, spread, table, target, targetsTable, times, withSpread } from '../lib/report.js'
import { download, repeatFor } from '../lib/transfer.js'
import { blockingPools, labels as poolLabels } from './contenders.js'

export const id = 'stream'
export const title = 'Streaming from a worker'
export const defaults = { warmup: 1, duration: 3, reps: 3 }

const server = fileURLToPath(new URL('../servers/stream.js', import.meta.url))
const contenders = ['inline', ...blockingPools]
const labels = { ...poolLabels, inline: 'inline: `reply.send(Readable.from(gen()))`' }

const MIB = 2 ** 20
const STREAM_MIB = 256
/** The slow client's pace, bytes/s. */
const SLOW_RATE = 10 * MIB
/** A transfer that takes longer than this is cut (and counted as an error). */
const TRANSFER_LIMIT = 30
/** Clients reading at once in the parallel phase, and the MiB each stream sends there. */
const PARALLEL = 4
const PARALLEL_MIB = 64
/** Rows of the CSV export (about 35 bytes each, one `yield` a row). */
const EXPORT_ROWS = 200_000
/** ms between two /ping requests of the probe during the export. */
const PING_INTERVAL = 5

export async function run (ctx) {
  const slowSeconds = Math.min(10, 2 * ctx.duration)
  const path = `/stream?mib=${STREAM_MIB}`
  const runs = await ctx.rounds(contenders, async ({ port, pid }) => {
    // A short stream first, so that a thread has loaded the handler; then the idle memory.
    const first = await download({ port, path: '/stream?mib=4', seconds: TRANSFER_LIMIT })
    await sleep(300)
    const idleSamples = []
    for (let i = 0; i < 5; i++, await sleep(50)) idleSamples.push(rss(pid))
    const idle = median(idleSamples)

    // A slow client reads for slowSeconds, then goes away.
    const slowMeter = cpuMeter({ server: pid })
    const sampler = sampleRss(pid, 50)
    const slow = await download({ port, path, rate: SLOW_RATE, seconds: slowSeconds })
    const { peak, samples } = sampler.stop()
    const slowCpu = slowMeter()

    // One client reads flat out, stream after stream: warmup, then the measured seconds.
    await repeatFor(ctx.warmup, () => download({ port, path, seconds: TRANSFER_LIMIT }))
    const meter = cpuMeter({ server: pid })
    const fast = await repeatFor(ctx.duration, () => download({ port, path, seconds: TRANSFER_LIMIT }))
    const cpu = meter()
    const bytes = fast.results.reduce((sum, r) => sum + r.bytes, 0)
    const mibPerSec = bytes / MIB / fast.seconds
    // Four clients at once: the generators may run on both threads.
    const parallelMeter = cpuMeter({ server: pid })
    const parallelStarted = performance.now()
    const parallel = await Promise.all(Array.from({ length: PARALLEL }, () =>
      repeatFor(ctx.duration, () => download({ port, path: `/stream?mib=${PARALLEL_MIB}`, seconds: TRANSFER_LIMIT }))))
    const parallelSeconds = (performance.now() - parallelStarted) / 1000
    const parallelCpu = parallelMeter()
    const parallelBytes = parallel.reduce((sum, p) => sum + p.results.reduce((s, r) => s + r.bytes, 0), 0)

    // A CSV export, one row per yield, with /ping probed beside it.
    const exportPath = `/rows?rows=${EXPORT_ROWS}`
    await download({ port, path: exportPath, seconds: TRANSFER_LIMIT })
    const pinger = await startProbe(port, { interval: PING_INTERVAL })
    const exportMeter = cpuMeter({ server: pid, probe: pinger.pid })
    pinger.start()
    const exported = await repeatFor(ctx.duration, () => download({ port, path: exportPath, seconds: TRANSFER_LIMIT }))
    const exportCpu = exportMeter()
    const pings = percentiles(await pinger.stop())
    const exportRows = exported.results.filter((r) => r.complete).length * EXPORT_ROWS

    const all = [first, ...fast.results, ...parallel.flatMap((p) => p.results), ...exported.results]
    const result = {
      mibPerSec,
      transfers: fast.results.length,
      // Server CPU per MiB sent, µs: main thread and all threads.
      mainUsPerMib: cpu.serverMain * fast.seconds / (bytes / MIB) * 1e6,
      serverUsPerMib: cpu.server * fast.seconds / (bytes / MIB) * 1e6,
      memory: { idle, peak, growth: peak - idle, samples, slowMib: slow.bytes / MIB, slowSeconds: slow.seconds },
      parallel: { mibPerSec: parallelBytes / MIB / parallelSeconds, cpu: parallelCpu },
      export: { rowsPerSec: exportRows / exported.seconds, cpu: exportCpu, ping: pings },
      // A disturbed round: other processes busy during any phase.
      cpu: { ...cpu, other: Math.max(cpu.other, slowCpu.other, parallelCpu.other, exportCpu.other) },
      slowCpu,
      errors: all.filter((r) => !r.complete).length + (slow.error === undefined ? 0 : 1),
      non2xx: [...all, slow].filter((r) => r.status !== 200).length
    }
    return {
      ...result,
      summary: `${num(mibPerSec)} MiB/s (${plural(fast.results.length, 'stream')}); ${PARALLEL} clients ${num(parallelBytes / MIB / parallelSeconds)} MiB/s; ` +
        `export ${num(exportRows / exported.seconds)} rows/s, /ping p99 ${num(pings.p99)} ms; slow client: ${num(slow.bytes / MIB)} MiB read, ` +
        `RSS ${num(idle / MIB)} MiB idle, peak +${num((peak - idle) / MIB)} MiB`
    }
  }, { server })
  return { settings: { streamMib: STREAM_MIB, chunk: 64 * 1024, slowRate: SLOW_RATE, slowSeconds, parallel: PARALLEL, parallelMib: PARALLEL_MIB, exportRows: EXPORT_ROWS, pingInterval: PING_INTERVAL }, runs }
}

const mib = (bytes) => bytes / MIB

export function render ({ settings, runs, reps, threads }) {
  const rate = (r) => r.mibPerSec
  const growth = (r) => mib(r.memory.growth)
  const rows = contenderRows(runs, contenders, labels, [
    rate,
    (r) => r.cpu.serverMain,
    (r) => r.mainUsPerMib,
    (r) => r.serverUsPerMib,
    (r) => r.cpu.other,
    (r) => mib(r.memory.idle),
    (r) => mib(r.memory.peak),
    growth,
    (r) => r.memory.slowMib
  ])
  const ratios = blockingPools.map((pool) => [
    labels[pool],
    withSpread(ratio(runs, pool, 'inline', rate), times),
    withSpread(ratio(runs, pool, 'inline', (r) => r.serverUsPerMib), times),
    withSpread(ratio(runs, pool, 'inline', (r) => r.mainUsPerMib), times)
  ])
  const inlineGrowth = num(spread(byContender(runs, 'inline'), growth).median)
  const parallelRate = (r) => r.parallel?.mibPerSec
  const rowsRate = (r) => r.export?.rowsPerSec
  const pingP99 = (r) => r.export?.ping.p99
  const targets = blockingPools.flatMap((pool) => [
    target({
      what: `${pool}: stream MiB/s vs inline, one client`,
      goal: '≥ 1.0x',
      measured: ratio(runs, pool, 'inline', rate),
      test: (v) => v >= 1.0,
      format: times,
      limit: `the server spends ${times(ratio(runs, pool, 'inline', (r) => r.serverUsPerMib).median)} the CPU per MiB ` +
        'that inline does (median, all threads): each chunk is copied once more in the worker (a yielded Buffer ' +
        'is copied, so that the generator keeps its own) and crosses threads, and the main thread pays for ' +
        'memory it did not allocate: a transferred buffer is external memory to V8, whose growth brings full ' +
        'collections (perf: mark-compact is some 15-25% of the main thread here, against ~5% inline). Inline, ' +
        'one core sends while the other reads; blocking needs a third busy thread.'
    }),
    target({
      what: `${pool}: ${settings.parallel} clients at once, MiB/s vs inline`,
      goal: '≥ 1.5x',
      measured: ratio(runs, pool, 'inline', parallelRate),
      test: (v) => v >= 1.5,
      format: times,
      limit: 'the generators run on both threads, but the main thread still receives and writes every byte, ' +
        'and the clients read on the same two cores.'
    }),
    target({
      what: `${pool}: CSV export rows/s vs inline (one row a yield)`,
      goal: '≥ 1.0x',
      measured: ratio(runs, pool, 'inline', rowsRate),
      test: (v) => v >= 1.0,
      format: times
    }),
    target({
      what: `${pool}: /ping p99 during the export vs inline`,
      goal: '≤ 1.0x',
      measured: ratio(runs, pool, 'inline', pingP99),
      test: (v) => v <= 1.0,
      format: times
    }),
    target({
      what: `${pool}: peak RSS above idle, slow client`,
      goal: '≤ 32 MiB',
      measured: spread(byContender(runs, pool), growth),
      test: (v) => v <= 32,
      format: (v) => `${num(v)} MiB`,
      limit: 'what grows is garbage awaiting collection, not buffered data: bytes in flight stay within ' +
        '`highWaterMark`, but every chunk leaves ArrayBuffers behind, which V8 frees only when it collects, ' +
        `and a worker adds its own heap to the main thread's. Inline, with the same fresh chunks, grows by ${inlineGrowth} MiB (median) too.`
    })
  ])
  const exportRows = contenderRows(runs, contenders, labels, [
    parallelRate,
    rowsRate,
    pingP99,
    (r) => r.export?.ping.p50,
    (r) => r.export?.cpu.serverMain
  ])
  return {
    targets,
    body: `
\`GET /stream\` sends ${settings.streamMib} MiB in ${settings.chunk / 1024} KiB chunks, each a fresh \`Buffer\`
yielded by the same generator function (\`bench/servers/worker-functions.js\`): as a \`blocking: true\`
generator handler (default \`highWaterMark\`, 1 MiB) on ${threads} pool threads, or inline, where the
main thread sends \`Readable.from(gen())\`. Server: \`bench/servers/stream.js <contender>\`, a fresh
process per run. Each run, in this order:

1. *Memory.* After a 4 MiB stream (so that a thread has loaded the handler) and 0.3 s of rest, the
   idle RSS is the median of 5 readings of \`VmRSS\` (\`/proc/<pid>/status\`, the whole process,
   worker threads included). Then a client reads the ${settings.streamMib} MiB stream at
   ${num(mib(settings.slowRate))} MiB/s (pausing the response) for ${settings.slowSeconds} s and aborts;
   meanwhile the bench process reads \`VmRSS\` every 50 ms. Growth = peak minus idle.
2. *Throughput.* One client (\`http.get\` in the bench process) reads whole streams back to back as fast
   as it can: warmup, then the measured seconds (whole streams, at least one); MiB/s = bytes read /
   time. The client shares the two cores with the server.
3. *Parallel.* ${settings.parallel} clients read ${settings.parallelMib} MiB streams back to back at once
   for the measured seconds; MiB/s = all bytes read / time.
4. *Export.* One client reads \`GET /rows\`, a CSV export of ${settings.exportRows} rows of ~35 bytes
   made by a generator that yields one row (a string) at a time, back to back for the measured
   seconds, while a probe process sends \`GET /ping\` every ${settings.pingInterval} ms.

Median of ${plural(reps, 'run')} per contender, with the range (min–max) in brackets.

${table(['contender', 'MiB/s', 'server main thread, cores', 'main thread µs/MiB', 'all threads µs/MiB', 'other processes, cores', 'idle RSS MiB', 'peak RSS MiB', 'growth MiB', 'slow client read MiB'], rows)}

CPU from /proc during the throughput phase: µs of server CPU per MiB sent, on the main thread and on
all of its threads. ${failures(runs, labels)} (The slow client aborting on purpose is not counted.)

Ratios, each taken between runs made in the same round:

${table(['blocking contender', 'MiB/s vs inline', 'all threads µs/MiB vs inline', 'main thread µs/MiB vs inline'], ratios)}

Four clients at once, and the CSV export with /ping beside it:

${table(['contender', `${settings.parallel} clients MiB/s`, 'export rows/s', '/ping p99 ms', '/ping p50 ms', 'server main thread, cores'], exportRows)}

${targetsTable(targets)}
`
  }
}
