// npm run bench: runs the scenarios of bench/scenarios/, writes each one's
// results to bench/results/<id>.json and renders docs/benchmarks.md (and the
// charts it shows, docs/*.svg) from the latest results of every scenario
// (bench/render.js, which `node bench/render.js` runs alone).
//
//   node bench/run.js [scenario ...] [--quick] [--reps N] [--warmup S] [--duration S]
//
// --quick (or BENCH_QUICK=1): one round, 0.5 s warmup, 2 s per run.
// Each run gets a fresh server process (bench/servers/server.js); the
// contenders of a scenario take turns, in reverse order every other round.
import { execFileSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { waitForQuiet } from './lib/cpu.js'
import { startServer } from './lib/harness.js'
import { calibrate } from './lib/work.js'
import { writeDocs } from './render.js'
import { scenarios } from './scenarios/index.js'

const here = (path) => fileURLToPath(new URL(path, import.meta.url))
const resultsDir = here('./results/')
const serverFile = here('./servers/server.js')

const { values: flags, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    quick: { type: 'boolean', default: process.env.BENCH_QUICK === '1' },
    reps: { type: 'string' },
    warmup: { type: 'string' },
    duration: { type: 'string' },
    help: { type: 'boolean', short: 'h' }
  }
})

const ids = scenarios.map((s) => s.id)
if (flags.help || positionals.some((p) => !ids.includes(p))) {
  console.log(`usage: node bench/run.js [${ids.join('|')} ...] [--quick] [--reps N] [--warmup S] [--duration S]`)
  process.exit(flags.help ? 0 : 1)
}
const selected = positionals.length === 0 ? scenarios : scenarios.filter((s) => positionals.includes(s.id))

const THREADS = 2
const WORK_MS = 20
/** A round in which other processes used more than this many cores (on average, in any of its runs) is disturbed. */
const DISTURBED = 0.3
/** Rounds run at most beyond --reps to make up for disturbed ones (a scenario's defaults.extraRounds overrides it). */
const EXTRA_ROUNDS = 2
/**
 * Before each run, wait until the machine is quiet (other processes under
 * QUIET_BELOW cores for a second), QUIET_WAIT seconds at most, and
 * QUIET_BUDGET seconds in all per scenario: on a shared machine the other
 * work comes in bursts, and a run started in a lull is less often disturbed.
 * --quick runs do not wait.
 */
const QUIET_BELOW = 0.15
const QUIET_WAIT = 60
const QUIET_BUDGET = 120
/** Rounds per scenario: --reps, else 1 with --quick, else the scenario's defaults.reps, else 5. */
const repsOf = (scenario) => Number(flags.reps ?? (flags.quick ? 1 : scenario.defaults.reps ?? 5))

function log (line) {
  console.log(`[${new Date().toISOString().slice(11, 19)}] ${line}`)
}

function machine () {
  const cpus = os.cpus()
  let commit = 'unknown'
  try {
    const git = (...args) => execFileSync('git', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
    commit = git('rev-parse', '--short', 'HEAD') + (git('status', '--porcelain', '--', 'lib', 'workers') === '' ? '' : ' (with uncommitted changes to lib/ or workers/)')
  } catch {}
  return {
    node: process.version,
    platform: `${os.type()} ${os.release()} ${os.arch()}`,
    cpuModel: cpus[0]?.model ?? 'unknown',
    cpus: cpus.length,
    availableParallelism: os.availableParallelism(),
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    loadAverage: os.loadavg().map((n) => Math.round(n * 100) / 100),
    commit
  }
}

const command = ['node bench/run.js', ...process.argv.slice(2)].join(' ')
if (!flags.quick) await waitForQuiet({ below: QUIET_BELOW, max: QUIET_WAIT })
log(`calibrating the CPU-bound work (${WORK_MS} ms)...`)
const iterations = calibrate(WORK_MS)
log(`${iterations} pbkdf2 rounds per /cpu request`)

mkdirSync(resultsDir, { recursive: true })
for (const scenario of selected) {
  const warmup = Number(flags.warmup ?? (flags.quick ? 0.5 : scenario.defaults.warmup))
  const duration = Number(flags.duration ?? (flags.quick ? 2 : scenario.defaults.duration))
  const reps = repsOf(scenario)
  const extraRounds = scenario.defaults.extraRounds ?? EXTRA_ROUNDS
  const failures = []
  const ctx = {
    reps,
    warmup,
    duration,
    threads: THREADS,
    iterations,
    workMs: WORK_MS,
    log,
    /**
     * Measures each contender once per round, each time on a fresh server,
     * until `reps` rounds were undisturbed (see DISTURBED) or extraRounds
     * (EXTRA_ROUNDS unless the scenario says) more were run. `measureOne(server, contender)` measures one. `server` (default bench/servers/server.js) is the
     * server file, `env` more environment for it.
     */
    async rounds (contenders, measureOne, { server: file = serverFile, env } = {}) {
      const runs = []
      let clean = 0
      let budget = flags.quick ? 0 : QUIET_BUDGET
      for (let rep = 1; clean < reps && rep <= reps + extraRounds; rep++) {
        const order = rep % 2 === 1 ? contenders : [...contenders].reverse()
        const round = []
        for (const contender of order) {
          if (budget > 0) {
            const { waited, cores } = await waitForQuiet({ below: QUIET_BELOW, max: Math.min(QUIET_WAIT, budget) })
            budget -= waited
            if (waited > 1.5) log(`waited ${Math.round(waited)} s for a quieter machine (${cores.toFixed(2)} cores busy)${budget <= 0 ? '; no more waiting in this scenario' : ''}`)
          }
          let server
          try {
            server = await startServer(file, [contender, String(THREADS)], { env: { BENCH_ITERATIONS: String(iterations), ...env } })
            const { summary, ...result } = await measureOne(server, contender)
            if (server.exited !== undefined) throw new Error(`the server ended during the run (${server.exited})`)
            round.push({ contender, rep, ...result })
            log(`${scenario.id} round ${rep} ${contender}: ${summary}, other processes ${result.cpu.other} cores`)
          } catch (err) {
            // Something outside the benchmark (a server killed by someone else's clean-up) or a bug:
            // the round is dropped and said so.
            failures.push({ rep, contender, error: err.message.replaceAll(process.cwd() + '/', ''), server: server?.exited })
            log(`${scenario.id} round ${rep} ${contender} FAILED (the round is dropped): ${err.message}${server?.exited === undefined ? '' : `; the server ended (${server.exited})`}`)
            break
          } finally {
            await server?.close()
          }
        }
        if (round.length < order.length) continue
        const disturbed = round.some((r) => r.cpu.other > DISTURBED)
        for (const r of round) r.disturbed = disturbed
        if (disturbed) log(`${scenario.id} round ${rep} was disturbed: other processes used more than ${DISTURBED} cores`)
        else clean++
        runs.push(...round)
      }
      if (runs.length === 0) throw new Error(`${scenario.id}: every round failed`)
      return runs
    }
  }
  log(`${scenario.id}: ${scenario.title}, ${reps} round(s) of ${warmup} s warmup + ${duration} s`)
  const started = new Date()
  const result = await scenario.run(ctx)
  const record = {
    id: scenario.id,
    title: scenario.title,
    date: started.toISOString(),
    command,
    machine: machine(),
    reps,
    warmup,
    duration,
    threads: THREADS,
    disturbedAbove: DISTURBED,
    failures,
    ...result
  }
  writeFileSync(`${resultsDir}${scenario.id}.json`, JSON.stringify(record, null, 2) + '\n')
}

log(`wrote ${(await writeDocs()).join(', ')}`)
