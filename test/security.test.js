// Security review (issue 7, item 7), on both pools; the threat model and what
// each test proves are in docs/security.md.
//
// (a) no stack trace or absolute path reaches a client, whatever fails;
// (b) header names and values set in a worker cannot inject a header or split
//     the response (raw bytes read off a real socket);
// (c) client filenames never become paths, and nothing is written outside the
//     temporary directory;
// (d) limits: what the defaults allow, bodyLimit and multipart, request header
//     limits, prototype pollution through field names, log lines.

import tap, { test } from 'tap'
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { connect } from 'node:net'
import { homedir, tmpdir } from 'node:os'
import { join, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build, pools, until } from './helpers.js'
import * as s from './fixtures/security.js'

const repoRoot = fileURLToPath(new URL('..', import.meta.url)).replace(/[\\/]$/, '')

// Spooled files go to os.tmpdir() of the worker threads, which follows TMPDIR
// when they start: a directory of this file's own, three levels below a base
// directory, so that a client filename such as ../../x would land in a
// directory this test watches.
const base = mkdtempSync(join(tmpdir(), 'fastify-blocking-security-'))
const spoolDir = join(base, 'a', 'b', 'spool')
mkdirSync(spoolDir, { recursive: true })
process.env.TMPDIR = spoolDir
tap.teardown(() => rmSync(base, { recursive: true, force: true }))

async function listen (app) {
  await app.listen({ port: 0, host: '127.0.0.1' })
  return app.server.address().port
}

/** Sends `head` (and `body`) over a fresh socket and resolves with every byte the server sent, once it closes. */
function raw (port, head, body) {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => {
      socket.write(head)
      if (body !== undefined) socket.write(body)
    })
    const chunks = []
    socket.on('data', (chunk) => chunks.push(chunk))
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')))
    socket.on('error', reject)
  })
}

const get = (port, path) => raw(port, `GET ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`)

/** A raw response split into status, headers (name -> values) and body (chunked bodies decoded). */
function parse (text) {
  const end = text.indexOf('\r\n\r\n')
  const [statusLine, ...lines] = text.slice(0, end).split('\r\n')
  const headers = {}
  for (const line of lines) {
    const colon = line.indexOf(':')
    const name = line.slice(0, colon).toLowerCase()
    ;(headers[name] ??= []).push(line.slice(colon + 1).trim())
  }
  let body = text.slice(end + 4)
  if (headers['transfer-encoding']?.[0] === 'chunked') {
    let decoded = ''
    for (let at = 0; ;) {
      const eol = body.indexOf('\r\n', at)
      const size = parseInt(body.slice(at, eol), 16)
      if (!(size > 0)) break
      decoded += body.slice(eol + 2, eol + 2 + size)
      at = eol + 2 + size + 2
    }
    body = decoded
  }
  return { status: Number(statusLine.split(' ')[1]), statusLine, lines, headers, body }
}

/** What in a response would tell a client about the server's code or disk: stack frames, file URLs, absolute paths. */
function leaks (text) {
  const found = []
  if (/\n\s*at\s/.test(text) || /\\n\s*at\s/.test(text)) found.push('a stack frame')
  if (/\.(?:[cm]?js|ts):\d+/.test(text)) found.push('a file:line reference')
  if (text.includes('file://')) found.push('a file: URL')
  if (text.includes('node:internal')) found.push('a node:internal frame')
  for (const path of [repoRoot, spoolDir, homedir()]) {
    if (path.length > 1 && text.includes(path)) found.push(`the path ${path}`)
  }
  return found
}

