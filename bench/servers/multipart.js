// The server of the multipart scenario:
//
//   node bench/servers/multipart.js <blocking|fastify-multipart|floor> [threads]
//
// POST /upload takes a multipart/form-data body with one file:
// - blocking: a `blocking: true` route (piscina); the worker parses the body
//   with busboy and spools files above spoolThreshold (1 MiB) to os.tmpdir();
//   the handler returns the files' sizes.
// - fastify-multipart: @fastify/multipart on the main thread, request.file(),
//   the file piped to a sink that counts its bytes.
// - floor: a content-type parser that only drains the body.
// Both parsers allow 100 MiB files. GET /ping is answered inline,
// GET /elu gives the main thread's performance.eventLoopUtilization().
import { performance } from 'node:perf_hooks'
import { Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import Fastify from 'fastify'
import multipart from '@fastify/multipart'
import blocking from 'fastify-blocking'
import { serve } from './listen.js'
import { upload } from './worker-functions.js'

const [contender, threadsArg = '2'] = process.argv.slice(2)
const threads = Number(threadsArg)
const limits = { fileSize: 100 * 1024 * 1024 }

const app = Fastify({ logger: false })
app.get('/ping', async () => ({ pong: true }))
app.get('/elu', async () => performance.eventLoopUtilization())

switch (contender) {
  case 'blocking':
    await app.register(blocking, { pool: 'piscina', maxThreads: threads, minThreads: threads, idleTimeout: 60_000, multipart: { limits } })
    app.post('/upload', { blocking: true }, upload)
    break
  case 'fastify-multipart':
    await app.register(multipart, { limits })
    app.post('/upload', async (request) => {
      const file = await request.file()
      let size = 0
      await pipeline(file.file, new Writable({
        write (chunk, encoding, callback) {
          size += chunk.length
          callback()
        }
      }))
      return { files: [size], spooled: 0 }
    })
    break
  case 'floor':
    app.addContentTypeParser('multipart/form-data', (request, payload, done) => {
      let size = 0
      payload.on('data', (chunk) => { size += chunk.length })
      payload.on('end', () => done(null, { size }))
      payload.on('error', done)
    })
    app.post('/upload', async (request) => ({ bytes: request.body.size }))
    break
  default:
    throw new Error(`unknown contender ${contender}`)
}
await serve(app, contender)
