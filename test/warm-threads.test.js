// Threads import every blocking handler module before ready() resolves: the
// first request on a thread does not pay for imports.
import { test } from 'tap'
import { build, gate, pools } from './helpers.js'
import { hello, whenImported } from './fixtures/warm.js'

for (const pool of pools) {
  test(`${pool}: every thread minThreads keeps (by default, maxThreads) has imported the handler modules by ready()`, async (t) => {
    const app = await build(t, pool, { maxThreads: 2, minThreads: undefined })
    app.get('/hello', { blocking: true }, hello)
    await app.ready()
    const readyAt = performance.timeOrigin + performance.now()
    t.equal(app.blocking.stats().threads, 2, 'minThreads defaults to maxThreads')
    // Both threads at once: the gate holds each until both have arrived.
    const g = gate()
    const calls = [app.blocking.run(whenImported, g.sab), app.blocking.run(whenImported, g.sab)]
    await g.reached(2)
    g.open()
    const seen = await Promise.all(calls)
    t.not(seen[0].threadId, seen[1].threadId, 'two threads')
    for (const { importedAt } of seen) t.ok(importedAt < readyAt, 'imported before ready() resolved')
  })
}
