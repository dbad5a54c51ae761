// Security: header names and values set in a worker cannot inject a header or split
// the response, read as raw bytes off a real socket (T2).
// The threat model, the findings (F1...) and what each test proves are in
// docs/security.md; every test names the threat (T...) or finding it covers.

import { test } from 'tap'
import { build, listen, parse, pools, rawGet } from './helpers.js'
import * as s from './fixtures/security.js'

for (const pool of pools) {
  test(`${pool}: header injection and response splitting (T2): CR, LF and NUL in header names and values set in a worker never reach the wire`, async (t) => {
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
        const res = check(`${how} ${value}`, await rawGet(port, `/evil?how=${how}&value=${value}`))
        if (res.status === 200) {
          // Fastify drops a content type it cannot use and sends its own.
          t.equal(how, 'type', `${how} ${value}: only a refused content type is answered 200`)
          t.same(res.headers['content-type'], ['text/plain; charset=utf-8'], `${how} ${value}: the default content type`)
        } else {
          t.equal(res.status, 500, `${how} ${value}: 500`)
        }
        check(`stream, ${how} ${value}`, await rawGet(port, `/evil-stream?how=${how}&value=${value}`))
      }
    }
    // An error whose `headers` Fastify's error handler applies.
    t.equal(check('error headers', await rawGet(port, '/evil-error')).status, 400)
    t.equal(parse(await rawGet(port, '/fine')).status, 200, 'the server keeps serving')
    t.notOk(app.logs.some((l) => l.err?.code === 'FST_BLOCKING_WORKER_CRASHED'), 'no thread died')
  })
}
