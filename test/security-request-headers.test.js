// Security: oversized request headers meet Node's limits before a worker is involved (T6).
// The threat model, the findings (F1...) and what each test proves are in
// docs/security.md; every test names the threat (T...) or finding it covers.

import { test } from 'tap'
import { build, listen, parse, pools, raw, rawGet } from './helpers.js'
import * as s from './fixtures/security.js'

for (const pool of pools) {
  test(`${pool}: oversized request headers (T6): Node's limits apply before a worker is involved`, async (t) => {
    const app = await build(t, pool)
    app.get('/fine', { blocking: true }, s.fine)
    const port = await listen(app)
    const huge = `GET /fine HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`
    t.match(await raw(port, huge), /^HTTP\/1\.1 431 /, 'over 16 KiB of headers: 431')
    const many = 'GET /fine HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n' + Array.from({ length: 3000 }, (_, i) => `h${i}: 1\r\n`).join('') + '\r\n'
    t.match(await raw(port, many), /^HTTP\/1\.1 431 /, '3000 headers: 431')
    t.equal(app.blocking.stats().completed, 0, 'no task ran')
    t.equal(parse(await rawGet(port, '/fine')).status, 200, 'the server keeps serving')
  })
}
