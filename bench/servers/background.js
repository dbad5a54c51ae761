// The server of the background scenario:
//
//   node bench/servers/background.js <piscina|tinypool|piscina-priority|piscina-bg19|tinypool-bg19> [threads]
//
// piscina-priority: piscina with `priority: 19` (pool threads at the lowest
// scheduling priority, so that the main thread wins a core when both want one).
// <pool>-bg19: `priority: { requests: 0, background: 19 }`, background tasks
// on threads of their own at the lowest priority.
// GET /ok: the trivial blocking route of the overhead scenario.
// POST /backlog?n=N&ms=M: answers at once, then N background tasks that each
// busy-wait M ms are queued (reply.background, called N times on the main
// thread). GET /stats: app.blocking.stats().
import Fastify from 'fastify'
import blocking from 'fastify-blocking'
import { ok } from './handlers.js'
import { serve } from './listen.js'
import { spin } from './worker-functions.js'

const [contender, threadsArg = '2'] = process.argv.slice(2)
const threads = Number(threadsArg)
const [pool, variant] = contender.split('-')

const app = Fastify({ logger: false })
await app.register(blocking, {
  pool,
  priority: variant === 'priority' ? 19 : variant === 'bg19' ? { requests: 0, background: 19 } : 0,
  maxThreads: threads,
  minThreads: threads,
  idleTimeout: 60_000,
  backgroundQueue: 100_000,
  // The backlog outlives each run: the harness stops the server with tasks still queued.
  closeTimeout: 100
})
app.get('/ok', { blocking: true }, ok)
app.post('/backlog', (request, reply) => {
  const n = Number(request.query.n)
  const ms = Number(request.query.ms)
  for (let i = 0; i < n; i++) reply.background(spin, ms)
  return { queued: n }
})
app.get('/stats', () => app.blocking.stats())
await serve(app, contender)
