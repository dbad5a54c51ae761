// The CPU-bound work every contender does: a fixed number of pbkdf2 rounds
// (fixed work, not a fixed time, so a starved thread takes longer, as it would
// in production). Used by the inline routes, the blocking handlers and the
// plain piscina worker alike.
import { pbkdf2Sync } from 'node:crypto'
import { performance } from 'node:perf_hooks'

export function cpuWork (iterations) {
  return pbkdf2Sync('correct horse battery staple', 'salt', iterations, 32, 'sha256').toString('hex')
}

/** Iterations that take about `ms` on this machine, measured on the calling thread (best of a few tries). */
export function calibrate (ms) {
  const probe = 20_000
  cpuWork(probe) // warm
  let best = Infinity
  for (let i = 0; i < 5; i++) {
    const start = performance.now()
    cpuWork(probe)
    best = Math.min(best, performance.now() - start)
  }
  return Math.max(1, Math.round(probe * ms / best))
}
