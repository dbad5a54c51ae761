// g. The cost of detectBlocking: a trivial route answered on the main thread,
// with the plugin registered, detector off against detector on. Is it cheap
// enough to leave on in production?
import { measure } from '../lib/harness.js'
import { contenderRows, failures, num, plural, ratio, table, target, targetsTable, times, withSpread, difference } from '../lib/report.js'

export const id = 'detect'
export const title = 'Cost of detectBlocking'
export const defaults = { warmup: 1, duration: 4 }

const connections = 16
const contenders = ['plugin-inline', 'plugin-detect']
const labels = {
  'plugin-inline': 'plugin registered, `detectBlocking` off',
  'plugin-detect': '`detectBlocking: { thresholdMs: 1000 }`'
}

/** CPU µs the server's main thread spent per request. */
const mainUs = (r) => r.cpu.serverMain / r.requestsPerSec * 1e6

export async function run (ctx) {
  const runs = await ctx.rounds(contenders, async (server) => {
    const r = await measure({ server, path: '/ok', connections, warmup: ctx.warmup, duration: ctx.duration })
    return { ...r, summary: `${num(r.requestsPerSec)} req/s, main thread ${num(mainUs(r))} µs/req` }
  })
  return { settings: { connections }, runs }
}

export function render ({ settings, runs, reps, duration }) {
  const rps = (r) => r.requestsPerSec
  const rows = contenderRows(runs, contenders, labels, [rps, (r) => r.latency.p50, (r) => r.latency.p99, mainUs, (r) => r.cpu.other])
  const targets = [
    target({
      what: 'detectBlocking: req/s of a main-thread route vs detector off',
      goal: '≥ 0.97x',
      measured: ratio(runs, 'plugin-detect', 'plugin-inline', rps),
      test: (v) => v >= 0.97,
      format: times,
      limit: 'the detector adds two performance.now() calls and a closure call per handler and route hook; a gap larger than that is the noise of the shared machine (see the range).'
    })
  ]
  return {
    targets,
    body: `
\`GET /ok\` returns \`{ ok: true }\` from the main thread (no \`blocking\`), with the plugin
registered in both servers; one with \`detectBlocking\` off, one with it on and a threshold of
1000 ms that no request reaches, so what is measured is the timing itself.
${settings.connections} autocannon connections for ${duration} s per run.
Median of ${plural(reps, 'run')} per contender, with the range (min–max) in brackets.

${table(['contender', 'req/s', 'p50 ms', 'p99 ms', 'main thread µs/req', 'other processes, cores'], rows)}

${failures(runs, labels)}

Ratios and differences, each taken between runs made in the same round:

${table(['', 'req/s, on vs off', 'main thread µs/req added'], [[
  'detectBlocking',
  withSpread(ratio(runs, 'plugin-detect', 'plugin-inline', rps), times),
  withSpread(difference(runs, 'plugin-detect', 'plugin-inline', mainUs), num)
]])}

${targetsTable(targets)}
`
  }
}
