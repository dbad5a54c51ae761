import tap, { test } from 'tap'
import { createHash } from 'node:crypto'
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { request as httpRequest } from 'node:http'
import { tmpdir } from 'node:os'
import multipartPlugin from '@fastify/multipart'
import { build, pools, until } from './helpers.js'
import * as u from './fixtures/uploads.js'

const sha1 = (data) => createHash('sha1').update(data).digest('hex')
// Worker threads spool into os.tmpdir(), which follows TMPDIR: give this file's
// workers a directory of their own, so that counting its files is exact.
const spoolDir = mkdtempSync(join(tmpdir(), 'fastify-blocking-test-'))
process.env.TMPDIR = spoolDir
tap.teardown(() => rmSync(spoolDir, { recursive: true, force: true }))
const spooledFiles = () => readdirSync(spoolDir).filter((f) => f.startsWith('fastify-blocking-'))

async function listen (app) {
  await app.listen({ port: 0, host: '127.0.0.1' })
  return `http://127.0.0.1:${app.server.address().port}`
}

function form (parts) {
  const fd = new FormData()
  for (const [name, value, filename] of parts) {
    if (filename !== undefined) fd.append(name, new Blob([value], { type: 'application/octet-stream' }), filename)
    else fd.append(name, value)
  }
  return fd
}

/** Sends a raw body over a socket: for malformed and truncated bodies. */
function rawPost (base, path, headers, body, { end = true } = {}) {
  const { port } = new URL(base)
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method: 'POST', headers }, (res) => {
      const chunks = []
      res.on('data', (c) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }))
    })
    req.on('error', reject)
    req.write(body)
    if (end) req.end()
    else setImmediate(() => req.destroy())
  })
}