function multipartBody (parts, boundary = 'SecurityBoundary') {
  const chunks = []
  for (const part of parts) {
    const disposition = part.filename === undefined
      ? `form-data; name="${part.name}"`
      : `form-data; name="${part.name}"; filename="${part.filename}"`
    chunks.push(Buffer.from(`--${boundary}\r\nContent-Disposition: ${disposition}\r\n\r\n`), Buffer.from(part.data ?? ''), Buffer.from('\r\n'))
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`))
  return { body: Buffer.concat(chunks), contentType: `multipart/form-data; boundary=${boundary}` }
}

function post (port, path, { body, contentType }) {
  return raw(port, `POST ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: ${contentType}\r\nContent-Length: ${body.length}\r\n\r\n`, body)
}

// ---------------------------------------------------------------------------
// (a) Error responses
// ---------------------------------------------------------------------------

/** Every way a blocking route can fail, and the status the client gets. */
const failures = [
  ['/throws', s.throwsError, 500],
  ['/type-error', s.throwsTypeError, 500],
  ['/rejects', s.rejects, 500],
  ['/throws-string', s.throwsString, 500],
  ['/throws-object', s.throwsObject, 500],
  ['/throws-null', s.throwsNull, 500],
  ['/throws-undefined', s.throwsUndefined, 500],
  ['/enumerable-stack', s.throwsEnumerableStack, 400],
  ['/exits', s.exits, 500],
  ['/uncaught', s.uncaught, 500],
  ['/times-out', s.spins, 503, { timeout: 100 }],
  ['/uncloneable', s.uncloneable, 500],
  ['/uncloneable-nested', s.uncloneableNested, 500]
]

async function failingApp (t, pool, fastifyOptions, setup) {
  const app = await build(t, pool, {}, fastifyOptions)
  setup?.(app)
  for (const [path, handler, , options] of failures) app.get(path, { blocking: options ?? true }, handler)
  app.post('/upload', { blocking: true }, s.countParts)
  app.get('/fine', { blocking: true }, s.fine)
  return { app, port: await listen(app) }
}

async function checkFailures (t, port) {
  for (const [path, , status] of failures) {
    const res = parse(await get(port, path))
    t.equal(res.status, status, `${path}: ${status}`)
    t.same(leaks(res.lines.join('\n') + '\n' + res.body), [], `${path}: nothing about the code or the disk in ${res.body}`)
    t.notOk('stack' in JSON.parse(res.body), `${path}: no stack field`)
  }
  const malformed = [
    ['truncated', `--B\r\nContent-Disposition: form-data; name="f"; filename="a.txt"\r\n\r\nno end`, 'multipart/form-data; boundary=B'],
    ['no boundary', 'whatever', 'multipart/form-data'],
    ['bad header', '--B\r\nNot-A-Header\r\n\r\n--B--\r\n', 'multipart/form-data; boundary=B'],
    ['boundary only', '--B--', 'multipart/form-data; boundary=B']
  ]
  for (const [what, body, contentType] of malformed) {
    const res = parse(await post(port, '/upload', { body: Buffer.from(body), contentType }))
    t.ok(res.status === 400 || res.status === 200, `malformed multipart, ${what}: ${res.status}`)
    t.same(leaks(res.body), [], `malformed multipart, ${what}: nothing about the code or the disk in ${res.body}`)
  }
  t.equal(parse(await get(port, '/fine')).status, 200, 'the server still serves')
}

for (const pool of pools) {
  test(`${pool}: (a) no stack or path reaches the client, with Fastify's default error handler`, async (t) => {
    const { app, port } = await failingApp(t, pool)
    await checkFailures(t, port)
    // The stacks are in the logs, for the operator.
    const logged = app.logs.find((l) => l.err?.message === 'thrown in the worker')
    t.match(logged.err.stack, /security\.js/, 'the worker-side stack is logged')
  })

  test(`${pool}: (a) same without a logger, and with an error handler that sends the whole error object`, async (t) => {
    const { port } = await failingApp(t, pool, { logger: false }, (app) => {
      // A careless handler: every own enumerable property of the error goes out.
      app.setErrorHandler((err, request, reply) => {
        reply.code(err.statusCode ?? 500).send({ ...err, message: err.message, json: JSON.parse(JSON.stringify(err)) })
      })
    })
    await checkFailures(t, port)
  })
}

