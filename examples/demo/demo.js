// npm run demo: the same CPU-bound route, inline and then with `blocking: true`,
// under the same load (8 connections), while a probe sends GET /ping every 5 ms.
import { fileURLToPath } from 'node:url'
import { measure, startServer } from '../../bench/lib/harness.js'
import { num } from '../../bench/lib/report.js'

const SECONDS = 4
const routes = ['/hash/inline', '/hash/blocking']

const app = await startServer(fileURLToPath(new URL('./app.js', import.meta.url)))
console.log(`Demo app (examples/demo/app.js) on ${app.url}, ${SECONDS} s of load per route:\n`)
const results = {}
try {
  for (const route of routes) {
    process.stdout.write(`  GET ${route} with 8 connections, GET /ping every 5 ms ... `)
    results[route] = await measure({ server: app, path: route, connections: 8, warmup: 0.5, duration: SECONDS, probe: { interval: 5 } })
    console.log('done')
  }
} finally {
  await app.close()
}

const row = (cells) => '  ' + cells.map((c, i) => (i === 0 ? c.padEnd(16) : c.padStart(12))).join('')
console.log('\n' + row(['route', '/ping p50', '/ping p99', 'hash req/s']))
for (const route of routes) {
  const { ping, requestsPerSec, errors, non2xx } = results[route]
  const failed = errors + non2xx > 0 ? `   (${errors + non2xx} requests failed)` : ''
  console.log(row([route, `${num(ping.p50)} ms`, `${num(ping.p99)} ms`, num(requestsPerSec)]) + failed)
}

const inline = results['/hash/inline']
const pooled = results['/hash/blocking']
const factor = inline.ping.p99 / pooled.ping.p99
console.log(`\nWith blocking: true, /ping p99 is ${num(pooled.ping.p99)} ms instead of ${num(inline.ping.p99)} ms ` +
  `(${factor >= 1 ? `${num(factor)}x lower` : `${num(1 / factor)}x higher`}), ` +
  `and the hash route serves ${num(pooled.requestsPerSec / inline.requestsPerSec)}x the requests per second.`)
const busy = Math.max(inline.cpu.other, pooled.cpu.other)
if (busy > 0.3) console.log(`(Other processes on this machine used up to ${num(busy)} cores meanwhile, which skews these figures.)`)
