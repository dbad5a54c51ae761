// The blocking handlers of the benchmark servers (a module of their own, so
// that worker threads can load them). BENCH_ITERATIONS is set by bench/run.js;
// worker threads inherit the environment.
import { defineHandler } from 'fastify-blocking'
import { cpuWork } from '../lib/work.js'

const iterations = Number(process.env.BENCH_ITERATIONS ?? 80_000)

export const cpu = defineHandler(import.meta.url, () => ({ hash: cpuWork(iterations) }))
export const ok = defineHandler(import.meta.url, () => ({ ok: true }))
