import Fastify from 'fastify'
import { expectAssignable, expectError, expectType } from 'tsd'
import blocking, {
  defineHandler,
  defineTask,
  FST_BLOCKING_QUEUE_FULL,
  FST_BLOCKING_UNDER_PRESSURE,
  channels,
  type BlockingStats,
  type MultipartBody,
  type TaskMessage,
  type WorkerFile,
  type WorkerReply,
  type WorkerRequest
} from '../../dist/lib/index.js'

const app = Fastify()
await app.register(blocking, { pool: 'tinypool', maxThreads: 2, taskTimeout: 1000, multipart: { limits: { fileSize: 10 } } })
expectError(app.register(blocking, { pool: 'threads' }))
expectError(app.register(blocking, { maxThreads: '2' }))

// defineHandler types the worker-side request from the route generic.
export const hash = defineHandler<{ Body: { password: string }, Params: { id: string } }>(import.meta.url, (request, reply) => {
  expectType<string>(request.body.password)
  expectType<string>(request.params.id)
  expectType<AbortSignal>(request.signal)
  expectType<string>(request.routeUrl)
  expectType<WorkerReply>(reply.code(201).header('x', '1').type('text/plain'))
  request.log.info('text')
  request.log.warn({ a: 1 }, 'with object')
  expectError(request.log.info(42, 'no'))
  expectError(reply.send('no send in the worker: return the payload'))
  return { hash: request.body.password }
})

export const untyped = defineHandler(import.meta.url, (request) => {
  expectType<unknown>(request.body)
  expectAssignable<WorkerRequest>(request)
  return 'ok'
})

export const audit = defineTask(import.meta.url, (event: string, count: number) => `${event}:${count}`)

// The route option, the config flag and route() accept a worker handler.
app.post('/hash/:id', { blocking: true }, hash)
app.post('/report', { blocking: { timeout: 2000, highWaterMark: 1024 } }, untyped)
app.get('/x', { config: { blocking: true } }, untyped)
app.route({ method: 'GET', url: '/r', blocking: true, handler: untyped })
expectError(app.get('/bad', { blocking: { timeout: '2s' } }, untyped))
expectError(app.get('/bad', { blocking: { nope: 1 } }, untyped))

// A normal route keeps Fastify's handler type.
app.get('/inline', async (request, reply) => {
  expectType<string>(request.id)
  return reply.send('ok')
})

// Decorators.
expectType<Promise<string>>(app.blocking.run(audit, 'login', 1))
expectError(app.blocking.run(audit, 'login', 'one'))
expectType<BlockingStats>(app.blocking.stats())
expectType<number>(app.blocking.stats().background.waitTime.p99)

// Errors are @fastify/error constructors.
const err = new FST_BLOCKING_QUEUE_FULL('x')
expectType<'FST_BLOCKING_QUEUE_FULL'>(err.code)
expectType<503>(err.statusCode)

// Background tasks, on the main thread and in a worker.
app.get('/bg', async (request, reply) => {
  expectType<typeof reply>(reply.background(audit, 'event', 2))
  expectError(reply.background(audit, 'event'))
  return 'ok'
})
export const withBackground = defineHandler(import.meta.url, (request, reply) => {
  expectType<WorkerReply>(reply.background(audit, 'event', 2))
  expectError(reply.background(audit, 2, 'event'))
})

// Multipart, parsed off the main thread for an async route.
app.post('/upload', async (request) => {
  const { fields, files } = await request.readMultipart({ limits: { fileSize: 1000 } })
  expectType<string | string[] | undefined>(fields.name)
  expectType<number>(files[0]!.size)
  expectType<Buffer | undefined>(files[0]!.buffer)
  expectType<string | string[] | undefined>(fields.tag)
  expectError(request.readMultipart({ limits: { fileSizes: 1 } }))
  return 'ok'
})
export const upload = defineHandler(import.meta.url, (request) => {
  expectType<string | undefined>(request.files?.[0]?.path)
})

await app.register(blocking, { priority: 19 })

// Operability: Server-Timing, pressure, the blocking detector, per-route stats, the diagnostics channel.
await app.register(blocking, { serverTiming: true, pressure: { maxQueueWait: 50, maxQueued: 10 }, detectBlocking: { thresholdMs: 20 } })
await app.register(blocking, { detectBlocking: true })
expectError(app.register(blocking, { pressure: { maxQueueWait: '50ms' } }))
expectError(app.register(blocking, { detectBlocking: { threshold: 20 } }))
app.get('/timed', { blocking: { serverTiming: true } }, untyped)
expectType<boolean>(app.blocking.isUnderPressure())
expectType<number>(app.blocking.stats().routes['GET /x']!.runTime.p99)
expectType<'fastify-blocking:task'>(channels.task)
expectAssignable<TaskMessage>({ lane: 'request', name: 'GET /x', route: 'GET /x', outcome: 'timeout', waitTime: 1, runTime: 2, error: { name: 'Error', message: 'x' } })
expectError<TaskMessage>({ lane: 'request', name: 'GET /x', outcome: 'exploded', waitTime: 1, runTime: 2 })
expectType<503>(new FST_BLOCKING_UNDER_PRESSURE('why').statusCode)
await app.register(blocking, { priority: { requests: 0, background: 19 } })
await app.register(blocking, { priority: { background: 10 } })
expectError(app.register(blocking, { priority: { request: 1 } }))
expectError(app.register(blocking, { priority: 'low' }))

// A file is in memory or spooled, never neither: narrowing needs no `!`.
export const files = defineHandler(import.meta.url, (request) => {
  for (const file of request.files ?? []) {
    if (file.buffer !== undefined) {
      expectType<Buffer>(file.buffer)
      expectType<undefined>(file.path)
    } else {
      expectType<string>(file.path)
    }
  }
})
expectError<WorkerFile>({ fieldname: 'f', filename: 'a', mimetype: 'text/plain', encoding: '7bit', size: 1 })

// A repeated multipart field arrives as an array.
export const multipartBody = defineHandler<{ Body: MultipartBody<{ tag: string, name: string }> }>(import.meta.url, (request) => {
  expectType<string | string[]>(request.body.tag)
  return Array.isArray(request.body.name) ? request.body.name[0] : request.body.name
})

// Route config, request properties, cookies, reply methods a worker lacks.
declare module '../../dist/lib/index.js' {
  interface WorkerRequestProperties {
    user?: { id: number }
  }
}
export const context = defineHandler(import.meta.url, (request, reply) => {
  expectType<string>(request.routeOptions.config.url)
  expectType<number | undefined>(request.user?.id)
  expectType<WorkerReply>(reply.setCookie('a', 'b', { signed: true, maxAge: 60 }).clearCookie('c'))
  expectError(reply.setCookie('a', 'b', { encode: (v: string) => v }))
  expectError(reply.getHeader('x'))
})
await app.register(blocking, { requestProperties: ['user', 'cookies'] })
expectError(app.register(blocking, { requestProperties: 'user' }))
app.get('/ctx', { blocking: { requestProperties: ['user'] } }, context)

// run() with options, and bound to a request.
expectType<Promise<string>>(app.blocking.runWith({ signal: AbortSignal.timeout(10), timeout: 100, transferList: [new ArrayBuffer(1)] }, audit, 'login', 1))
expectError(app.blocking.runWith({ timeout: '1s' }, audit, 'login', 1))
app.get('/bound', async (request) => {
  expectType<Promise<string>>(request.blocking.run(audit, 'event', 1))
  expectType<Promise<string>>(request.blocking.runWith({ timeout: 10 }, audit, 'event', 1))
  return 'ok'
})
