// An unexpected message on the thread protocol is a bug on one side: every
// receiver (lib/threads.ts, lib/stream.ts, lib/multipart.ts, workers/channel.ts,
// workers/stream.ts, workers/multipart.ts, workers/worker.ts) reports it with
// one coded error rather than ignoring it.
import { test } from 'tap'
import { readFileSync } from 'node:fs'
import { errors } from '../dist/lib/index.js'
import { unknownMessage } from '../dist/lib/common/protocol.js'

test('unknownMessage() is an FST_BLOCKING_PROTOCOL error naming the receiver and the message type', async (t) => {
  const err = unknownMessage('stream', { type: 'stream:bogus', x: 1 })
  t.ok(err instanceof errors.FST_BLOCKING_PROTOCOL)
  t.equal(err.code, 'FST_BLOCKING_PROTOCOL')
  t.equal(err.statusCode, 500)
  t.equal(err.message, 'fastify-blocking stream: unknown message "stream:bogus"')
  t.equal(unknownMessage('worker', null).message, 'fastify-blocking worker: unknown message null')
  t.equal(unknownMessage('worker', {}).message, 'fastify-blocking worker: unknown message undefined')
})

test('every switch over protocol messages ends in unknownMessage()', async (t) => {
  const receivers = ['lib/threads.ts', 'lib/stream.ts', 'lib/multipart.ts', 'workers/channel.ts', 'workers/stream.ts', 'workers/multipart.ts', 'workers/worker.ts']
  for (const file of receivers) {
    const text = readFileSync(new URL(`../${file}`, import.meta.url), 'utf8')
    t.match(text, /unknownMessage\(/, `${file} reports unknown messages`)
    t.notMatch(text, /unknown message \$\{/, `${file} has no uncoded unknown-message error`)
  }
})
