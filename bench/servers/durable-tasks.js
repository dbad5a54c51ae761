// Tasks of the durable-queue benchmark (bench/durable.js).
import { appendFileSync } from 'node:fs'
import { defineTask } from 'fastify-blocking'

export const noop = defineTask(import.meta.url, () => true, { name: 'bench.noop' })

/** Busy on the CPU for `ms`, then notes that it ran in `file`. */
export function spinFor (file, ms) {
  const end = Date.now() + ms
  let n = 0
  while (Date.now() < end) n++
  appendFileSync(file, `${process.pid}\n`)
  return n > 0
}

export const spin = defineTask(import.meta.url, spinFor, { name: 'bench.spin' })