for (const pool of pools) {
  test(`${pool}: (a) a thread that cannot load a handler module at run time`, async (t) => {
    // The startup check loads the module in one thread; a thread started
    // later, with the environment changed, fails to import it (a dependency
    // missing at run time). Its error message names absolute paths of the
    // application, and reaches the client as the 500's message.
    const late = await import('./fixtures/security-late.js')
    const app = await build(t, pool, { maxThreads: 1, minThreads: 1 })
    app.get('/late', { blocking: true }, late.late)
    app.get('/exits', { blocking: true }, s.exits)
    const port = await listen(app)
    t.equal(parse(await get(port, '/late')).status, 200, 'loads at first')
    process.env.FASTIFY_BLOCKING_SECURITY_BREAK = '1'
    t.teardown(() => { delete process.env.FASTIFY_BLOCKING_SECURITY_BREAK })
    t.equal(parse(await get(port, '/exits')).status, 500, 'the thread is replaced')
    const res = parse(await get(port, '/late'))
    t.equal(res.status, 500, 'the new thread cannot load the module')
    t.notMatch(res.body, /\n\s*at /, 'no stack')
    t.same(leaks(res.body), [], `no path in ${res.body}`)
    t.equal(JSON.parse(res.body).code, 'FST_BLOCKING_HANDLER_NOT_DEFINED')
    // The import error goes to the log, for routes and for app.blocking.run() alike.
    await t.rejects(app.blocking.run(late.late), { code: 'FST_BLOCKING_HANDLER_NOT_DEFINED' })
    const lines = app.logs.filter((l) => l.msg === 'fastify-blocking: a worker thread could not load the handler')
    t.equal(lines.length, 2, 'one line for the route, one for run()')
    for (const line of lines) t.match(line.err.message, /security-no-such-module/)
  })
}

// ---------------------------------------------------------------------------
// (b) Headers set in a worker
// ---------------------------------------------------------------------------

