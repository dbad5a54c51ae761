// The demo app: one CPU-bound handler on two routes, once on the main thread
// and once on the worker pool, plus a trivial /ping.
//
//   node examples/demo/app.js    (then: curl http://127.0.0.1:<port>/hash/blocking)
import Fastify from 'fastify'
import blocking from 'fastify-blocking'
import { hash } from './handlers.js'

const app = Fastify({ logger: { level: 'warn' } })
await app.register(blocking) // maxThreads: one thread per core by default

app.get('/ping', async () => ({ pong: true }))
app.get('/hash/inline', hash) // runs on the main thread: nothing else is served meanwhile
app.get('/hash/blocking', { blocking: true }, hash) // runs on a worker thread

const address = await app.listen({ host: '127.0.0.1', port: Number(process.env.PORT ?? 0) })
console.log(`demo app listening on ${address}`)
for (const signal of ['SIGINT', 'SIGTERM']) process.once(signal, () => app.close())
