// A plain piscina worker: what a user writes by hand without fastify-blocking.
import { cpuWork } from '../lib/work.js'

export default function ({ op, iterations }) {
  return op === 'cpu' ? { hash: cpuWork(iterations) } : { ok: true }
}
