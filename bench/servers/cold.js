// The server of the cold-start scenario:
//
//   node bench/servers/cold.js <piscina|tinypool>[-before] [threads]
//
// The pool is configured as a user who sets only maxThreads would: minThreads
// is left to its default, idleTimeout is BENCH_IDLE_MS (short, so that the
// scenario sees threads end without waiting 30 s). -before loads the
// plugin from BENCH_BEFORE_PLUGIN (a file URL: an older commit's build, made by
// the scenario), for the rows measured before threads imported handler modules
// at start. GET /image: the blocking handler of cold-handlers.js. GET /stats:
// how long the process took to listen, and the pool's threads now.
const [contender, threadsArg = '2'] = process.argv.slice(2)
const [pool, variant] = contender.split('-')
if (variant === 'before') {
  if (!process.env.BENCH_BEFORE_PLUGIN) throw new Error('BENCH_BEFORE_PLUGIN is not set')
  process.env.BENCH_PLUGIN = process.env.BENCH_BEFORE_PLUGIN // read by cold-handlers.js, also in the worker threads
}

const { default: Fastify } = await import('fastify')
const { default: blocking } = await import(process.env.BENCH_PLUGIN || 'fastify-blocking')
const { image } = await import('./cold-handlers.js')
const { serve } = await import('./listen.js')

const app = Fastify({ logger: false })
await app.register(blocking, {
  pool,
  maxThreads: Number(threadsArg),
  idleTimeout: Number(process.env.BENCH_IDLE_MS ?? 1000)
})
app.get('/image', { blocking: true }, image)
// eslint-disable-next-line prefer-const -- set once the app is ready; the route reads it later
let startupMs
app.get('/stats', () => ({ startupMs, threads: app.blocking.stats().threads }))
await app.ready()
// performance.now() counts from the process's start.
startupMs = performance.now()
await serve(app, contender)