for (const pool of pools) {
  test(`${pool}: (b) CR, LF and NUL in header names and values set in a worker never reach the wire`, async (t) => {
    const app = await build(t, pool)
    app.get('/evil', { blocking: true }, s.evilHeader)
    app.get('/evil-stream', { blocking: true }, s.evilStreamHeader)
    app.get('/evil-error', { blocking: true }, s.throwsEvilHeaders)
    app.get('/fine', { blocking: true }, s.fine)
    const port = await listen(app)
    const check = (what, text) => {
      const res = parse(text)
      t.ok(res.status === 500 || res.status === 200 || res.status === 400, `${what}: answered (${res.statusLine})`)
      t.equal(text.match(/HTTP\/1\.1 \d{3}/g).length, 1, `${what}: one response, not split`)
      t.notOk('set-cookie' in res.headers, `${what}: no injected header`)
      t.notOk('x-smuggled' in res.headers, `${what}: no smuggled header`)
      t.notOk(res.lines.some((line) => !/^[!#$%&'*+.^_`|~0-9a-z-]+:[\t\x20-\x7e]*$/i.test(line)), `${what}: every header line is a token and printable text`)
      for (const [name, values] of Object.entries(res.headers)) {
        if (name.startsWith('x-evil') || (name === 'content-type' && res.status === 200) || name === 'location') {
          t.notOk(values.some((v) => /injected|smuggled/.test(v)), `${what}: ${name} carries nothing injected`)
        }
      }
      return res
    }
    for (const how of ['header', 'headerName', 'headers', 'headerArray', 'type', 'redirect']) {
      for (const value of ['crlf', 'lf', 'cr', 'nul']) {
        const res = check(`${how} ${value}`, await get(port, `/evil?how=${how}&value=${value}`))
        if (res.status === 200) {
          // Fastify drops a content type it cannot use and sends its own.
          t.equal(how, 'type', `${how} ${value}: only a refused content type is answered 200`)
          t.same(res.headers['content-type'], ['text/plain; charset=utf-8'], `${how} ${value}: the default content type`)
        } else {
          t.equal(res.status, 500, `${how} ${value}: 500`)
        }
        check(`stream, ${how} ${value}`, await get(port, `/evil-stream?how=${how}&value=${value}`))
      }
    }
    // An error whose `headers` Fastify's error handler applies.
    t.equal(check('error headers', await get(port, '/evil-error')).status, 400)
    t.equal(parse(await get(port, '/fine')).status, 200, 'the server keeps serving')
    t.notOk(app.logs.some((l) => l.err?.code === 'FST_BLOCKING_WORKER_CRASHED'), 'no thread died')
  })
}

// ---------------------------------------------------------------------------
// (c) Client filenames
// ---------------------------------------------------------------------------

const hostileNames = [
  '../../etc/passwd',
  '..\\..\\x',
  '/etc/passwd',
  '/absolute/../../x',
  'C:\\Windows\\system32\\x',
  '\\\\server\\share\\x',
  '..',
  '.',
  '',
  'a\u0000b',
  '..%2f..%2fx',
  'x'.repeat(5000),
  '😀/../😀',
  'spool'
]

for (const pool of pools) {
  test(`${pool}: (c) client filenames never choose where a file is written`, async (t) => {
    const app = await build(t, pool, { multipart: { spoolThreshold: 0, limits: { files: 100 } } })
    app.post('/upload', { blocking: true }, s.uploadPaths)
    app.post('/read', async (request) => {
      const { files } = await request.readMultipart()
      return { files: files.map((f) => ({ filename: f.filename, path: f.path })) }
    })
    const port = await listen(app)
    const { body, contentType } = multipartBody(hostileNames.map((filename, i) => ({ name: `f${i}`, filename, data: `file ${i}` })))
    const res = parse(await post(port, '/upload', { body, contentType }))
    t.equal(res.status, 200)
    const answer = JSON.parse(res.body)
    t.equal(answer.tmpdir, spoolDir, 'the worker spools into TMPDIR')
    t.equal(answer.files.length, hostileNames.length, 'every file arrived')
    for (const file of answer.files) {
      t.equal(file.dir, spoolDir, `${JSON.stringify(file.filename.slice(0, 40))}: in the temporary directory`)
      t.match(file.base, /^fastify-blocking-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, 'under a name of ours')
      t.notOk(/[\\/]/.test(file.filename), `the filename the handler sees has no directory part: ${JSON.stringify(file.filename.slice(0, 40))}`)
    }
    const read = JSON.parse(parse(await post(port, '/read', multipartBody([{ name: 'f', filename: '../../../read', data: 'x' }]))).body)
    t.ok(read.files[0].path.startsWith(spoolDir + sep), 'readMultipart() spools into TMPDIR too')
    t.notOk(read.files[0].path.includes('read'), 'under a name of ours')
    // Our spool files (other libraries of this process may use TMPDIR too).
    const ours = () => readdirSync(spoolDir).filter((name) => name.startsWith('fastify-blocking-'))
    await until(() => ours().length === 0, { what: 'the spooled files to be deleted', left: () => readdirSync(spoolDir) })
    t.same(readdirSync(base), ['a'], 'nothing written next to the temporary directory ...')
    t.same(readdirSync(join(base, 'a')), ['b'], '... nor above it')
    t.same(readdirSync(join(base, 'a', 'b')), ['spool'])
  })
}

for (const pool of pools) {
  test(`${pool}: (c) spooled files are readable by their owner only`, async (t) => {
    const app = await build(t, pool, { multipart: { spoolThreshold: 0 } })
    app.post('/upload', { blocking: true }, s.uploadPaths)
    const port = await listen(app)
    const res = JSON.parse(parse(await post(port, '/upload', multipartBody([{ name: 'f', filename: 'a', data: 'secret' }]))).body)
    t.equal(res.files[0].mode & 0o077, 0, `no access for group and others: mode ${res.files[0].mode.toString(8)}`)
  })
}

// ---------------------------------------------------------------------------
// (d) Limits
// ---------------------------------------------------------------------------

for (const pool of pools) {
  test(`${pool}: (d) with the default limits, fileSize is 1 MiB and one request holds at most 10 files`, async (t) => {
    const app = await build(t, pool)
    app.post('/upload', { blocking: true }, s.countParts)
    const port = await listen(app)
    const over = parse(await post(port, '/upload', multipartBody([{ name: 'f', filename: 'f', data: Buffer.alloc(1_048_577) }])))
    t.equal(over.status, 413, 'one byte over fileSize: 413')
    t.equal(JSON.parse(over.body).code, 'FST_BLOCKING_MULTIPART_LIMIT')
    // Files up to fileSize stay in memory up to spoolThreshold (both 1 MiB),
    // so the files limit (10) bounds what one request holds: 10 MiB.
    const files = Array.from({ length: 10 }, (_, i) => ({ name: `f${i}`, filename: `f${i}`, data: Buffer.alloc(1_048_576) }))
    const res = parse(await post(port, '/upload', multipartBody(files)))
    t.equal(res.status, 200)
    t.match(JSON.parse(res.body), { files: 10, inMemory: 10 * 1_048_576, onDisk: 0 }, '10 MiB in memory for one request, at most')
    const eleven = [...files, { name: 'f10', filename: 'f10', data: 'x' }]
    t.equal(parse(await post(port, '/upload', multipartBody(eleven))).status, 413, 'an eleventh file: 413')
  })

  test(`${pool}: (d) request headers: Node's limits apply before a worker is involved`, async (t) => {
    const app = await build(t, pool)
    app.get('/fine', { blocking: true }, s.fine)
    const port = await listen(app)
    const huge = `GET /fine HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`
    t.match(await raw(port, huge), /^HTTP\/1\.1 431 /, 'over 16 KiB of headers: 431')
    const many = 'GET /fine HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n' + Array.from({ length: 3000 }, (_, i) => `h${i}: 1\r\n`).join('') + '\r\n'
    t.match(await raw(port, many), /^HTTP\/1\.1 431 /, '3000 headers: 431')
    t.equal(app.blocking.stats().completed, 0, 'no task ran')
    t.equal(parse(await get(port, '/fine')).status, 200, 'the server keeps serving')
  })

  test(`${pool}: (d) field names cannot pollute prototypes, in the worker or on the main thread`, async (t) => {
    const app = await build(t, pool)
    app.post('/fields', { blocking: true }, s.fieldsShape)
    app.post('/read', async (request) => {
      const { fields } = await request.readMultipart()
      return { keys: Object.keys(fields), polluted: {}.polluted ?? null, proto: Object.getPrototypeOf(fields) === Object.prototype }
    })
    app.post('/json', { blocking: true }, s.fine)
    const port = await listen(app)
    const names = ['__proto__', 'constructor', 'prototype', '__proto__[polluted]', 'constructor[prototype][polluted]', 'hasOwnProperty', 'toString']
    const body = multipartBody([...names.map((name) => ({ name, data: 'x' })), { name: '__proto__', data: 'y' }])
    const res = JSON.parse(parse(await post(port, '/fields', body)).body)
    t.same(res.keys, names, 'each name is a plain key')
    t.match(res, { proto: true, polluted: null, ownProto: true, copyPolluted: null })
    const read = JSON.parse(parse(await post(port, '/read', body)).body)
    t.same(read, { keys: names, polluted: null, proto: true }, 'the same on the main thread (readMultipart)')
    t.equal({}.polluted, undefined, 'this process is clean')
    const json = parse(await post(port, '/json', { body: Buffer.from('{"__proto__":{"polluted":1}}'), contentType: 'application/json' }))
    t.equal(json.status, 400, "JSON bodies: Fastify's onProtoPoisoning refuses __proto__ before a worker sees it")
  })

  test(`${pool}: (d) a worker's log lines land under its own request, whatever their text`, async (t) => {
    const app = await build(t, pool)
    app.get('/log', { blocking: true }, s.logsHostile)
    const port = await listen(app)
    const forged = 'x\n{"level":60,"reqId":"req-forged","msg":"forged"}\r\n'
    const ids = []
    await Promise.all([1, 2].map(async () => {
      const res = parse(await get(port, `/log?text=${encodeURIComponent(forged)}`))
      t.equal(res.status, 200)
    }))
    for (const line of app.logs) if (line.msg === 'incoming request' && line.req?.url.startsWith('/log')) ids.push(line.reqId)
    t.equal(ids.length, 2)
    t.notOk(app.logs.some((l) => l.reqId === 'req-forged' || l.msg === 'forged'), 'no line was forged')
    for (const id of ids) {
      const mine = app.logs.filter((l) => l.reqId === id)
      t.equal(mine.filter((l) => l.msg === forged).length, 2, 'the text stays one message, escaped')
      t.equal(mine.find((l) => l.msg === 'nested').nested.reqId, forged, 'a nested reqId stays nested')
    }
  })
}

for (const pool of pools) {
  test(`${pool}: (d) clients that never read fill the stream cap until a connection timeout frees it`, async (t) => {
    // maxThreads 1: 16 streams or uploads at once. Each hostile client asks
    // for an endless stream and never reads: once its socket's buffers are
    // full, the stream waits for it, holding a place in the cap.
    const hostile = (port) => Array.from({ length: 16 }, () => {
      const socket = connect(port, '127.0.0.1', () => socket.write('GET /endless HTTP/1.1\r\nHost: localhost\r\n\r\n'))
      socket.pause()
      socket.on('error', () => {})
      return socket
    })
    const fetchText = (port, path) => fetch(`http://127.0.0.1:${port}${path}`).then(async (res) => `${res.status} ${await res.text()}`, (err) => `${err.message}: ${err.cause?.code} ${err.cause?.message}`)

    // Fastify's defaults: no connection timeout. The cap is full, the next
    // stream waits (requests still run), until the hostile clients go.
    const app = await build(t, pool, { maxThreads: 1 })
    app.get('/endless', { blocking: true }, s.endless)
    app.get('/short', { blocking: true }, s.shortStream)
    app.get('/fine', { blocking: true }, s.fine)
    const port = await listen(app)
    const sockets = hostile(port)
    await until(() => app.blocking.stats().running === 16, { what: '16 streams holding the cap' })
    const waiting = fetchText(port, '/short')
    await until(() => app.blocking.stats().queued === 1, { what: 'the next stream to wait' })
    t.equal(parse(await get(port, '/fine')).status, 200, 'a request that is not a stream still runs')
    t.equal(app.blocking.stats().queued, 1, 'the stream still waits')
    for (const socket of sockets) socket.destroy()
    t.equal(await waiting, '200 short', 'it runs once the hostile clients are gone')

    // With connectionTimeout, the server drops a socket idle that long, and
    // the stream behind it is cancelled. (A request waiting in the queue is
    // idle too: it is dropped as well if it waits that long; see docs/security.md.)
    const guarded = await build(t, pool, { maxThreads: 1 }, { connectionTimeout: 500 })
    guarded.get('/endless', { blocking: true }, s.endless)
    guarded.get('/short', { blocking: true }, s.shortStream)
    const guardedPort = await listen(guarded)
    const more = hostile(guardedPort)
    t.teardown(() => { for (const socket of more) socket.destroy() })
    // Under load, a socket may be dropped before its stream starts (it was idle
    // that long already): wait until streams have started, then until none runs.
    const endless = () => guarded.blocking.stats().routes['GET /endless']
    await until(() => endless().running + endless().completed + endless().failed > 0, { what: 'the streams to start' })
    await until(() => guarded.blocking.stats().running === 0, { what: 'the idle sockets to be dropped' })
    t.equal(await fetchText(guardedPort, '/short'), '200 short', 'connectionTimeout freed the cap')
  })
}

test('(d) logging a client object as the merge object lets it set reqId: the same in a worker as on the main thread', async (t) => {
  const app = await build(t, 'piscina')
  app.post('/worker', { blocking: true }, s.logsMergeObject)
  app.post('/inline', (request) => {
    request.log.info(request.body, 'merged')
    return 'logged'
  })
  const body = { reqId: 'req-forged', note: 'from the client' }
  await app.inject({ method: 'POST', url: '/worker', payload: body })
  await app.inject({ method: 'POST', url: '/inline', payload: body })
  const merged = app.logs.filter((l) => l.msg === 'merged')
  t.equal(merged.length, 2)
  // pino writes the request's reqId, then the object's: a JSON parser keeps the last.
  t.same(merged.map((l) => l.reqId), ['req-forged', 'req-forged'], 'identical: log client data under a key of its own')
})

for (const pool of pools) {
  test(`${pool}: (d) bodyLimit and multipart bodies of blocking routes`, async (t) => {
    const app = await build(t, pool, {}, { bodyLimit: 10_000 })
    app.post('/upload', { blocking: true }, s.countParts)
    app.post('/json', { blocking: true }, s.fine)
    const port = await listen(app)
    const json = parse(await post(port, '/json', { body: Buffer.from(JSON.stringify({ a: 'x'.repeat(20_000) })), contentType: 'application/json' }))
    t.equal(json.status, 413, 'a JSON body over bodyLimit: 413')
    const res = parse(await post(port, '/upload', multipartBody([{ name: 'a', data: 'x'.repeat(20_000) }])))
    // As with @fastify/multipart, the multipart limits bound a multipart body, not bodyLimit
    // (docs/security.md, F3): 20 KB in one field is within fieldSize (64 KiB).
    t.equal(res.status, 200, `a multipart body over bodyLimit, within the multipart limits: ${res.status}`)
    const over = parse(await post(port, '/upload', multipartBody([{ name: 'a', data: 'x'.repeat(70_000) }])))
    t.equal(over.status, 413, 'a field over fieldSize: 413')
  })

  test(`${pool}: (d) fieldNameSize`, async (t) => {
    const app = await build(t, pool, { multipart: { limits: { fieldNameSize: 10 } } })
    app.post('/upload', { blocking: true }, s.countParts)
    const port = await listen(app)
    const field = parse(await post(port, '/upload', multipartBody([{ name: 'n'.repeat(50), data: 'v' }])))
    t.equal(field.status, 413, `a field name of 50 bytes: ${field.status}`)
    const file = parse(await post(port, '/upload', multipartBody([{ name: 'f'.repeat(50), filename: 'a', data: 'v' }])))
    t.equal(file.status, 413, `a file's field name of 50 bytes: ${file.status}`)
  })
}

// The default limits of docs/security.md (DEFAULT_MULTIPART_LIMITS in lib/options.ts).
const RECOMMENDED_LIMITS = { fieldNameSize: 100, fieldSize: 65_536, fields: 100, fileSize: 1_048_576, files: 10, parts: 1000, headerPairs: 2000 }
for (const pool of pools) {
  test(`${pool}: (d) the default limits`, async (t) => {
    const app = await build(t, pool)
    app.post('/upload', { blocking: true }, s.countParts)
    app.post('/many-fields', { blocking: { multipart: { limits: { fields: 5000 } } } }, s.countParts)
    const port = await listen(app)
    const status = async (path, parts) => parse(await post(port, path, multipartBody(parts))).status
    const fields = (n, size = 1) => Array.from({ length: n }, (_, i) => ({ name: `f${i}`, data: 'x'.repeat(size) }))
    const files = (n) => Array.from({ length: n }, (_, i) => ({ name: `f${i}`, filename: `f${i}`, data: 'x' }))
    t.equal(await status('/upload', fields(100)), 200, '100 fields')
    t.equal(await status('/upload', fields(101)), 413, '101 fields')
    t.equal(await status('/upload', files(10)), 200, '10 files')
    t.equal(await status('/upload', files(11)), 413, '11 files')
    t.equal(await status('/upload', fields(1, 65_536)), 200, 'a field of 64 KiB')
    t.equal(await status('/upload', fields(1, 65_537)), 413, 'a field of 64 KiB + 1')
    t.equal(await status('/upload', [{ name: 'n'.repeat(101), data: 'v' }]), 413, 'a field name of 101 bytes')
    t.equal(await status('/many-fields', fields(1000)), 200, '1000 parts')
    t.equal(await status('/many-fields', fields(1001)), 413, '1001 parts')
  })
}
