import { test } from 'tap'
import { build, pools } from './helpers.js'
import * as f from './fixtures/failures.js'

for (const pool of pools) {
  test(`${pool}: a thread that exits gives 500 and is replaced`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1 })
    app.get('/exit', { blocking: true }, f.exits)
    app.get('/quick', { blocking: true }, f.quick)
    const before = (await app.inject('/quick')).json().threadId
    for (let i = 0; i < 2; i++) {
      const res = await app.inject('/exit')
      t.equal(res.statusCode, 500)
      t.equal(res.json().code, 'FST_BLOCKING_WORKER_CRASHED')
      t.match(res.json().message, /GET \/exit died: .*code:? 7/)
      const after = await app.inject('/quick')
      t.equal(after.statusCode, 200, 'the app keeps serving')
      t.not(after.json().threadId, before)
    }
    const stats = app.blocking.stats()
    t.equal(stats.failed, 2)
    t.equal(stats.running, 0)
  })

  test(`${pool}: a thread that runs out of memory gives 500 and is replaced`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1, resourceLimits: { maxOldGenerationSizeMb: 96, maxYoungGenerationSizeMb: 16 } })
    app.get('/oom', { blocking: true }, f.oom)
    app.get('/quick', { blocking: true }, f.quick)
    const res = await app.inject('/oom')
    t.equal(res.statusCode, 500)
    t.equal(res.json().code, 'FST_BLOCKING_WORKER_CRASHED')
    t.equal((await app.inject('/quick')).statusCode, 200)
  })

  test(`${pool}: an uncaught exception outside the handler crashes only its task`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1 })
    app.get('/uncaught', { blocking: true }, f.uncaughtLater)
    app.get('/quick', { blocking: true }, f.quick)
    const res = await app.inject('/uncaught')
    t.equal(res.statusCode, 500)
    t.match(res.json().message, /thrown outside the handler/)
    t.equal((await app.inject('/quick')).statusCode, 200)
  })

  test(`${pool}: a thread that exits between tasks is replaced`, async (t) => {
    const app = await build(t, pool, { maxThreads: 1 })
    app.get('/quick', { blocking: true }, f.quick)
    t.equal(await app.blocking.run(f.exitsLater), 'bye')
    // The next task must not be sent to the dead thread.
    for (let i = 0; i < 3; i++) t.equal((await app.inject('/quick')).statusCode, 200)
  })
}
