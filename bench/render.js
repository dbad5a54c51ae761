// docs/benchmarks.md from the latest result of each scenario: the machine and
// the method once, then every scenario's section, then all targets together.
// A scenario's render() may also give `files` ({ 'event-loop.svg': text }),
// written next to it in docs/. The soak test (bench/soak.js, its report in
// bench/soak-report.js) and the durable queue's benchmark (bench/durable.js,
// bench/durable-report.js) get a section too, when both their result and
// their report module are there.
//
//   node bench/render.js    re-renders docs/ from bench/results/ without measuring
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { plural, table } from './lib/report.js'
import { scenarios } from './scenarios/index.js'

const here = (path) => fileURLToPath(new URL(path, import.meta.url))
const resultsDir = here('./results/')
const docsDir = here('../docs/')

const letters = 'abcdefghijklmnopqrstuvwxyz'

function machineLines (m) {
  return [
    `- Node.js ${m.node} on ${m.platform}`,
    `- ${m.cpus} CPUs as the OS reports them (\`os.availableParallelism()\` = ${m.availableParallelism}), ${m.cpuModel}, ${m.memoryGiB} GiB of memory; a shared machine (load average at the start: ${m.loadAverage.join(', ')})`,
    `- fastify-blocking at commit ${m.commit}`
  ].join('\n')
}

/**
 * The rounds a section counts: those no other process disturbed, when there
 * are enough of them (3, or all that were asked for); else every round.
 */
function counted (result) {
  const rounds = new Set(result.runs.map((r) => r.rep))
  const clean = new Set(result.runs.filter((r) => r.disturbed !== true).map((r) => r.rep))
  if (result.disturbedAbove === undefined) return { runs: result.runs, reps: rounds.size, note: plural(rounds.size, 'round') }
  const limit = `other processes used more than ${result.disturbedAbove} cores during one of its runs`
  if (clean.size === rounds.size) {
    return { runs: result.runs, reps: rounds.size, note: `${plural(rounds.size, 'round')}, none disturbed (${limit.replace('used', 'never used').replace('during one of its runs', 'during a run')})` }
  }
  if (clean.size >= Math.min(3, result.reps)) {
    return {
      runs: result.runs.filter((r) => clean.has(r.rep)),
      reps: clean.size,
      note: `${plural(clean.size, 'round')} counted; ${plural(rounds.size - clean.size, 'more round')} set aside as disturbed (${limit})`
    }
  }
  return { runs: result.runs, reps: rounds.size, note: `${plural(rounds.size, 'round')}, all counted although ${clean.size === 0 ? 'every one was' : `all but ${clean.size} were`} disturbed (a round is disturbed when ${limit}): read these figures as measured on a busy machine` }
}

/** The latest result of each scenario that has one, in the report's order. */
export function loadLatest () {
  return scenarios
    .filter((s) => existsSync(`${resultsDir}${s.id}.json`))
    .map((s) => ({ scenario: s, result: JSON.parse(readFileSync(`${resultsDir}${s.id}.json`, 'utf8')) }))
}

/**
 * The section of a benchmark with a runner of its own (bench/soak.js,
 * bench/durable.js), when bench/results/<id>.json and bench/<id>-report.js
 * (exporting <renderName>(result) -> { targets, body }) are both there; else
 * undefined. A report that fails says so in its section.
 */
async function standaloneSection (id, title, renderName) {
  const file = `${resultsDir}${id}.json`
  const module = here(`./${id}-report.js`)
  if (!existsSync(file) || !existsSync(module)) return undefined
  const scenario = { id, title, standalone: true }
  let result
  try {
    result = JSON.parse(readFileSync(file, 'utf8'))
    const report = await import(pathToFileURL(module).href)
    if (typeof report.title === 'string') scenario.title = report.title
    const { targets = [], body = '', files = {}, note } = await report[renderName](result)
    return { scenario, result, targets, body, files, note: note ?? (result.command === undefined ? 'see its section' : `measured with \`${result.command}\``) }
  } catch (err) {
    return { scenario, result: result ?? {}, targets: [], files: {}, note: 'its report failed', body: `\nThe ${id} report (\`bench/${id}-report.js\`) could not be rendered: ${err.message.replaceAll(process.cwd() + '/', '')}\n` }
  }
}

/** Sections header of a scenario: when and how it was measured, and which rounds count. */
function measuredLine (s) {
  if (s.scenario.standalone === true) {
    const when = typeof s.result.date === 'string' ? `Measured ${s.result.date.slice(0, 16).replace('T', ' ')} UTC` : ''
    const how = s.result.command === undefined ? '' : `${when === '' ? 'Measured' : ''} with \`${s.result.command}\``
    return when + how === '' ? '' : `${when}${how}.\n`
  }
  return `Measured ${s.result.date.slice(0, 16).replace('T', ' ')} UTC with \`${s.result.command}\`
(${s.result.warmup} s warmup + ${s.result.duration} s per run, ${s.result.threads} pool threads): ${s.note}
`
}

