import Fastify from 'fastify'
import { Redis } from 'ioredis'
import { expectError, expectType } from 'tsd'
import blocking, {
  defineTask,
  startQueueWorker,
  FST_BLOCKING_NOT_SERIALIZABLE,
  FST_BLOCKING_QUEUE_UNAVAILABLE,
  type QueueStats,
  type QueueWorker
} from '../../dist/lib/index.js'

const app = Fastify()
await app.register(blocking, {
  queue: {
    connection: 'redis://127.0.0.1:6379',
    name: 'emails',
    work: false,
    concurrency: 4,
    jobs: { attempts: 3, backoff: { type: 'exponential', delay: 1000 } },
    worker: { lockDuration: 30_000, stalledInterval: 30_000 },
    timeout: 2000,
    whenDown: 'local'
  }
})
await app.register(blocking, { queue: { connection: { host: '127.0.0.1', port: 6379 } } })
await app.register(blocking, { queue: { connection: new Redis({ lazyConnect: true }) } })
expectError(app.register(blocking, { queue: { connection: 'redis://127.0.0.1', whenDown: 'retry' } }))
expectError(app.register(blocking, { queue: { connection: 'redis://127.0.0.1', timeout: '2s' } }))
expectError(app.register(blocking, { queue: { name: 'no connection' } }))

// defineTask takes a stable name.
export const send = defineTask(import.meta.url, (to: string, when: Date) => `${to}:${when.toISOString()}`, { name: 'email.send' })
expectError(defineTask(import.meta.url, (to: string) => to, { name: 42 }))

// enqueue: the arguments as a tuple, BullMQ job options, resolves to the job id.
expectType<Promise<{ id: string }>>(app.blocking.enqueue(send, ['a@b.c', new Date()], { jobId: 'welcome', delay: 1000, priority: 1 }))
expectError(app.blocking.enqueue(send, ['a@b.c']))
expectError(app.blocking.enqueue(send, ['a@b.c', new Date()], { attempts: '3' }))

app.get('/', async (request, reply) => {
  reply.background(send, 'a@b.c', new Date())
  expectError(reply.background(send, 42, new Date()))
  return 'ok'
})

expectType<QueueStats | undefined>(app.blocking.stats().queue)

const worker = await startQueueWorker({ tasks: ['tasks/*.js'], connection: 'redis://127.0.0.1:6379', pool: 'tinypool', maxThreads: 2, worker: { lockDuration: 60_000 } })
expectType<QueueWorker>(worker)
expectType<Promise<void>>(worker.close())
expectError(startQueueWorker({ connection: 'redis://127.0.0.1:6379' }))

expectType<'FST_BLOCKING_QUEUE_UNAVAILABLE'>(new FST_BLOCKING_QUEUE_UNAVAILABLE('x').code)
expectType<'FST_BLOCKING_NOT_SERIALIZABLE'>(new FST_BLOCKING_NOT_SERIALIZABLE('x').code)
