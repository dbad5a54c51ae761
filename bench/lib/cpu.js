// Who used the CPU during a run, read from /proc (Linux; elsewhere every
// figure is NaN): the server's main thread, all its threads, the load
// generator (this process), the probe, and everything else on the machine.
// On a shared machine "other" says how much a run was disturbed.
import { execFileSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { performance } from 'node:perf_hooks'

let hz = 100
try {
  hz = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' })) || 100
} catch {}

/** utime + stime, in seconds, of /proc/<pid>/stat or /proc/<pid>/task/<tid>/stat. */
function seconds (path) {
  try {
    const stat = readFileSync(path, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(fields[11]) + Number(fields[12])) / hz
  } catch {
    return NaN
  }
}

/** Seconds all cores were busy, from /proc/stat. */
function machineBusy () {
  try {
    const [, ...ticks] = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).map(Number)
    const idle = ticks[3] + ticks[4]
    return (ticks.reduce((a, b) => a + b, 0) - idle) / hz
  } catch {
    return NaN
  }
}

/** Starts counting; the returned function gives the CPU each one used since, in cores (1 = one core all along). */
export function cpuMeter ({ server, probe }) {
  const read = () => ({
    at: performance.now() / 1000,
    main: seconds(`/proc/${server}/task/${server}/stat`),
    server: seconds(`/proc/${server}/stat`),
    load: seconds('/proc/self/stat'),
    probe: probe === undefined ? 0 : seconds(`/proc/${probe}/stat`),
    machine: machineBusy()
  })
  const before = read()
  return () => {
    const after = read()
    const elapsed = after.at - before.at
    const used = (key) => (after[key] - before[key]) / elapsed
    const round = (n) => Math.round(n * 1000) / 1000
    const cores = { serverMain: used('main'), server: used('server'), load: used('load'), probe: used('probe') }
    cores.other = Math.max(0, used('machine') - cores.server - cores.load - cores.probe)
    return Object.fromEntries(Object.entries(cores).map(([k, v]) => [k, round(v)]))
  }
}

/**
 * The nice value of each thread of process `pid` (Linux), as
 * { <nice>: <threads> }, e.g. { 0: 9, 19: 2 }: says whether the pool's
 * threads really run at the priority asked for. {} where /proc is missing.
 */
export function threadNices (pid) {
  const counts = {}
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8')
      const nice = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16])
      counts[nice] = (counts[nice] ?? 0) + 1
    }
  } catch {}
  return counts
}

/**
 * Waits until the whole machine used less than `below` cores over `window`
 * seconds (call it when nothing of the benchmark's runs: then it is other
 * people's work), for `max` seconds at most. Resolves to { waited, cores }.
 */
export async function waitForQuiet ({ below = 0.15, window = 1, max = 60 } = {}) {
  const started = performance.now()
  for (;;) {
    const before = machineBusy()
    const at = performance.now()
    await new Promise((resolve) => setTimeout(resolve, window * 1000))
    const cores = (machineBusy() - before) / ((performance.now() - at) / 1000)
    const waited = (performance.now() - started) / 1000
    if (!(cores >= below) || waited >= max) return { waited, cores } // NaN (no /proc): no waiting
  }
}
