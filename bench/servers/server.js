// One server under test, in a process of its own:
//
//   node bench/servers/server.js <inline|piscina|tinypool|by-hand> [threads]
//   node bench/servers/server.js <piscina|tinypool>:<priority> [threads]
//   node bench/servers/server.js <plugin-inline|plugin-detect> [threads]
//
// Routes: GET /ping (always inline), GET /cpu (BENCH_ITERATIONS pbkdf2
// rounds) and GET /ok ({ ok: true }). The contender decides where /cpu and
// /ok run: on the main thread, through fastify-blocking with either pool, or
// through an async route that calls piscina.run() by hand. `:<priority>`
// after a pool gives the plugin's `priority` option (a nice increment for the
// pool's threads, 0 to 19; default 0). plugin-inline and plugin-detect
// register the plugin (detectBlocking off, then on) but answer /ok on the
// main thread: the cost of the blocking detector. It prints its address on
// stdout and closes on SIGTERM.
import Fastify from 'fastify'
import { Piscina } from 'piscina'
import blocking from 'fastify-blocking'
import { cpuWork } from '../lib/work.js'
import { cpu, ok } from './handlers.js'

const [name, threadsArg = '2'] = process.argv.slice(2)
const [contender, priorityArg = '0'] = name.split(':')
const threads = Number(threadsArg)
const iterations = Number(process.env.BENCH_ITERATIONS ?? 80_000)
// Every pool starts all its threads and keeps them.
const poolOptions = { maxThreads: threads, minThreads: threads, idleTimeout: 60_000 }

const app = Fastify({ logger: false })
app.get('/ping', async () => ({ pong: true }))

switch (contender) {
  case 'inline':
    app.get('/cpu', async () => ({ hash: cpuWork(iterations) }))
    app.get('/ok', async () => ({ ok: true }))
    break
  case 'piscina':
  case 'tinypool':
    await app.register(blocking, { pool: contender, priority: Number(priorityArg), ...poolOptions })
    app.get('/cpu', { blocking: true }, cpu)
    app.get('/ok', { blocking: true }, ok)
    break
  case 'plugin-inline':
  case 'plugin-detect':
    // A threshold no request reaches: only the timing itself is measured.
    await app.register(blocking, { ...poolOptions, detectBlocking: contender === 'plugin-detect' && { thresholdMs: 1000 } })
    app.get('/ok', async () => ({ ok: true }))
    break
  case 'by-hand': {
    const pool = new Piscina({ filename: new URL('./piscina-worker.js', import.meta.url).href, ...poolOptions })
    app.addHook('onClose', () => pool.destroy())
    app.get('/cpu', () => pool.run({ op: 'cpu', iterations }))
    app.get('/ok', () => pool.run({ op: 'ok' }))
    break
  }
  default:
    throw new Error(`unknown contender ${contender}`)
}

const address = await app.listen({ host: '127.0.0.1', port: 0 })
process.stdout.write(`${name} listening on ${address}\n`)
process.once('SIGTERM', () => app.close().then(() => process.exit(0)))
