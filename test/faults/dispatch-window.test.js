// A client that leaves while piscina still holds its task (a thread is
// starting): the task's port must not be closed before the pool sends it.
import { test } from 'tap'
import { request } from 'node:http'
import { build, gate, until } from '../helpers.js'
import { waitAtGate } from '../fixtures/gate.js'
import * as f from '../fixtures/faults.js'
import { asyncGen } from '../fixtures/streams.js'

for (const kind of ['upload', 'stream']) {
  test(`piscina: ${kind} client leaves while the pool holds its task`, async (t) => {
    const app = await build(t, 'piscina', { maxThreads: 2, minThreads: 1 })
    app.post('/upload', { blocking: true }, f.upload)
    app.get('/stream', { blocking: true }, asyncGen)
    await app.listen({ port: 0, host: '127.0.0.1' })
    const g = gate()
    const held = app.blocking.run(waitAtGate, g.sab)
    await g.reached(1)
    const port = app.server.address().port
    const req = kind === 'upload'
      ? request({ host: '127.0.0.1', port, method: 'POST', path: '/upload', agent: false, headers: { 'content-type': 'multipart/form-data; boundary=x', 'content-length': '1000' } })
      : request({ host: '127.0.0.1', port, method: 'GET', path: '/stream?n=3', agent: false })
    req.on('error', () => {})
    if (kind === 'upload') req.flushHeaders()
    else req.end()
    // Dispatched by the scheduler; piscina holds it while the second thread starts.
    await until(() => app.blocking.stats().running === 2, { what: 'the task to be dispatched' })
    req.destroy()
    await until(() => app.blocking.stats().running === 1, { what: 'the task to end' })
    g.open()
    await held
    t.same(app.logs.filter((l) => l.level >= 50).map((l) => l.msg), [], 'nothing failed')
    t.equal(app.blocking.stats().failed, 0)
    t.equal((await app.inject(kind === 'upload' ? { method: 'POST', url: '/upload' } : '/stream?n=1')).statusCode, 200, 'the app still answers')
  })
}
