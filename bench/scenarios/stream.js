// c. Streaming (issue 3): a generator handler yields 256 MiB in 64 KiB chunks,
// from a worker (`blocking: true`, piscina and tinypool) or inline on the main
// thread (the same generator as Readable.from(gen())). How fast can one client
// read it, and how much memory does the server take while a slow client reads?
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { cpuMeter } from '../lib/cpu.js'
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
    const all = [first, ...fast.results]
    const result = {
      mibPerSec,
      transfers: fast.results.length,
      // Server CPU per MiB sent, µs: main thread and all threads.
      mainUsPerMib: cpu.serverMain * fast.seconds / (bytes / MIB) * 1e6,
      serverUsPerMib: cpu.server * fast.seconds / (bytes / MIB) * 1e6,
      memory: { idle, peak, growth: peak - idle, samples, slowMib: slow.bytes / MIB, slowSeconds: slow.seconds },
      // A disturbed round: other processes busy during either phase.
      cpu: { ...cpu, other: Math.max(cpu.other, slowCpu.other) },
      slowCpu,
      errors: all.filter((r) => !r.complete).length + (slow.error === undefined ? 0 : 1),
      non2xx: [...all, slow].filter((r) => r.status !== 200).length
    }
    return {
      ...result,
      summary: `${num(mibPerSec)} MiB/s (${plural(fast.results.length, 'stream')}); slow client: ${num(slow.bytes / MIB)} MiB read, ` +
        `RSS ${num(idle / MIB)} MiB idle, peak +${num((peak - idle) / MIB)} MiB`
    }
  }, { server })
  return { settings: { streamMib: STREAM_MIB, chunk: 64 * 1024, slowRate: SLOW_RATE, slowSeconds }, runs }
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
  const targets = blockingPools.flatMap((pool) => [
    target({
      what: `${pool}: stream MiB/s vs inline`,
      goal: '≥ 0.8x',
      measured: ratio(runs, pool, 'inline', rate),
      test: (v) => v >= 0.8,
      format: times,
      limit: `the server spends ${times(ratio(runs, pool, 'inline', (r) => r.serverUsPerMib).median)} the CPU per MiB ` +
        'that inline does (median, all threads): each chunk is copied once more in the worker (a yielded Buffer ' +
        'is copied before it is transferred, so that the generator keeps its own) and crosses threads as a ' +
        'message, with a credit message back for it. With the default `highWaterMark` (64 KiB, one chunk) the ' +
        'worker may run only one chunk ahead of the socket and waits for a credit after every chunk. Inline, one core sends while the other reads; blocking needs a third busy ' +
        'thread, and two cores shared with the reading client have none to spare.'
    }),
    target({
      what: `${pool}: peak RSS above idle, slow client`,
      goal: '≤ 32 MiB',
      measured: spread(byContender(runs, pool), growth),
      test: (v) => v <= 32,
      format: (v) => `${num(v)} MiB`,
      limit: 'what grows is garbage awaiting collection, not buffered data: bytes in flight stay within ' +
        '`highWaterMark`, but every 64 KiB chunk leaves ArrayBuffers behind (the generator\'s own, the copy ' +
        'sent, and the main thread\'s view of it), which V8 frees only when it collects. Each thread\'s heap ' +
        'lets some tens of MiB of them pile up between collections (in the worker, ' +
        '`process.memoryUsage().arrayBuffers` saws up and down), and a worker adds its own heap to the ' +
        `main thread's. Inline, with the same fresh chunks, grows by ${inlineGrowth} MiB (median) too.`
    })
  ])
  return { targets, body: `
\`GET /stream\` sends ${settings.streamMib} MiB in ${settings.chunk / 1024} KiB chunks, each a fresh \`Buffer\`
yielded by the same generator function (\`bench/servers/worker-functions.js\`): as a \`blocking: true\`
generator handler (default \`highWaterMark\`, 64 KiB) on ${threads} pool threads, or inline, where the
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

Median of ${plural(reps, 'run')} per contender, with the range (min–max) in brackets.

${table(['contender', 'MiB/s', 'server main thread, cores', 'main thread µs/MiB', 'all threads µs/MiB', 'other processes, cores', 'idle RSS MiB', 'peak RSS MiB', 'growth MiB', 'slow client read MiB'], rows)}

CPU from /proc during the throughput phase: µs of server CPU per MiB sent, on the main thread and on
all of its threads. ${failures(runs, labels)} (The slow client aborting on purpose is not counted.)

Ratios, each taken between runs made in the same round:

${table(['blocking contender', 'MiB/s vs inline', 'all threads µs/MiB vs inline', 'main thread µs/MiB vs inline'], ratios)}

${targetsTable(targets)}
` }
}
