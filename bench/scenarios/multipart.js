// e. Multipart uploads (issue 5): a `blocking: true` upload route (the body
// parsed in a worker) against @fastify/multipart on the main thread and
// against a floor that only drains the body. How busy is the main thread
// during paced uploads, how fast do uploads go flat out, and does /ping stay
// fast meanwhile?
import { mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { cpuMeter } from '../lib/cpu.js'
import { percentiles, startProbe } from '../lib/harness.js'
import { contenderRows, failures, num, plural, ratio, table, target, targetsTable, times, withSpread } from '../lib/report.js'
import { repeatFor, upload } from '../lib/transfer.js'

export const id = 'multipart'
export const title = 'Multipart uploads'
export const defaults = { warmup: 1, duration: 3, reps: 3 }

const server = fileURLToPath(new URL('../servers/multipart.js', import.meta.url))
const contenders = ['blocking', 'fastify-multipart', 'floor']
const labels = {
  blocking: '`blocking: true` route, parsed in a worker',
  'fastify-multipart': '@fastify/multipart on the main thread',
  floor: 'floor: the body drained, not parsed'
}

const MB = 1e6
const MIB = 2 ** 20
const UPLOADS = 4
/** Bytes/s of each paced upload. */
const PACE = 20 * MB
const FLAT_OUT_SIZE = 50 * MIB
const WARMUP_SIZE = 16 * MIB
/** Under the 100 MiB fileSize limit of both parsers. */
const MAX_PACED_SIZE = 90 * MIB
const interval = 5
/** An upload not answered within this many seconds is aborted and counted as an error. */
const UPLOAD_LIMIT = 30

async function elu (url) {
  return (await fetch(`${url}/elu`)).json()
}

/** UPLOADS uploads at once; resolves to their results. */
function batch (port, size, rate) {
  return Promise.all(Array.from({ length: UPLOADS }, () => upload({ port, size, rate, seconds: UPLOAD_LIMIT })))
}

/** An upload answered 200 with what was sent, as the server counted it (the floor counts the whole body). */
function received (size, r) {
  if (r.error !== undefined || r.status !== 200) return false
  const body = JSON.parse(r.body)
  return body.files === undefined ? body.bytes > size : body.files[0] === size
}

/** UPLOADS uploads at PACE each: the main thread's ELU over them, and what it took. */
async function pacedElu (port, url, pid, size) {
  const meter = cpuMeter({ server: pid })
  const before = await elu(url)
  const results = await batch(port, size, PACE)
  const after = await elu(url)
  const cpu = meter()
  const active = after.active - before.active
  return {
    utilization: active / (active + after.idle - before.idle),
    pace: Math.min(...results.map((r) => r.sent / r.seconds / MB)),
    cpu,
    results
  }
}

function tally (size, results) {
  return {
    errors: results.filter((r) => r.error !== undefined).length,
    non2xx: results.filter((r) => r.error === undefined && !received(size, r)).length
  }
}

export async function run (ctx) {
  // The servers' temporary directory: the blocking server spools files above
  // 1 MiB there. Checked after every run; removed at the end.
  const dir = mkdtempSync(join(tmpdir(), 'fastify-blocking-bench-'))
  const pacedSize = Math.min(MAX_PACED_SIZE, Math.round(PACE * ctx.duration))
  let leftAtEnd
  let runs
  try {
    runs = await ctx.rounds(contenders, async ({ port, url, pid }) => {
      // Fresh: the first uploads the new server sees, paced.
      const fresh = await pacedElu(port, url, pid, pacedSize)
      const warm = await repeatFor(ctx.warmup, () => batch(port, WARMUP_SIZE))

      // Paced, warm: UPLOADS uploads at PACE each; the main thread's ELU over them.
      const { utilization, pace, cpu: pacedCpu, results: paced } = await pacedElu(port, url, pid, pacedSize)

      // Flat out: batches of UPLOADS uploads, while the probe pings /ping.
      const probe = await startProbe(port, { interval })
      const meter = cpuMeter({ server: pid, probe: probe.pid })
      probe.start()
      const flat = await repeatFor(ctx.duration, () => batch(port, FLAT_OUT_SIZE))
      const cpu = meter()
      const ping = percentiles(await probe.stop())
      const flatResults = flat.results.flat()
      const mbPerSec = flatResults.reduce((sum, r) => sum + r.sent, 0) / MB / flat.seconds

      const counts = [tally(pacedSize, fresh.results), tally(WARMUP_SIZE, warm.results.flat()), tally(pacedSize, paced), tally(FLAT_OUT_SIZE, flatResults)]
      const spooled = flatResults.reduce((sum, r) => sum + (r.status === 200 ? JSON.parse(r.body).spooled ?? 0 : 0), 0)
      const result = {
        elu: utilization,
        freshElu: fresh.utilization,
        pace,
        mbPerSec,
        batches: flat.results.length,
        ping,
        pacedCpu,
        // A disturbed round: other processes busy during either phase.
        cpu: { ...cpu, other: Math.max(cpu.other, pacedCpu.other, fresh.cpu.other) },
        spooled,
        // Temporary files still there once every response has come.
        leftover: readdirSync(dir).length,
        errors: counts.reduce((sum, c) => sum + c.errors, 0),
        non2xx: counts.reduce((sum, c) => sum + c.non2xx, 0)
      }
      return {
        ...result,
        summary: `ELU fresh ${num(fresh.utilization)}, warm ${num(utilization)} at ${UPLOADS} x ${num(pace)} MB/s; flat out ${num(mbPerSec)} MB/s, ` +
          `/ping p99 ${num(ping.p99)} ms; ${spooled} files spooled, ${result.leftover} left in the temporary directory`
      }
    }, { server, env: { TMPDIR: dir } })
  } finally {
    leftAtEnd = readdirSync(dir).length
    rmSync(dir, { recursive: true, force: true })
  }
  return { settings: { uploads: UPLOADS, pace: PACE, pacedSize, flatOutSize: FLAT_OUT_SIZE, interval, leftAtEnd }, runs }
}

export function render ({ settings, runs, reps, duration, threads }) {
  const elu = (r) => r.elu
  const rate = (r) => r.mbPerSec
  const p99 = (r) => r.ping.p99
  const freshElu = (r) => r.freshElu
  const rows = contenderRows(runs, contenders, labels, [
    freshElu,
    elu,
    (r) => r.pacedCpu.serverMain,
    (r) => r.pace,
    rate,
    (r) => r.ping.p50,
    p99,
    (r) => r.ping.max,
    (r) => r.cpu.serverMain,
    (r) => r.cpu.server,
    (r) => r.cpu.other
  ])
  const ratios = ['blocking', 'fastify-multipart'].map((c) => [
    labels[c],
    withSpread(ratio(runs, c, 'floor', freshElu), times),
    withSpread(ratio(runs, c, 'floor', elu), times),
    withSpread(ratio(runs, c, 'floor', (r) => r.pacedCpu.serverMain), times),
    c === 'blocking' ? withSpread(ratio(runs, c, 'fastify-multipart', elu), times) : '—',
    c === 'blocking' ? withSpread(ratio(runs, c, 'fastify-multipart', rate), times) : '—',
    c === 'blocking' ? withSpread(ratio(runs, c, 'fastify-multipart', p99), times) : '—'
  ])
  const mainCpu = (r) => r.pacedCpu.serverMain
  const short = { 'fastify-multipart': "@fastify/multipart's", floor: "the floor's" }
  const mainThreadLimit = (other) => 'the main thread no longer parses, but for every chunk of the body (about ' +
    '64 KiB) it posts the bytes to the worker (moved when the chunk owns its buffer, else copied) and takes the ' +
    'chunk\'s buffer back with a credit message (lib/multipart.ts startUpload, workers/multipart.ts): more work ' +
    'than busboy scanning the same chunk. In CPU time its main thread used ' +
    `${times(ratio(runs, 'blocking', other, mainCpu).median)} what ${short[other]} did (median, main thread cores, ` +
    'paced); ELU, wall-clock, adds the time the main thread waits for a core while the worker threads parse ' +
    'and write to disk on the same two cores.'
  const targets = [
    target({
      what: 'blocking, fresh server: main-thread ELU vs the floor',
      goal: '≤ 1.2x',
      measured: ratio(runs, 'blocking', 'floor', freshElu),
      test: (v) => v <= 1.2,
      format: times,
      limit: mainThreadLimit('floor')
    }),
    target({
      what: 'blocking, fresh server: main-thread ELU vs @fastify/multipart',
      goal: '≤ 1x',
      measured: ratio(runs, 'blocking', 'fastify-multipart', freshElu),
      test: (v) => v <= 1,
      format: times,
      limit: mainThreadLimit('fastify-multipart')
    }),
    target({
      what: 'blocking: main-thread ELU vs @fastify/multipart',
      goal: '≤ 1x',
      measured: ratio(runs, 'blocking', 'fastify-multipart', elu),
      test: (v) => v <= 1,
      format: times,
      limit: mainThreadLimit('fastify-multipart')
    }),
    target({
      what: 'blocking: main-thread ELU vs the floor',
      goal: '≤ 1.2x',
      measured: ratio(runs, 'blocking', 'floor', elu),
      test: (v) => v <= 1.2,
      format: times,
      limit: mainThreadLimit('floor')
    }),
    target({
      what: 'blocking: flat-out MB/s vs @fastify/multipart',
      goal: '≥ 1x',
      measured: ratio(runs, 'blocking', 'fastify-multipart', rate),
      test: (v) => v >= 1,
      format: times,
      limit: 'every chunk is copied and posted by the main thread, received and acknowledged by a worker, and ' +
        'every file is written to disk in the worker (files above `spoolThreshold`, 1 MiB), while ' +
        '@fastify/multipart here parses on the main thread and discards the file: more work in all, and all of ' +
        'it shares two cores with the client that sends the uploads.'
    }),
    target({
      what: 'blocking: /ping p99 during flat-out uploads vs @fastify/multipart',
      goal: '≤ 1x',
      measured: ratio(runs, 'blocking', 'fastify-multipart', p99),
      test: (v) => v <= 1,
      format: times,
      limit: 'the main thread answers /ping between chunks in both cases, and with the blocking route it has ' +
        'more to do per chunk (see above) while sharing the two cores with the worker threads that parse and ' +
        'write to disk, so a ping waits longer for its turn.'
    })
  ]
  const left = runs.reduce((sum, r) => sum + r.leftover, 0)
  return {
    targets,
    body: `
Server: \`bench/servers/multipart.js <contender>\`, a fresh process per run. \`POST /upload\` takes a
\`multipart/form-data\` body with one file (built by hand in \`bench/lib/transfer.js\`: one random
64 KiB block repeated, written in 64 KiB chunks), under a 100 MiB \`fileSize\` limit everywhere:

- ${labels.blocking}: the handler (\`defineHandler\`) returns the sizes of \`request.files\`; piscina,
  ${threads} threads (an upload waiting for its client's bytes does not hold a thread).
  **Files above \`spoolThreshold\` (default 1 MiB), so every file here, are spooled by the worker to a
  temporary file in \`os.tmpdir()\`**, deleted once the handler has returned. The server runs with
  \`TMPDIR\` set to a directory of the benchmark's own, checked after every run and removed at the end:
  ${left === 0 && settings.leftAtEnd === 0 ? 'no file was ever left in it' : `**${left} files were left in it after the runs, ${settings.leftAtEnd} at the end**`}.
- ${labels['fastify-multipart']}: \`await request.file()\`, its stream piped to a \`Writable\` that counts
  the bytes (nothing written to disk).
- ${labels.floor}: a content-type parser for \`multipart/form-data\` that consumes the body and counts it.

Each run: *fresh*, the new server's first ${settings.uploads} uploads, paced as below; warmup (batches of
${settings.uploads} uploads of ${num(WARMUP_SIZE / MIB)} MiB); then *paced*,
${settings.uploads} uploads of ${num(settings.pacedSize / MB)} MB at once, each written at
${num(settings.pace / MB)} MB/s on a timer, with the main thread's event-loop utilization
(\`performance.eventLoopUtilization()\` read by \`GET /elu\` before and after) over them; then *flat out*,
batches of ${settings.uploads} concurrent ${num(FLAT_OUT_SIZE / MIB)} MiB uploads for ${duration} s (whole
batches, at least one), MB/s = bytes sent / time, while the probe sends \`GET /ping\` every
${settings.interval} ms. MB = 10⁶ bytes.
Median of ${plural(reps, 'run')} per contender, with the range (min–max) in brackets.

${table(['contender', 'ELU, fresh', 'ELU, paced', 'main thread cores, paced', 'slowest paced upload MB/s', 'flat-out MB/s', '/ping p50 ms', '/ping p99 ms', '/ping max ms', 'main thread cores, flat out', 'server cores, flat out', 'other processes, cores'], rows)}

*ELU* is wall-clock time: the share of the phase the main thread was not waiting for I/O, including
time it was ready to run but had no core. *Main thread cores* is the CPU time it got (from /proc), per
second. ${failures(runs, labels)}

Ratios, each taken between runs made in the same round:

${table(['contender', 'ELU vs floor, fresh', 'ELU vs floor', 'main thread cores, paced, vs floor', 'ELU vs @fastify/multipart', 'flat-out MB/s vs @fastify/multipart', '/ping p99 vs @fastify/multipart'], ratios)}

${targetsTable(targets)}
`
  }
}
