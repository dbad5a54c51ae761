// Multipart limits that busboy leaves to its caller.
import tap, { test } from 'tap'
import { pools } from '../helpers.js'
import { parsed, summarize } from '../fixtures/fuzz.js'
import { checkAlive, checkClosed, sandboxTmp, send, startApp } from './leaks.js'

const tmp = sandboxTmp(tap)
const BOUNDARY = 'limits'
const headers = { 'content-type': `multipart/form-data; boundary=${BOUNDARY}` }

function multipart (parts) {
  const chunks = []
  for (const { name, value, filename } of parts) {
    const disposition = `form-data${name === undefined ? '' : `; name="${name}"`}${filename === undefined ? '' : `; filename="${filename}"`}`
    chunks.push(`--${BOUNDARY}\r\nContent-Disposition: ${disposition}\r\n\r\n${value}\r\n`)
  }
  chunks.push(`--${BOUNDARY}--\r\n`)
  return chunks.join('')
}

for (const pool of pools) {
  test(`${pool}: fieldNameSize applies to the names of fields and files (413), on a blocking route and with readMultipart()`, async (t) => {
    // busboy applies fieldNameSize to urlencoded bodies only: a multipart field
    // or file name of any length used to be accepted (the multipart fuzz's huge
    // names). The worker checks it; here with readMultipart() too, in bytes, at
    // the exact limit, and overridden per call.
    const { app, since, port } = await startApp(t, pool, { maxThreads: 1, multipart: { limits: { fieldNameSize: 20 } } }, (app) => {
      app.post('/blocking', { blocking: true }, parsed)
      app.post('/read', async (request) => {
        const { fields, files } = await request.readMultipart()
        return summarize(fields, files)
      })
      app.post('/read-wide', async (request) => {
        const { fields, files } = await request.readMultipart({ limits: { fieldNameSize: 5000 } })
        return summarize(fields, files)
      })
    })
    const long = 'n'.repeat(21)
    const exact = 'n'.repeat(20)
    const wide = 'é'.repeat(11) // 22 bytes in 11 characters: the limit counts bytes
    for (const path of ['/blocking', '/read']) {
      for (const [what, parts] of [
        ['a field name', [{ name: long, value: 'v' }]],
        ['a file name', [{ name: 'ok', value: 'v' }, { name: long, value: 'data', filename: 'f.bin' }]],
        ['a name in bytes', [{ name: wide, value: 'v' }]]
      ]) {
        const res = await send(port, { method: 'POST', path, headers, body: multipart(parts) })
        t.equal(res.status, 413, `${path}: ${what} past fieldNameSize`)
        t.match(JSON.parse(res.body), { code: 'FST_BLOCKING_MULTIPART_LIMIT', message: /fieldNameSize \(20 bytes\)/ }, `${path}: ${what}`)
      }
      const ok = await send(port, { method: 'POST', path, headers, body: multipart([{ name: exact, value: 'v' }, { name: exact, value: 'data', filename: 'f.bin' }]) })
      t.same([ok.status, JSON.parse(ok.body)], [200, { values: 1, files: [4], spooled: 0 }], `${path}: names of exactly fieldNameSize bytes`)
    }
    const wider = await send(port, { method: 'POST', path: '/read-wide', headers, body: multipart([{ name: 'n'.repeat(4000), value: 'v' }]) })
    t.equal(wider.status, 200, 'readMultipart({ limits }) overrides it')
    await checkAlive(t, app, { maxThreads: 1, tmp })
    await checkClosed(t, app, since, { tmp })
  })

  test(`${pool}: parts without a name answer 400, and no thread dies of them`, async (t) => {
    // Regression (found by the multipart fuzz): the fieldNameSize check measured
    // the name busboy gives a part without one (undefined) and threw in the
    // worker's parser, which ended the thread and every task on it (500). Such
    // a part was then accepted as a field called "undefined"; RFC 7578 §4.2
    // requires a name, and the peers answer 400 (see multipart-conformance).
    const { app, since, port } = await startApp(t, pool, { maxThreads: 1 }, (app) => {
      app.post('/blocking', { blocking: true }, parsed)
      app.post('/read', async (request) => {
        const { fields, files } = await request.readMultipart()
        return summarize(fields, files)
      })
    })
    const before = JSON.parse((await send(port, { path: '/quick' })).body).threadId
    for (const path of ['/blocking', '/read']) {
      for (const [what, parts] of [['a field', [{ value: 'v' }]], ['a file', [{ value: 'data', filename: 'f.bin' }]]]) {
        const res = await send(port, { method: 'POST', path, headers, body: multipart(parts) })
        t.same([res.status, JSON.parse(res.body).code], [400, 'FST_BLOCKING_MULTIPART_INVALID'], `${path}: ${what} without a name`)
      }
    }
    t.equal(JSON.parse((await send(port, { path: '/quick' })).body).threadId, before, 'no thread died')
    t.equal(app.blocking.stats().failed, 4, 'the four uploads failed (as 400s), nothing else')
    await checkAlive(t, app, { maxThreads: 1, tmp })
    await checkClosed(t, app, since, { tmp })
  })
}
