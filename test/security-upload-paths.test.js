// Security: client filenames never become paths, nothing is written outside the
// temporary directory, and spooled files are private (T3, F6).
// The threat model, the findings (F1...) and what each test proves are in
// docs/security.md; every test names the threat (T...) or finding it covers.

import tap, { test } from 'tap'
import { readdirSync } from 'node:fs'
import { join, sep } from 'node:path'
import { build, listen, multipartBody, parse, pools, rawPost, spoolDirectory, until } from './helpers.js'
import * as s from './fixtures/security.js'

// Spooled files go to os.tmpdir() of the worker threads, which follows TMPDIR
// when they start: a directory of this file's own, watched three levels up.
const { base, spoolDir } = spoolDirectory(tap)

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
  test(`${pool}: path traversal through upload filenames (T3): client filenames never choose where a file is written`, async (t) => {
    const app = await build(t, pool, { multipart: { spoolThreshold: 0, limits: { files: 100 } } })
    app.post('/upload', { blocking: true }, s.uploadPaths)
    app.post('/read', async (request) => {
      const { files } = await request.readMultipart()
      return { files: files.map((f) => ({ filename: f.filename, path: f.path })) }
    })
    const port = await listen(app)
    const { body, contentType } = multipartBody(hostileNames.map((filename, i) => ({ name: `f${i}`, filename, data: `file ${i}` })))
    const res = parse(await rawPost(port, '/upload', { body, contentType }))
    t.equal(res.status, 200)
    const answer = JSON.parse(res.body)
    t.equal(answer.tmpdir, spoolDir, 'the worker spools into TMPDIR')
    t.equal(answer.files.length, hostileNames.length, 'every file arrived')
    for (const file of answer.files) {
      t.equal(file.dir, spoolDir, `${JSON.stringify(file.filename.slice(0, 40))}: in the temporary directory`)
      t.match(file.base, /^fastify-blocking-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, 'under a name of ours')
      t.notOk(/[\\/]/.test(file.filename), `the filename the handler sees has no directory part: ${JSON.stringify(file.filename.slice(0, 40))}`)
    }
    const read = JSON.parse(parse(await rawPost(port, '/read', multipartBody([{ name: 'f', filename: '../../../read', data: 'x' }]))).body)
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
  test(`${pool}: spooled uploads read by other local users (F6): spooled files are readable by their owner only`, async (t) => {
    const app = await build(t, pool, { multipart: { spoolThreshold: 0 } })
    app.post('/upload', { blocking: true }, s.uploadPaths)
    const port = await listen(app)
    const res = JSON.parse(parse(await rawPost(port, '/upload', multipartBody([{ name: 'f', filename: 'a', data: 'secret' }]))).body)
    t.equal(res.files[0].mode & 0o077, 0, `no access for group and others: mode ${res.files[0].mode.toString(8)}`)
  })
}
