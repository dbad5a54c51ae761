import { test } from 'tap'
import { build, pools, until } from './helpers.js'
import * as f from './fixtures/failures.js'

// A handler's lines leave its thread as they are written (so that a thread
// terminated at its timeout has had its say, see timeout.test.js) and reach
// the request's logger once each, in order, before the response.
for (const pool of pools) {
  test(`${pool}: each request's lines reach its logger once, in order, with its reqId`, async (t) => {
    const app = await build(t, pool, { maxThreads: 2 })
    app.get('/lines', { blocking: true }, f.logsInOrder)
    app.get('/stream', { blocking: true }, f.streamLogsInOrder)
    const n = 20
    const responses = await Promise.all([
      ...Array.from({ length: 8 }, () => app.inject(`/lines?n=${n}`)),
      ...Array.from({ length: 4 }, () => app.inject(`/stream?n=${n}`))
    ])
    for (const res of responses) t.equal(res.statusCode, 200)
    const ids = app.logs.filter((l) => l.msg === 'incoming request').map((l) => [l.reqId, l.req.url])
    t.equal(ids.length, 12)
    // A stream's last line is written before its end: it is in the log once the stream is.
    await until(() => app.logs.filter((l) => l.msg === 'line').length === 8 * n + 4 * (n + 1), {
      what: 'every line', left: () => app.logs.filter((l) => l.msg === 'line').length
    })
    for (const [reqId, url] of ids) {
      const lines = app.logs.filter((l) => l.reqId === reqId && l.msg === 'line').map((l) => l.i)
      const expected = Array.from({ length: url.startsWith('/stream') ? n + 1 : n }, (_, i) => i)
      t.same(lines, expected, `${url} ${reqId}`)
      // Before Fastify's own line for the response.
      const done = app.logs.findIndex((l) => l.reqId === reqId && l.msg === 'request completed')
      const last = app.logs.findLastIndex((l) => l.reqId === reqId && l.msg === 'line')
      if (!url.startsWith('/stream')) t.ok(last < done, `${url}: lines before the response`)
    }
  })
}
