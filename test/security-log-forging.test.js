// Security: a client cannot forge log lines through a worker's request.log (T5).
// The threat model, the findings (F1...) and what each test proves are in
// docs/security.md; every test names the threat (T...) or finding it covers.

import { test } from 'tap'
import { build, listen, parse, pools, rawGet } from './helpers.js'
import * as s from './fixtures/security.js'

for (const pool of pools) {
  test(`${pool}: forged log lines (T5): a worker's log lines land under its own request, whatever their text`, async (t) => {
    const app = await build(t, pool)
    app.get('/log', { blocking: true }, s.logsHostile)
    const port = await listen(app)
    const forged = 'x\n{"level":60,"reqId":"req-forged","msg":"forged"}\r\n'
    const ids = []
    await Promise.all([1, 2].map(async () => {
      const res = parse(await rawGet(port, `/log?text=${encodeURIComponent(forged)}`))
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

test('forged log lines (T5): logging a client object as the merge object lets it set reqId, the same in a worker as on the main thread', async (t) => {
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
