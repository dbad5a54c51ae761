// Security: field names cannot pollute prototypes, in the worker or on the main thread (T4).
// The threat model, the findings (F1...) and what each test proves are in
// docs/security.md; every test names the threat (T...) or finding it covers.

import tap, { test } from 'tap'
import { build, listen, multipartBody, parse, pools, rawPost, spoolDirectory } from './helpers.js'
import * as s from './fixtures/security.js'

spoolDirectory(tap)

for (const pool of pools) {
  test(`${pool}: prototype pollution through field names (T4): field names cannot pollute prototypes, in the worker or on the main thread`, async (t) => {
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
    const res = JSON.parse(parse(await rawPost(port, '/fields', body)).body)
    t.same(res.keys, names, 'each name is a plain key')
    t.match(res, { proto: true, polluted: null, ownProto: true, copyPolluted: null })
    const read = JSON.parse(parse(await rawPost(port, '/read', body)).body)
    t.same(read, { keys: names, polluted: null, proto: true }, 'the same on the main thread (readMultipart)')
    t.equal({}.polluted, undefined, 'this process is clean')
    const json = parse(await rawPost(port, '/json', { body: Buffer.from('{"__proto__":{"polluted":1}}'), contentType: 'application/json' }))
    t.equal(json.status, 400, "JSON bodies: Fastify's onProtoPoisoning refuses __proto__ before a worker sees it")
  })
}
