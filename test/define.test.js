import { test } from 'tap'
import { execFile } from 'node:child_process'
import { createRequire } from 'node:module'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { promisify } from 'node:util'
import { defineHandler, defineTask } from 'fastify-blocking'
import { build, pools } from './helpers.js'
import { hiddenRoutes } from './fixtures/routes.js'

const require = createRequire(import.meta.url)
const { cjsHandler, cjsTask } = require('./fixtures/cjs-handlers.cjs')
const run = promisify(execFile)
const here = fileURLToPath(new URL('.', import.meta.url))

test('defineHandler and defineTask return the function itself, still callable', async (t) => {
  const fn = (a) => a + 1
  t.equal(defineTask(import.meta.url, fn), fn)
  t.equal(fn(1), 2)
  t.equal(hiddenRoutes[0](), 'first hidden')
})

test('moduleUrl may be a file: URL string, a URL or an absolute path; nothing else', async (t) => {
  t.doesNotThrow(() => defineHandler(new URL(import.meta.url), () => 1))
  t.doesNotThrow(() => defineHandler(fileURLToPath(import.meta.url), () => 1))
  t.throws(() => defineHandler('relative/path.js', () => 1), { name: 'TypeError', message: /import\.meta\.url, __filename or a file: URL/ })
  t.throws(() => defineHandler('https://example.com/x.js', () => 1), TypeError)
  t.throws(() => defineHandler(undefined, () => 1), TypeError)
  t.throws(() => defineTask(import.meta.url, 'not a function'), { message: /fn must be a function/ })
  const once = defineTask(import.meta.url, () => 1)
  t.throws(() => defineTask(import.meta.url, once), { message: /already defined/ })
})

for (const pool of pools) {
  test(`${pool}: CommonJS handler modules work with __filename`, async (t) => {
    const app = await build(t, pool)
    app.get('/cjs', { blocking: true }, cjsHandler)
    t.same((await app.inject('/cjs?q=1')).json(), { cjs: true, isMainThread: false, q: '1' })
    t.equal(await app.blocking.run(cjsTask, 21), 42)
  })

  test(`${pool}: TypeScript handler modules work under node --import tsx`, async (t) => {
    const { stdout } = await run(process.execPath, ['--import', 'tsx', `${here}fixtures/ts-app.ts`, pool], { cwd: `${here}..`, timeout: 60_000 })
    t.same(JSON.parse(stdout), { status: 200, body: { greeting: 'hello ts', isMainThread: false } })
  })

  test(`${pool}: app.blocking.run runs defined functions and rejects others`, async (t) => {
    const app = await build(t, pool)
    t.equal(await app.blocking.run(hiddenRoutes[1]), 'second hidden', 'a handler runs too, with the given arguments')
    await t.rejects(app.blocking.run(() => 1), { code: 'FST_BLOCKING_HANDLER_NOT_DEFINED', message: /not made with defineHandler or defineTask/ })
  })
}

test('require(\'fastify-blocking\') works from CommonJS', async (t) => {
  const { stdout } = await run(process.execPath, ['-e', `
    const blocking = require('fastify-blocking')
    const plugin = blocking.default
    console.log(JSON.stringify({
      plugin: typeof plugin,
      name: plugin[Symbol.for('plugin-meta')].name,
      defineHandler: typeof blocking.defineHandler,
      code: new blocking.FST_BLOCKING_QUEUE_FULL('x').code
    }))
  `], { cwd: `${here}..` })
  t.same(JSON.parse(stdout.trim().split('\n').pop()), { plugin: 'function', name: 'fastify-blocking', defineHandler: 'function', code: 'FST_BLOCKING_QUEUE_FULL' })
  t.ok(pathToFileURL(require.resolve('fastify-blocking')).href.endsWith('/dist/lib/index.js'))
})
