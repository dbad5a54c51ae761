// Security: what one multipart request can make a worker hold or parse: the default
// limits, bodyLimit, fieldNameSize (T7, T8, F1, F2, F3, F4).
// The threat model, the findings (F1...) and what each test proves are in
// docs/security.md; every test names the threat (T...) or finding it covers.

import tap, { test } from 'tap'
import { build, listen, multipartBody, parse, pools, rawPost, spoolDirectory } from './helpers.js'
import * as s from './fixtures/security.js'

spoolDirectory(tap)

for (const pool of pools) {
  test(`${pool}: memory exhaustion through multipart bodies (T7, F2): with the default limits, fileSize is 1 MiB and one request holds at most 10 files`, async (t) => {
    const app = await build(t, pool)
    app.post('/upload', { blocking: true }, s.countParts)
    const port = await listen(app)
    const over = parse(await rawPost(port, '/upload', multipartBody([{ name: 'f', filename: 'f', data: Buffer.alloc(1_048_577) }])))
    t.equal(over.status, 413, 'one byte over fileSize: 413')
    t.equal(JSON.parse(over.body).code, 'FST_BLOCKING_MULTIPART_LIMIT')
    // Files up to fileSize stay in memory up to spoolThreshold (both 1 MiB),
    // so the files limit (10) bounds what one request holds: 10 MiB.
    const files = Array.from({ length: 10 }, (_, i) => ({ name: `f${i}`, filename: `f${i}`, data: Buffer.alloc(1_048_576) }))
    const res = parse(await rawPost(port, '/upload', multipartBody(files)))
    t.equal(res.status, 200)
    t.match(JSON.parse(res.body), { files: 10, inMemory: 10 * 1_048_576, onDisk: 0 }, '10 MiB in memory for one request, at most')
    const eleven = [...files, { name: 'f10', filename: 'f10', data: 'x' }]
    t.equal(parse(await rawPost(port, '/upload', multipartBody(eleven))).status, 413, 'an eleventh file: 413')
  })

  test(`${pool}: multipart bodies past bodyLimit (T7, F3): the multipart limits bound them, not bodyLimit`, async (t) => {
    const app = await build(t, pool, {}, { bodyLimit: 10_000 })
    app.post('/upload', { blocking: true }, s.countParts)
    app.post('/json', { blocking: true }, s.fine)
    const port = await listen(app)
    const json = parse(await rawPost(port, '/json', { body: Buffer.from(JSON.stringify({ a: 'x'.repeat(20_000) })), contentType: 'application/json' }))
    t.equal(json.status, 413, 'a JSON body over bodyLimit: 413')
    const res = parse(await rawPost(port, '/upload', multipartBody([{ name: 'a', data: 'x'.repeat(20_000) }])))
    // As with @fastify/multipart, the multipart limits bound a multipart body, not bodyLimit
    // (docs/security.md, F3): 20 KB in one field is within fieldSize (64 KiB).
    t.equal(res.status, 200, `a multipart body over bodyLimit, within the multipart limits: ${res.status}`)
    const over = parse(await rawPost(port, '/upload', multipartBody([{ name: 'a', data: 'x'.repeat(70_000) }])))
    t.equal(over.status, 413, 'a field over fieldSize: 413')
  })

  test(`${pool}: oversized field names (T7, F4): fieldNameSize applies to fields and to files' field names`, async (t) => {
    const app = await build(t, pool, { multipart: { limits: { fieldNameSize: 10 } } })
    app.post('/upload', { blocking: true }, s.countParts)
    const port = await listen(app)
    const field = parse(await rawPost(port, '/upload', multipartBody([{ name: 'n'.repeat(50), data: 'v' }])))
    t.equal(field.status, 413, `a field name of 50 bytes: ${field.status}`)
    const file = parse(await rawPost(port, '/upload', multipartBody([{ name: 'f'.repeat(50), filename: 'a', data: 'v' }])))
    t.equal(file.status, 413, `a file's field name of 50 bytes: ${file.status}`)
  })

  // The default limits of docs/security.md (DEFAULT_MULTIPART_LIMITS in lib/options.ts).
  test(`${pool}: memory and CPU exhaustion through multipart bodies (T7, T8, F1, F2, F4): each default limit holds`, async (t) => {
    const app = await build(t, pool)
    app.post('/upload', { blocking: true }, s.countParts)
    app.post('/many-fields', { blocking: { multipart: { limits: { fields: 5000 } } } }, s.countParts)
    const port = await listen(app)
    const status = async (path, parts) => parse(await rawPost(port, path, multipartBody(parts))).status
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
