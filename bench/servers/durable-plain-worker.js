// The anchor of the durable-queue lock test: a plain BullMQ worker whose
// function processor does the CPU work inline, on its event loop (what a
// BullMQ worker does unless told otherwise).
//
//   node bench/servers/durable-plain-worker.js <redis url> <lockDuration> <stalledInterval>
import { Worker } from 'bullmq'
import { Redis } from 'ioredis'
import { spinFor } from './durable-tasks.js'

const [url, lockDuration, stalledInterval] = process.argv.slice(2)
const worker = new Worker('fastify-blocking', (job) => spinFor(...job.data.args), {
  connection: new Redis(url, { maxRetriesPerRequest: null }),
  lockDuration: Number(lockDuration),
  stalledInterval: Number(stalledInterval)
})
worker.on('error', () => {})
await worker.waitUntilReady()
console.log('durable queue: plain BullMQ worker ready')
process.once('SIGTERM', () => worker.close().then(() => process.exit(0)))
