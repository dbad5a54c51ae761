// A process's resident memory (VmRSS, from /proc/<pid>/status; Linux only,
// NaN elsewhere), read once or sampled on a timer.
import { readFileSync } from 'node:fs'

/** Bytes resident now. */
export function rss (pid) {
  try {
    const match = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return match === null ? NaN : Number(match[1]) * 1024
  } catch {
    return NaN
  }
}

/** Samples rss(pid) every `interval` ms until stop(), which gives { peak, samples }. */
export function sampleRss (pid, interval = 50) {
  const samples = [rss(pid)]
  const timer = setInterval(() => samples.push(rss(pid)), interval)
  return {
    stop () {
      clearInterval(timer)
      samples.push(rss(pid))
      return { peak: Math.max(...samples), samples: samples.length }
    }
  }
}
