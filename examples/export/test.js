import { get } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import { test } from 'tap'
import { build } from './app.js'
import { exportProgress } from './handlers.js'

test('the export has a header and every row', async (t) => {
  const app = await build()
  t.teardown(() => app.close())

  const res = await app.inject('/export?rows=2500')
  t.equal(res.statusCode, 200)
  t.equal(res.headers['content-type'], 'text/csv; charset=utf-8')
  const lines = res.body.trimEnd().split('\n')
  t.equal(lines.length, 2501)
  t.same([lines[0], lines[1], lines.at(-1)], ['id,name,score', '1,user1,919', '2500,user2500,500'])
  t.equal((await app.inject('/export')).body.trimEnd().split('\n').length, 1001, '1000 rows by default')
})

test('a bad row count gets 400', async (t) => {
  const app = await build()
  t.teardown(() => app.close())
  for (const rows of ['many', '-1', '20000000']) {
    const res = await app.inject(`/export?rows=${rows}`)
    t.equal(res.statusCode, 400, rows)
  }
})

test('a client that stops reading holds the export back; one that leaves ends it', async (t) => {
  const app = await build({ threads: 1 }) // exportProgress then reads the stream's thread
  t.teardown(() => app.close())
  const base = await app.listen({ port: 0, host: '127.0.0.1' })
  const progress = () => app.blocking.run(exportProgress)

  // node:http rather than fetch: after an aborted fetch, Node 20's undici opens
  // a spare connection that keeps app.close() waiting for its headers timeout.
  const rows = 10_000_000 // about 250 MB, were it all produced
  const res = await new Promise((resolve, reject) => get(`${base}/export?rows=${rows}`, resolve).on('error', reject))
  const first = await new Promise((resolve) => res.once('data', (chunk) => { res.pause(); resolve(chunk) }))
  t.match(first.toString(), /^id,name,score\n/)

  // The client reads nothing more: production stops once the buffers are full.
  let before
  let after = await progress()
  do {
    before = after
    await sleep(100)
    after = await progress()
  } while (after.rows !== before.rows)
  t.equal(after.open, 1)
  t.ok(after.rows < rows / 20, `${after.rows} rows produced for a client that read one chunk`)

  res.destroy() // the client goes away
  while ((await progress()).open > 0) await sleep(10) // the generator's finally ran
  t.pass('the export ended when its client went away')
})
