// The latency probe, a process of its own, so that a blocked server cannot
// delay it:
//
//   node bench/lib/probe.js <port> <path> <intervalMs>
//
// It says 'ready' over IPC once connected, starts on 'start', and on 'stop'
// sends { latencies, sentAt } back and exits: each ping's latency (ms) and
// when it was sent (ms since 'start'), in the order the answers came.
//
// intervalMs > 0: one GET every intervalMs, on schedule whether or not the
// previous one has been answered (an open loop: a stalled server shows as
// many slow pings, not as one). Pings go over keep-alive connections, all
// opened before the start: a connection opened while the server is stalled
// may wait in the kernel's accept queue, or see its SYN dropped and retried a
// second later, which would measure TCP, not the event loop.
// intervalMs 0: requests back to back over one connection, for the latency
// of an unloaded server.
import http from 'node:http'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'

const [port, path, intervalArg] = process.argv.slice(2)
const interval = Number(intervalArg)
const sockets = interval > 0 ? 64 : 1
const agent = new http.Agent({ keepAlive: true, maxSockets: sockets })
const latencies = []
const sentAts = []
let startedAt = 0
const pending = new Set()
let running = false
let failure

function get () {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port: Number(port), path, agent }, (res) => {
      res.on('data', () => {})
      res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`GET ${path}: ${res.statusCode}`))))
    })
    req.on('error', reject)
  })
}

function ping () {
  const sentAt = performance.now()
  const p = get().then(() => {
    latencies.push(performance.now() - sentAt)
    sentAts.push(sentAt - startedAt)
  }, (err) => { failure ??= err })
  pending.add(p)
  return p.finally(() => pending.delete(p))
}

async function openLoop () {
  const start = performance.now()
  // eslint-disable-next-line no-unmodified-loop-condition -- the parent's 'stop' message clears it
  for (let i = 0; running; i++) {
    const wait = start + i * interval - performance.now()
    if (wait > 0) await sleep(wait)
    if (running) ping()
  }
}

async function backToBack () {
  // eslint-disable-next-line no-unmodified-loop-condition -- as above
  while (running) await ping()
}

let loop
process.on('disconnect', () => process.exit(0)) // the parent is gone
process.on('message', async (msg) => {
  if (msg === 'start') {
    running = true
    startedAt = performance.now()
    loop = interval > 0 ? openLoop() : backToBack()
  } else if (msg === 'stop') {
    running = false
    await loop
    await Promise.all(pending)
    const reply = failure === undefined ? { latencies, sentAt: sentAts } : { error: failure.message }
    process.send(reply, () => process.exit(0))
  }
})

try {
  await Promise.all(Array.from({ length: sockets }, get)) // open the connections
  process.send('ready')
} catch (err) {
  process.send({ error: err.message }, () => process.exit(1))
}
