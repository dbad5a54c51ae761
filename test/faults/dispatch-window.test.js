// A client that leaves while its task waits on a thread's own queue: a short
// task may be handed to a thread that still runs another (lib/threads.ts),
// and the client may leave before the thread starts it. It must never run,
// and nothing may fail.
import { test } from 'tap'
import { request } from 'node:http'
import { build, gate, pools, until } from '../helpers.js'
import { armGate, gatedRoute } from '../fixtures/gate.js'

for (const pool of pools) {
  test(`${pool}: a client that leaves while its task waits on a busy thread: the task never runs`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1, minThreads: 1 })
    app.get('/gated', { blocking: true }, gatedRoute)
    await app.listen({ port: 0, host: '127.0.0.1' })
    let closed = 0
    app.server.on('connection', (socket) => socket.on('close', () => closed++))
    const port = app.server.address().port
    const get = () => new Promise((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path: '/gated', agent: false }, (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode))
      })
      req.on('error', reject)
      req.end()
    })

    // The route runs short tasks (so the scheduler may queue them on a busy thread).
    const open = gate()
    open.open()
    await app.blocking.run(armGate, open.sab)
    for (let i = 0; i < 20; i++) t.equal((await app.inject('/gated')).statusCode, 200)

    const held = gate()
    await app.blocking.run(armGate, held.sab)
    const first = get()
    await held.reached(1)
    // The second goes to the same thread, behind the first.
    const leaving = request({ host: '127.0.0.1', port, path: '/gated', agent: false })
    leaving.on('error', () => {})
    leaving.end()
    await until(() => app.blocking.stats().running === 2, { what: 'the second task to be handed to the busy thread' })
    leaving.destroy()
    await until(() => closed === 1, { what: 'the server to see the client leave' })
    held.open()
    t.equal(await first, 200)
    await until(() => app.blocking.stats().running === 0, { what: 'both tasks to end' })
    t.equal(held.arrived(), 1, 'the task whose client left never ran')
    const stats = app.blocking.stats()
    t.equal(stats.failed, 0)
    t.same(app.logs.filter((l) => l.level >= 50).map((l) => l.msg), [], 'nothing failed')
    t.equal(await get(), 200, 'the app still answers')
  })
}
