// Security: clients that never read hold the stream cap until a connection timeout
// frees it (T9, F7).
// The threat model, the findings (F1...) and what each test proves are in
// docs/security.md; every test names the threat (T...) or finding it covers.

import { test } from 'tap'
import { connect } from 'node:net'
import { build, listen, parse, pools, rawGet, until } from './helpers.js'
import * as s from './fixtures/security.js'

for (const pool of pools) {
  test(`${pool}: slow clients holding the stream cap (T9, F7): clients that never read fill the stream cap until a connection timeout frees it`, async (t) => {
    // maxThreads 1: 16 streams or uploads at once. Each hostile client asks
    // for an endless stream and never reads: once its socket's buffers are
    // full, the stream waits for it, holding a place in the cap.
    const hostile = (port) => Array.from({ length: 16 }, () => {
      const socket = connect(port, '127.0.0.1', () => socket.write('GET /endless HTTP/1.1\r\nHost: localhost\r\n\r\n'))
      socket.pause()
      socket.on('error', () => {})
      return socket
    })
    const fetchText = (port, path) => fetch(`http://127.0.0.1:${port}${path}`).then(async (res) => `${res.status} ${await res.text()}`, (err) => `${err.message}: ${err.cause?.code} ${err.cause?.message}`)

    // Fastify's defaults: no connection timeout. The cap is full, the next
    // stream waits (requests still run), until the hostile clients go.
    const app = await build(t, pool, { maxThreads: 1 })
    app.get('/endless', { blocking: true }, s.endless)
    app.get('/short', { blocking: true }, s.shortStream)
    app.get('/fine', { blocking: true }, s.fine)
    const port = await listen(app)
    const sockets = hostile(port)
    await until(() => app.blocking.stats().running === 16, { what: '16 streams holding the cap' })
    const waiting = fetchText(port, '/short')
    await until(() => app.blocking.stats().queued === 1, { what: 'the next stream to wait' })
    t.equal(parse(await rawGet(port, '/fine')).status, 200, 'a request that is not a stream still runs')
    t.equal(app.blocking.stats().queued, 1, 'the stream still waits')
    for (const socket of sockets) socket.destroy()
    t.equal(await waiting, '200 short', 'it runs once the hostile clients are gone')

    // With connectionTimeout, the server drops a socket idle that long, and
    // the stream behind it is cancelled. (A request waiting in the queue is
    // idle too: it is dropped as well if it waits that long; see docs/security.md.)
    const guarded = await build(t, pool, { maxThreads: 1 }, { connectionTimeout: 500 })
    guarded.get('/endless', { blocking: true }, s.endless)
    guarded.get('/short', { blocking: true }, s.shortStream)
    const guardedPort = await listen(guarded)
    const more = hostile(guardedPort)
    t.teardown(() => { for (const socket of more) socket.destroy() })
    // Under load, a socket may be dropped before its stream starts (it was idle
    // that long already): wait until streams have started, then until none runs.
    const endless = () => guarded.blocking.stats().routes['GET /endless']
    await until(() => endless().running + endless().completed + endless().failed > 0, { what: 'the streams to start' })
    await until(() => guarded.blocking.stats().running === 0, { what: 'the idle sockets to be dropped' })
    t.equal(await fetchText(guardedPort, '/short'), '200 short', 'connectionTimeout freed the cap')
  })
}