/** docs/benchmarks.md as text, and the files the sections draw ({ name in docs/: text }). */
export async function render (latest) {
  if (latest.length === 0) return { markdown: '# Benchmarks\n\nNo results yet: run `npm run bench`.\n', files: {} }
  const newest = latest.reduce((a, b) => (a.result.date > b.result.date ? a : b)).result
  const sections = latest.map(({ scenario, result }, i) => {
    const { runs, reps, note } = counted(result)
    const failed = (result.failures ?? []).map((f) => ` Round ${f.rep} was dropped: ${f.contender} failed (${f.error}).`).join('')
    return { scenario, result, note: note + '.' + failed, letter: letters[i], ...scenario.render({ ...result, runs, reps }) }
  })
  for (const [id, title, renderName] of [['soak', 'Soak', 'renderSoak'], ['durable', 'Durable background tasks', 'renderDurable']]) {
    const section = await standaloneSection(id, title, renderName)
    if (section !== undefined) sections.push({ ...section, letter: letters[sections.length] })
  }
  const files = Object.assign({}, ...sections.map((s) => s.files ?? {}))
  const summary = sections.flatMap((s) => s.targets.map((t) => [`${s.letter}. ${s.scenario.title}`, t.what, t.goal, t.measured, t.pass ? '**PASS**' : '**MISS**']))
  const passed = summary.filter((row) => row[4] === '**PASS**').length
  const markdown = `# Benchmarks

This file is written by \`npm run bench\` (\`node bench/run.js\`); do not edit it by hand.
Run one scenario with \`node bench/run.js ${latest[0].scenario.id}\`, and a short smoke run with
\`node bench/run.js --quick\` (one round of 2 s runs). Raw results: \`bench/results/<scenario>.json\`.

## Summary

${passed} of ${summary.length} targets met.

${sections.map((s) => `- ${s.letter}. ${s.scenario.title}: ${s.note}`).join('\n')}

${table(['scenario', 'target', 'goal', 'measured: median (range)', 'verdict'], summary)}

## Before and after the data plane

Requests, streams and uploads moved onto a channel per thread, batched per event-loop turn,
with coalesced streams and stepped credit (docs/internals.md, "Sessions and channels"). The
*before* figures are this file's as of the previous release (\`node bench/run.js\`, same
machine kind) and, where it did not measure them, the issue that asked for the change; the
*after* figures are the sections below.

| measure | before | after |
| --- | --- | --- |
| /ok req/s vs piscina by hand (piscina / tinypool) | 0.85x / 0.78x | see b. (1.29x / 1.16x when this table was written) |
| main thread µs per /ok request vs inline | ~2.2x (103 vs 47 µs, issue) | see b. (1.65x / 1.63x) |
| 64 KiB chunks, one client, MiB/s vs inline | 0.43x | see c. (0.83x) |
| 64 KiB chunks, 4 clients, MiB/s vs inline | 0.65x (issue) | see c. (0.72x) |
| CSV export, one row a yield, rows/s vs inline | 0.13x (issue) | see c. (2.1x–2.4x) |
| fresh server, uploads: main thread minor page faults per MiB (floor: ~32) | ~82 | ~35 |

The page faults were counted from \`/proc/<pid>/task/<pid>/stat\` over the first 32 uploads of
8 MiB (4 at a time) of a new \`bench/servers/multipart.js\` process; the fresh-server ELU itself is
in section d.

## Machine and method

${machineLines(newest.machine)}

How a run goes:

- Each server under test is a fresh process (\`bench/servers/server.js <contender>\`) listening on
  127.0.0.1, port 0; it prints its address to the parent. \`GET /ping\` is answered on its main
  thread by every contender. Pool contenders start all their threads at once (\`minThreads\` =
  \`maxThreads\`) and keep them.
- The load generator is autocannon's programmatic API in the parent process (\`bench/run.js\`).
  Latencies are taken from each response, at full precision (autocannon's own histogram
  rounds to whole milliseconds).
- The \`/ping\` probe is a process of its own (\`bench/lib/probe.js\`), so that a blocked server
  cannot delay its clock.
- Each contender runs once per round, the order reversed every other round, after a warmup
  under the same load; the tables give the median over the rounds and the range (min–max).
  Ratios are taken between runs of the same round, so that a slow minute of the shared machine
  weighs on both sides.
- The machine is shared with other work. During each run, /proc tells how much CPU went to
  processes other than the server, autocannon and the probe; a round in which they took more than
  ${newest.disturbedAbove ?? 0.3} cores during any run is disturbed, and up to two more rounds are run to make up
  for it. A section counts only its undisturbed rounds when there are at least three of them
  (fewer rounds asked for: all of them), and says so. Before each run (and before calibrating
  the CPU-bound work) the runner waits for a second in which the whole machine is nearly idle,
  up to a minute each time and two minutes per scenario (--quick runs do not wait): the other work comes in bursts.
- Nothing is pinned with \`taskset\`: with 2 cores, giving the load generator and the probe a
  core of their own would leave one core to the main thread and both pool threads, which is
  not the setup a blocking pool is for. So the server's threads, autocannon and the probe all
  share the two cores; keep that in mind for every absolute number below. Only the thread
  priority scenario changes a priority: there autocannon runs at the nice value of the pool
  threads under test (see its section).

${sections.map((s) => `## ${s.letter}. ${s.scenario.title}

${measuredLine(s)}${s.body}`).join('\n')}`
  return { markdown, files }
}

/** Writes docs/benchmarks.md and the files its sections draw; returns their names. */
export async function writeDocs (latest = loadLatest()) {
  const { markdown, files } = await render(latest)
  writeFileSync(`${docsDir}benchmarks.md`, markdown)
  for (const [name, text] of Object.entries(files)) writeFileSync(`${docsDir}${name}`, text)
  return ['benchmarks.md', ...Object.keys(files)].map((name) => `docs/${name}`)
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(`wrote ${(await writeDocs()).join(', ')}`)
}
