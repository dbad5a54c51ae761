// Races on the way to and from temporary files, found by the multipart fuzz.
import tap, { test } from 'tap'
import { watch, writeFileSync, unlinkSync } from 'node:fs'
import { join } from 'node:path'
import { pools } from '../helpers.js'
import { parsed, summarize } from '../fixtures/fuzz.js'
import { checkAlive, checkClosed, sandboxTmp, send, startApp } from './leaks.js'

const tmp = sandboxTmp(tap)
const BOUNDARY = 'spool-races'

function multipart (size) {
  return Buffer.concat([
    Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="f"; filename="f.bin"\r\n\r\n`),
    Buffer.alloc(size, 7),
    Buffer.from(`\r\n--${BOUNDARY}--\r\n`)
  ])
}
const headers = { 'content-type': `multipart/form-data; boundary=${BOUNDARY}` }

/**
 * Records every file created in the temporary directory. `flush()` creates a
 * sentinel file and resolves once the watcher has seen it: inotify reports
 * events in order, so every creation before it has been recorded by then.
 */
function creations () {
  const seen = []
  let sentinel
  const watcher = watch(tmp.dir, (event, name) => {
    if (name === null) return
    if (name === sentinel?.name) sentinel.seen()
    else if (name.startsWith('fastify-blocking-') && !seen.includes(name)) seen.push(name)
  })
  return {
    seen,
    async flush () {
      const name = `sentinel-${Date.now()}`
      const arrived = new Promise((resolve) => { sentinel = { name, seen: resolve } })
      writeFileSync(join(tmp.dir, name), '')
      await arrived
      unlinkSync(join(tmp.dir, name))
      sentinel = undefined
    },
    close: () => watcher.close()
  }
}

for (const pool of pools) {
  test(`${pool}: a file that passes fileSize in its first bytes is never spooled`, async (t) => {
    // Regression: busboy reports the limit before it delivers the bytes that
    // passed it; those bytes then started a temporary file after the upload had
    // failed and its files had been deleted, which nobody deleted (or closed).
    const created = creations()
    t.teardown(created.close)
    const { app, since, port } = await startApp(t, pool, { maxThreads: 1, multipart: { spoolThreshold: 512 } }, (app) => {
      app.post('/limited', { blocking: { multipart: { limits: { fileSize: 2000 } } } }, parsed)
    })
    for (let i = 0; i < 20; i++) {
      const res = await send(port, { method: 'POST', path: '/limited', headers, body: multipart(3000) })
      t.equal(res.status, 413)
    }
    await created.flush()
    t.same(created.seen, [], 'no file was created for an upload that had already failed')
    await checkAlive(t, app, { maxThreads: 1, tmp })
    await checkClosed(t, app, since, { tmp })
  })

  test(`${pool}: readMultipart() spooled files are deleted after every response`, async (t) => {
    // Regression: the task's outcome (over the pool's channel) could be seen
    // before the worker's "spooled" message on the upload's port, which was then
    // closed unread: the file was never deleted. About 1 upload in 30 did so.
    const { app, since, port } = await startApp(t, pool, { maxThreads: 2, multipart: { spoolThreshold: 512 } }, (app) => {
      app.post('/read', async (request) => {
        const { fields, files } = await request.readMultipart()
        return summarize(fields, files)
      })
    })
    for (let i = 0; i < 100; i++) {
      const res = await send(port, { method: 'POST', path: '/read', headers, body: multipart(1000) })
      t.equal(res.status, 200)
      t.same(JSON.parse(res.body), { values: 0, files: [1000], spooled: 1 })
    }
    await checkAlive(t, app, { maxThreads: 2, tmp })
    await checkClosed(t, app, since, { tmp })
  })
}