for (const pool of pools) {
  test(`${pool}: fields and files are parsed in the worker; large files are spooled and deleted after`, async (t) => {
    const before = spooledFiles().length
    const app = await build(t, pool, { multipart: { spoolThreshold: 1000 } })
    app.post('/upload', { blocking: true }, u.echoUpload)
    const base = await listen(app)
    const small = 'small file'
    const large = Buffer.alloc(200_000, 7)
    const res = await fetch(`${base}/upload`, {
      method: 'POST',
      body: form([['name', 'ada'], ['tag', 'a'], ['tag', 'b'], ['__proto__', 'x'], ['constructor', 'y'], ['doc', small, 'small.txt'], ['big', large, '../../etc/passwd']])
    })
    t.equal(res.status, 200)
    const body = await res.json()
    t.equal(body.isMainThread, false)
    t.same(body.fields, JSON.parse('{"name":"ada","tag":["a","b"],"__proto__":"x","constructor":"y"}'))
    t.equal(body.polluted, null)
    t.equal(body.files.length, 2)
    const [doc, big] = body.files
    t.match(doc, { fieldname: 'doc', filename: 'small.txt', mimetype: 'application/octet-stream', size: small.length, inMemory: true, path: null, sha1: sha1(small) })
    t.match(big, { fieldname: 'big', filename: 'passwd', size: large.length, inMemory: false, onDisk: true, sha1: sha1(large) })
    t.notMatch(big.path, /passwd|\.\./, 'the client filename never chooses a path')
    t.equal(existsSync(big.path), false, 'the spooled file is gone once the handler returned')
    const again = await (await fetch(`${base}/upload`, {
      method: 'POST',
      body: form([['big', large, 'big.bin'], ['doc', small, 'small.txt'], ['tag', 'a'], ['tag', 'b'], ['tag', 'c']])
    })).json()
    t.same(again.files.map((f) => f.fieldname), ['big', 'doc'], 'files in the order of the body, a spooled one first')
    t.same(again.fields.tag, ['a', 'b', 'c'], 'a repeated name gives every value, in order')
    t.equal(spooledFiles().length, before)
  })

  test(`${pool}: limits give 413 and per-route limits override the plugin's`, async (t) => {
    const before = spooledFiles().length
    const app = await build(t, pool, { multipart: { limits: { fileSize: 1000, files: 2, fields: 2, fieldSize: 50 }, spoolThreshold: 100 } })
    app.post('/upload', { blocking: true }, u.echoUpload)
    app.post('/tiny', { blocking: { multipart: { limits: { fileSize: 10 } } } }, u.echoUpload)
    const base = await listen(app)
    const cases = [
      ['fileSize', [['f', Buffer.alloc(5000), 'a.bin']], /larger than fileSize \(1000/],
      ['files', [['a', 'x', 'a'], ['b', 'x', 'b'], ['c', 'x', 'c']], /more files than files \(2\)/],
      ['fields', [['a', '1'], ['b', '2'], ['c', '3']], /more fields than fields \(2\)/],
      ['fieldSize', [['a', 'x'.repeat(100)]], /longer than fieldSize \(50/]
    ]
    for (const [name, parts, message] of cases) {
      const res = await fetch(`${base}/upload`, { method: 'POST', body: form(parts) })
      t.equal(res.status, 413, name)
      const body = await res.json()
      t.equal(body.code, 'FST_BLOCKING_MULTIPART_LIMIT', name)
      t.match(body.message, message, name)
    }
    const ok = await fetch(`${base}/upload`, { method: 'POST', body: form([['f', Buffer.alloc(500), 'ok.bin']]) })
    t.equal(ok.status, 200, 'under the limits')
    const tiny = await fetch(`${base}/tiny`, { method: 'POST', body: form([['f', Buffer.alloc(20), 'x.bin']]) })
    t.equal(tiny.status, 413, 'the route limit applies')
    await until(() => spooledFiles().length === before, { what: 'spooled files to be deleted' })
    t.pass('no temporary file outlives its request')
  })

  test(`${pool}: malformed, truncated and aborted bodies give 400 or nothing, never 500 or a hang`, async (t) => {
    const before = spooledFiles().length
    const app = await build(t, pool, { multipart: { spoolThreshold: 10 } })
    app.post('/upload', { blocking: true }, u.echoUpload)
    const base = await listen(app)
    const boundary = 'XyZ'
    const ct = { 'content-type': `multipart/form-data; boundary=${boundary}` }
    const truncated = `--${boundary}\r\nContent-Disposition: form-data; name="f"; filename="a.txt"\r\n\r\nsome bytes that never end`
    const r1 = await rawPost(base, '/upload', ct, truncated)
    t.equal(r1.status, 400, 'truncated')
    t.equal(JSON.parse(r1.body).code, 'FST_BLOCKING_MULTIPART_INVALID')
    const r2 = await rawPost(base, '/upload', { 'content-type': 'multipart/form-data' }, 'no boundary at all')
    t.equal(r2.status, 400, 'no boundary')
    const r3 = await rawPost(base, '/upload', ct, `--${boundary}\r\nNot-A-Header\r\n\r\n--${boundary}--\r\n`)
    t.ok([200, 400].includes(r3.status), `odd part headers: ${r3.status}`)
    await rawPost(base, '/upload', { ...ct, 'content-length': '100000' }, truncated, { end: false }).catch(() => {})
    const after = await fetch(`${base}/upload`, { method: 'POST', body: form([['a', '1']]) })
    t.equal(after.status, 200, 'the server keeps serving')
    await until(() => app.blocking.stats().running === 0, { what: 'the aborted upload to end' })
    await until(() => spooledFiles().length === before, { what: 'spooled files to be deleted' })
    t.pass('no temporary file left')
  })

  test(`${pool}: spooled files are deleted when the handler throws or its thread dies`, async (t) => {
    const before = spooledFiles().length
    const app = await build(t, pool, { multipart: { spoolThreshold: 10 } })
    app.post('/throws', { blocking: true }, u.throwsAfterUpload)
    app.post('/exits', { blocking: true }, u.exitsAfterUpload)
    const base = await listen(app)
    const body = () => form([['f', Buffer.alloc(5000), 'f.bin']])
    const thrown = await fetch(`${base}/throws`, { method: 'POST', body: body() })
    t.equal(thrown.status, 422)
    const path = (await thrown.json()).message.split(' at ')[1]
    t.equal(existsSync(path), false)
    const crashed = await fetch(`${base}/exits`, { method: 'POST', body: body() })
    t.equal(crashed.status, 500)
    t.equal((await crashed.json()).code, 'FST_BLOCKING_WORKER_CRASHED')
    t.equal(spooledFiles().length, before, 'the main thread deleted what the dead thread spooled')
  })

  test(`${pool}: with @fastify/multipart registered, blocking routes parse in the worker and others keep its behaviour`, async (t) => {
    const app = await build(t, pool)
    await app.register(multipartPlugin)
    app.post('/blocking', { blocking: true }, u.echoUpload)
    app.post('/inline', async (request) => {
      const file = await request.file()
      const data = await file.toBuffer()
      return { filename: file.filename, size: data.length, isMultipart: request.isMultipart() }
    })
    const base = await listen(app)
    const parts = [['name', 'x'], ['f', 'hello', 'h.txt']]
    const blocking = await (await fetch(`${base}/blocking`, { method: 'POST', body: form(parts) })).json()
    t.equal(blocking.isMainThread, false)
    t.same(blocking.fields, { name: 'x' })
    t.equal(blocking.files[0].size, 5)
    const inline = await (await fetch(`${base}/inline`, { method: 'POST', body: form([['f', 'hello', 'h.txt']]) })).json()
    t.same(inline, { filename: 'h.txt', size: 5, isMultipart: true })
  })

  test(`${pool}: request.readMultipart() parses off the main thread for an async route`, async (t) => {
    const before = spooledFiles().length
    const app = await build(t, pool, { multipart: { spoolThreshold: 100 } })
    let spooledPath
    app.post('/read', async (request) => {
      const { fields, files } = await request.readMultipart()
      spooledPath = files.find((f) => f.path)?.path
      return {
        fields,
        files: files.map((f) => ({ name: f.fieldname, size: f.size, isBuffer: f.buffer ? Buffer.isBuffer(f.buffer) : null, exists: f.path ? existsSync(f.path) : null }))
      }
    })
    app.post('/limited', async (request) => request.readMultipart({ limits: { fileSize: 5 } }))
    app.post('/twice', async (request) => {
      await request.readMultipart()
      return request.readMultipart()
    })
    const base = await listen(app)
    const res = await fetch(`${base}/read`, { method: 'POST', body: form([['a', '1'], ['s', 'tiny', 's.txt'], ['l', Buffer.alloc(1000), 'l.bin']]) })
    t.same(await res.json(), {
      fields: { a: '1' },
      files: [{ name: 's', size: 4, isBuffer: true, exists: null }, { name: 'l', size: 1000, isBuffer: null, exists: true }]
    })
    await until(() => !existsSync(spooledPath), { what: 'the spooled file to be deleted after the response' })
    const limited = await fetch(`${base}/limited`, { method: 'POST', body: form([['f', 'too big', 'f.txt']]) })
    t.equal(limited.status, 413)
    const twice = await fetch(`${base}/twice`, { method: 'POST', body: form([['a', '1']]) })
    t.equal(twice.status, 400)
    t.equal(spooledFiles().length, before)
  })
}

for (const pool of pools) {
  test(`${pool}: a slow upload does not hold a thread, and its time does not count against the timeout`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1, taskTimeout: 300 })
    app.post('/upload', { blocking: true }, u.echoUpload)
    app.get('/quick', { blocking: true }, (await import('./fixtures/failures.js')).quick)
    const base = await listen(app)
    const { port } = new URL(base)
    const boundary = 'SLOW'
    const head = `--${boundary}\r\nContent-Disposition: form-data; name="f"; filename="slow.txt"\r\n\r\n`
    const tail = `\r\n--${boundary}--\r\n`
    const response = new Promise((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port, path: '/upload', method: 'POST', headers: { 'content-type': `multipart/form-data; boundary=${boundary}` } }, (res) => {
        const chunks = []
        res.on('data', (c) => chunks.push(c))
        res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }))
      })
      req.on('error', reject)
      req.write(head + 'first half;')
      t.context.finish = () => req.end('second half' + tail)
    })
    await until(() => app.blocking.stats().running === 1, { what: 'the upload task to start' })
    const quick = await app.inject('/quick')
    t.equal(quick.statusCode, 200, 'a request ran while the upload waited for its client')
    // Longer than taskTimeout, spent waiting for the body.
    await new Promise((resolve) => setTimeout(resolve, 500))
    t.context.finish()
    const res = await response
    t.equal(res.status, 200)
    t.equal(JSON.parse(res.body).files[0].size, 'first half;second half'.length)
  })
}

for (const pool of pools) {
  test(`${pool}: app.inject() with several files (its chunks are not ours to move)`, async (t) => {
    const app = await build(t, pool)
    app.post('/upload', { blocking: true }, u.echoUpload)
    const body = form([['a', 'one', 'a.txt'], ['b', 'two', 'b.txt'], ['c', 'three', 'c.txt']])
    const request = new Request('http://x/upload', { method: 'POST', body })
    const payload = Buffer.from(await request.arrayBuffer())
    const res = await app.inject({ method: 'POST', url: '/upload', headers: { 'content-type': request.headers.get('content-type') }, payload })
    t.equal(res.statusCode, 200)
    t.same(res.json().files.map((f) => f.size), [3, 3, 5])
    const res2 = await app.inject({ method: 'POST', url: '/upload', body: form([['a', 'one', 'a.txt'], ['b', 'two', 'b.txt']]) })
    t.equal(res2.statusCode, 200, 'a FormData body given to inject as is')
  })
}
