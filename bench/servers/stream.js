// The server of the stream scenario:
//
//   node bench/servers/stream.js <inline|piscina|tinypool> [threads]
//
// GET /stream?mib=N sends N MiB (default 256) in 64 KiB chunks made by one
// generator (worker-functions.js), GET /rows?rows=N a CSV export of N rows,
// one row a yield: a blocking generator handler on the given pool, or inline,
// the same generator sent as Readable.from(gen()) by the main thread.
// BENCH_HWM sets the blocking routes' highWaterMark. GET /ping is inline.
import { Readable } from 'node:stream'
import Fastify from 'fastify'
import blocking from 'fastify-blocking'
import { serve } from './listen.js'
import { chunks, csvRows, rows, stream, streamBytes } from './worker-functions.js'

const [contender, threadsArg = '2'] = process.argv.slice(2)
const threads = Number(threadsArg)

const app = Fastify({ logger: false })
// The probe's route during the export phase: always inline.
app.get('/ping', async () => ({ pong: true }))
switch (contender) {
  case 'inline':
    app.get('/stream', (request, reply) => {
      reply.type('application/octet-stream')
      return reply.send(Readable.from(chunks(streamBytes(request.query))))
    })
    app.get('/rows', (request, reply) => {
      reply.type('text/csv')
      return reply.send(Readable.from(csvRows(Number(request.query.rows ?? 200_000))))
    })
    break
  case 'piscina':
  case 'tinypool':
    await app.register(blocking, { pool: contender, maxThreads: threads, minThreads: threads, idleTimeout: 60_000 })
    app.get('/stream', { blocking: !process.env.BENCH_HWM ? true : { highWaterMark: Number(process.env.BENCH_HWM) } }, stream)
    app.get('/rows', { blocking: true }, rows)
    break
  default:
    throw new Error(`unknown contender ${contender}`)
}
await serve(app, contender)
