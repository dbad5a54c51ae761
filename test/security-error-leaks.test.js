// Security: no stack trace or absolute path reaches a client, whatever fails (T1, F5).
// The threat model, the findings (F1...) and what each test proves are in
// docs/security.md; every test names the threat (T...) or finding it covers.

import tap, { test } from 'tap'
import { homedir } from 'node:os'
import { fileURLToPath } from 'node:url'
import { build, listen, parse, pools, rawGet, rawPost, spoolDirectory } from './helpers.js'
import * as s from './fixtures/security.js'

const repoRoot = fileURLToPath(new URL('..', import.meta.url)).replace(/[\\/]$/, '')
// A spool directory of this file's own: leaks() looks for its path too.
const { spoolDir } = spoolDirectory(tap)

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
    const res = parse(await rawGet(port, path))
    t.equal(res.status, status, `${path}: ${status}`)
    t.same(leaks(res.lines.join('\n') + '\n' + res.body), [], `${path}: nothing about the code or the disk in ${res.body}`)
    t.notOk('stack' in JSON.parse(res.body), `${path}: no stack field`)
  }
  const malformed = [
    ['truncated', '--B\r\nContent-Disposition: form-data; name="f"; filename="a.txt"\r\n\r\nno end', 'multipart/form-data; boundary=B'],
    ['no boundary', 'whatever', 'multipart/form-data'],
    ['bad header', '--B\r\nNot-A-Header\r\n\r\n--B--\r\n', 'multipart/form-data; boundary=B'],
    ['boundary only', '--B--', 'multipart/form-data; boundary=B']
  ]
  for (const [what, body, contentType] of malformed) {
    const res = parse(await rawPost(port, '/upload', { body: Buffer.from(body), contentType }))
    t.ok(res.status === 400 || res.status === 200, `malformed multipart, ${what}: ${res.status}`)
    t.same(leaks(res.body), [], `malformed multipart, ${what}: nothing about the code or the disk in ${res.body}`)
  }
  t.equal(parse(await rawGet(port, '/fine')).status, 200, 'the server still serves')
}

for (const pool of pools) {
  test(`${pool}: stack and path leaks in error responses (T1): none with Fastify's default error handler`, async (t) => {
    const { app, port } = await failingApp(t, pool)
    await checkFailures(t, port)
    // The stacks are in the logs, for the operator.
    const logged = app.logs.find((l) => l.err?.message === 'thrown in the worker')
    t.match(logged.err.stack, /security\.js/, 'the worker-side stack is logged')
  })

  test(`${pool}: stack and path leaks in error responses (T1): none without a logger, nor with an error handler that sends the whole error object`, async (t) => {
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
  test(`${pool}: a path leak through a load error (T1, F5): a thread that cannot load a handler module at run time answers without paths`, async (t) => {
    // The startup check loads the module in one thread; a thread started
    // later, with the environment changed, fails to import it (a dependency
    // missing at run time). Its error message names absolute paths of the
    // application, and reaches the client as the 500's message.
    const late = await import('./fixtures/security-late.js')
    const app = await build(t, pool, { maxThreads: 1, minThreads: 1 })
    app.get('/late', { blocking: true }, late.late)
    app.get('/exits', { blocking: true }, s.exits)
    const port = await listen(app)
    t.equal(parse(await rawGet(port, '/late')).status, 200, 'loads at first')
    process.env.FASTIFY_BLOCKING_SECURITY_BREAK = '1'
    t.teardown(() => { delete process.env.FASTIFY_BLOCKING_SECURITY_BREAK })
    t.equal(parse(await rawGet(port, '/exits')).status, 500, 'the thread is replaced')
    const res = parse(await rawGet(port, '/late'))
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
