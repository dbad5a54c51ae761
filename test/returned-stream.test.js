// A returned stream is streamed like a generator; any other value must be
// plain data: never the JSON of an object's internals.
import t, { test } from 'tap'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { build, get, listen, pools, readAll, until } from './helpers.js'
import * as c from './fixtures/context.js'
import * as s from './fixtures/security.js'

const dir = mkdtempSync(join(tmpdir(), 'fastify-blocking-returned-'))
const file = join(dir, 'data.txt')
writeFileSync(file, 'x'.repeat(300_000) + 'end')

t.teardown(() => rmSync(dir, { recursive: true, force: true }))

let flags = 0
/** A fresh file name in the test's directory, which the `watched` fixture writes when its stream ends. */
function flag () {
  return join(dir, `flag-${flags++}`)
}
const ended = (file) => (existsSync(file) ? readFileSync(file, 'utf8') : undefined)
const watchedPath = (kind, file) => `/watched?kind=${kind}&flag=${encodeURIComponent(file)}`

for (const pool of pools) {
  test(`${pool}: a returned fs.createReadStream is streamed, with the head set before it`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1 })
    app.get('/file', { blocking: { highWaterMark: 16_384 } }, c.fileStream)
    const res = await app.inject(`/file?path=${encodeURIComponent(file)}`)
    t.equal(res.statusCode, 200)
    t.equal(res.headers['x-kind'], 'file')
    t.match(res.headers['content-type'], /^text\/plain/)
    t.equal(res.body.length, 300_003)
    t.ok(res.body.endsWith('end'))
    t.notOk(res.body.includes(dir), 'no server path in the body')
    const missing = await app.inject(`/file?path=${encodeURIComponent(join(dir, 'nope'))}`)
    t.equal(missing.statusCode, 500, 'a stream that fails before its first chunk goes to the error handler')
    t.match(missing.json().message, /ENOENT/)
  })

  test(`${pool}: a web ReadableStream and a generator object are streamed; logs keep their order`, async (t) => {
    const app = await build(t, pool)
    app.get('/web', { blocking: true }, c.webStream)
    app.get('/gen', { blocking: true }, c.generatorObject)
    t.equal((await app.inject('/web')).body, 'web,stream')
    const gen = await app.inject('/gen')
    t.equal(gen.body, 'gen,object')
    const reqId = app.logs.find((l) => l.msg === 'before the stream').reqId
    t.same(app.logs.filter((l) => l.reqId === reqId && /the stream$/.test(l.msg)).map((l) => l.msg), ['before the stream', 'inside the stream'])
  })

  test(`${pool}: a returned stream is paced by its client and destroyed when the client leaves`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1 })
    app.get('/endless', { blocking: { highWaterMark: 65_536 } }, c.endless)
    app.get('/destroyed', { blocking: true }, c.destroyedCount)
    const port = await listen(app)
    const res = await get(port, '/endless')
    t.equal(res.statusCode, 200)
    // Read a little, then leave.
    await new Promise((resolve) => res.once('data', resolve))
    res.destroy()
    // Asked through the pool (one thread: the same one), until the worker has destroyed it.
    let destroyed = 0
    for (let i = 0; i < 10_000 && destroyed === 0; i++) destroyed = (await app.inject('/destroyed')).json()
    t.equal(destroyed, 1, 'the worker destroyed the Readable')
  })

  test(`${pool}: a returned stream holds its task while it is read; a client that leaves ends it in the worker`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1 })
    app.get('/watched', { blocking: { highWaterMark: 65_536 } }, c.watched)
    const port = await listen(app)
    for (const kind of ['readable', 'web']) {
      const file = flag()
      const res = await get(port, watchedPath(kind, file))
      t.equal(res.statusCode, 200)
      await new Promise((resolve) => res.once('data', resolve))
      res.pause()
      t.equal(app.blocking.stats().running, 1, `${kind}: the stream counts as a running task while it is open`)
      res.destroy()
      await until(() => ended(file) !== undefined, { what: `the ${kind} stream to end in the worker` })
      t.equal(ended(file), kind === 'web' ? 'cancelled' : 'destroyed', `${kind}: ended in the worker`)
      await until(() => app.blocking.stats().running === 0, { what: 'the task to end' })
    }
  })

  test(`${pool}: a returned stream whose client reads nothing is ended by stallTimeout`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1, stallTimeout: 300 })
    app.get('/watched', { blocking: true }, c.watched)
    const port = await listen(app)
    const file = flag()
    // A client that sends its request, then reads nothing.
    const socket = connect(port, '127.0.0.1', () => socket.write(`GET ${watchedPath('readable', file)} HTTP/1.1\r\nHost: localhost\r\n\r\n`))
    socket.pause()
    socket.on('error', () => {})
    t.teardown(() => socket.destroy())
    await until(() => ended(file) !== undefined, { what: 'the stalled stream to be destroyed' })
    t.equal(ended(file), 'destroyed')
    t.ok(app.logs.some((l) => l.level === 40 && /stallTimeout/.test(l.msg)), 'the closing was logged at warn')
    await until(() => app.blocking.stats().running === 0, { what: 'the task to end' })
  })

  test(`${pool}: a returned stream that stops producing is ended by the route's timeout`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1 })
    app.get('/watched', { blocking: { timeout: 300 } }, c.watched)
    app.get('/web', { blocking: { timeout: 300 } }, c.webStream)
    const port = await listen(app)
    // Silent from the start: the error handler answers.
    const silent = flag()
    const res = await app.inject(watchedPath('silent', silent))
    t.equal(res.statusCode, 503)
    t.equal(res.json().code, 'FST_BLOCKING_TIMEOUT')
    await until(() => ended(silent) !== undefined, { what: 'the silent stream to be destroyed' })
    // Silent after its first chunk: the response is cut, the error logged.
    const hang = flag()
    const { body, complete } = await readAll(await get(port, watchedPath('hang', hang)))
    t.same([body, complete], ['first;', false], 'the response was cut after the first chunk')
    await until(() => ended(hang) !== undefined, { what: 'the hanging stream to be destroyed' })
    t.equal(ended(hang), 'destroyed')
    t.equal(app.logs.filter((l) => l.err?.code === 'FST_BLOCKING_TIMEOUT' && /after its first chunk/.test(l.msg)).length, 1, 'logged once')
    await until(() => app.blocking.stats().running === 0, { what: 'the task to end' })
    t.equal((await app.inject('/web')).body, 'web,stream', 'a stream that ends in time is whole')
    // Time spent waiting for the client does not count: a client that stops
    // reading for longer than the timeout (a second app's timeout is the clock)
    // then reads on.
    const timeouts = () => app.logs.filter((l) => l.err?.code === 'FST_BLOCKING_TIMEOUT').length
    const timedOut = timeouts()
    const paced = flag()
    const slow = await get(port, watchedPath('readable', paced))
    await new Promise((resolve) => slow.once('data', resolve))
    slow.pause()
    const clock = await build(t, pool, { maxThreads: 1 })
    clock.get('/watched', { blocking: { timeout: 300 } }, c.watched)
    t.equal((await clock.inject(watchedPath('silent', flag()))).statusCode, 503, 'the clock timed out')
    let more = 0
    slow.on('data', (chunk) => { more += chunk.length })
    slow.resume()
    await until(() => more >= 1_000_000, { what: 'the slow client to read on' })
    slow.destroy()
    await until(() => ended(paced) !== undefined, { what: 'the paced stream to be destroyed' })
    t.equal(timeouts(), timedOut, 'and did not time out')
  })

  test(`${pool}: an upload's handler may return a stream of its spooled file; the stream's place is given back at its end`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1, multipart: { spoolThreshold: 10 } })
    app.post('/upload', { blocking: true }, c.uploadedFile)
    app.get('/short', { blocking: true }, s.shortStream)
    const port = await listen(app)
    const sent = 'y'.repeat(100_000)
    const bodies = []
    // More than one thread's places for open streams (maxThreads × 16, one running).
    for (let i = 0; i < 20; i++) {
      const form = new FormData()
      form.append('f', new Blob([sent]), 'f.txt')
      const res = await fetch(`http://127.0.0.1:${port}/upload`, { method: 'POST', body: form })
      bodies.push(`${res.status} ${(await res.text()) === sent}`)
    }
    t.same(new Set(bodies), new Set(['200 true']), 'each spooled file streamed whole (deleted only after)')
    const res = await fetch(`http://127.0.0.1:${port}/short`)
    t.equal(`${res.status} ${await res.text()}`, '200 short', 'a generator stream after them has a place')
  })

  test(`${pool}: an error after a returned stream's first chunk cuts the response, logged once`, async (t) => {
    const app = await build(t, pool)
    app.get('/failing', { blocking: true }, c.failingReadable)
    const port = await listen(app)
    const { body, complete } = await readAll(await get(port, '/failing'))
    t.equal(body, 'first;')
    t.equal(complete, false)
    await until(() => app.logs.some((l) => l.err?.message === 'readable broke'), { what: 'the error log' })
    await app.close()
    t.equal(app.logs.filter((l) => l.err?.message === 'readable broke').length, 1, 'one line carries the error')
  })

  test(`${pool}: class instances are sent by their toJSON(), else refused; nothing internal is sent`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1 })
    app.get('/i', { blocking: true }, c.instances)
    const inline = JSON.parse(JSON.stringify({ user: { name: 'ada', kind: 'user' }, bytes: Buffer.from('hi'), when: new Date(0), list: [{ name: 'bob', kind: 'user' }] }))
    t.same((await app.inject('/i?v=toJSON')).json(), inline, 'as JSON.stringify would send them inline')
    for (const url of ['/i?v=socket', '/i?v=socket&nested=1']) {
      const res = await app.inject(url)
      t.equal(res.statusCode, 500)
      t.equal(res.json().code, 'FST_BLOCKING_NOT_CLONEABLE')
      t.match(res.json().message, /a Session is not plain data: return a plain object, or give its class a toJSON\(\) method/)
      t.notOk(res.body.includes('internal'))
    }
    t.match((await app.inject('/i?v=socket&nested=1')).json().message, /at \.s: a Session/)
    const stream = await app.inject(`/i?v=nestedStream&path=${encodeURIComponent(file)}`)
    t.match(stream.json().message, /at \.file: a ReadStream is not plain data \(a stream is streamed only when it is the value returned\)/)
    t.notOk(stream.body.includes(dir), 'the server path never reaches the client')
    t.same((await app.inject('/i?v=map')).json(), { m: {}, n: { x: 1 } }, 'Maps and null-prototype objects are plain data')
  })
}
