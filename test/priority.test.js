import { test } from 'tap'
import { readFileSync } from 'node:fs'
import { build, pools } from './helpers.js'
import { niceOfThisThread } from './fixtures/priority.js'
import { snapshot } from './fixtures/routes.js'

const linux = process.platform === 'linux'
const mainNice = () => {
  const stat = readFileSync('/proc/thread-self/stat', 'utf8')
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16])
}

for (const pool of pools) {
  test(`${pool}: priority lowers every pool thread's nice value, not the main thread's`, { skip: !linux && 'reads /proc (Linux)' }, async (t) => {
    const before = mainNice()
    const app = await build(t, pool, { priority: 10, maxThreads: 2 })
    app.get('/x', { blocking: true }, snapshot)
    await app.ready()
    const nices = await Promise.all([app.blocking.run(niceOfThisThread), app.blocking.run(niceOfThisThread)])
    for (const nice of nices) t.equal(nice, Math.min(19, before + 10))
    t.equal(mainNice(), before, 'the main thread keeps its priority')
    t.notOk(app.logs.some((l) => /normal priority/.test(l.msg)), 'nothing refused')
  })

  test(`${pool}: without priority, threads run at the main thread's priority`, { skip: !linux && 'reads /proc (Linux)' }, async (t) => {
    const app = await build(t, pool)
    t.equal(await app.blocking.run(niceOfThisThread), mainNice())
  })
}

test('priority must be an integer from 0 to 19', async (t) => {
  const { default: Fastify } = await import('fastify')
  const { default: blocking } = await import('fastify-blocking')
  for (const priority of [-1, 20, 1.5, 'low']) {
    const app = Fastify()
    await t.rejects(app.register(blocking, { priority }).ready(), { code: 'FST_BLOCKING_INVALID_OPTION', message: /options\.priority must be an integer from 0 \(normal\) to 19/ })
    await app.close()
  }
})
