import { test } from 'tap'
import { build, pools } from './helpers.js'
import * as f from './fixtures/failures.js'

for (const pool of pools) {
  test(`${pool}: a thrown error keeps statusCode, code, message and name, without its stack`, async (t) => {
    const app = await build(t, pool)
    app.get('/teapot', { blocking: true }, f.throwsHttp)
    app.get('/status', { blocking: true }, f.throwsStatus)
    app.get('/plain', { blocking: true }, f.throwsPlain)
    app.get('/string', { blocking: true }, f.throwsString)
    app.get('/rejects', { blocking: true }, f.rejects)
    const teapot = await app.inject('/teapot')
    t.equal(teapot.statusCode, 418)
    t.same(teapot.json(), { statusCode: 418, code: 'E_TEAPOT', error: "I'm a Teapot", message: 'I am a teapot' })
    t.notMatch(teapot.body, /at |fixtures/, 'no stack reaches the client')
    t.equal((await app.inject('/status')).statusCode, 410)
    const plain = await app.inject('/plain')
    t.equal(plain.statusCode, 500)
    t.equal(plain.json().message, 'bad things')
    t.notMatch(plain.body, /failures\.js/)
    t.equal((await app.inject('/string')).json().message, 'just a string')
    t.equal((await app.inject('/rejects')).statusCode, 409)
    const logged = app.logs.find((l) => l.err?.message === 'bad things')
    t.ok(logged, 'the error handler logged the 500')
    t.match(logged.err.stack, /failures\.js/, 'with the worker-side stack')
    t.equal(logged.err.type, 'TypeError')
  })

  test(`${pool}: the app's error handler sees the worker's error`, async (t) => {
    const app = await build(t, pool)
    app.setErrorHandler((err, request, reply) => {
      reply.code(err.statusCode ?? 500).send({ handled: true, name: err.name, code: err.code, detail: err.detail, isError: err instanceof Error })
    })
    app.get('/teapot', { blocking: true }, f.throwsHttp)
    const res = await app.inject('/teapot')
    t.equal(res.statusCode, 418)
    t.same(res.json(), { handled: true, name: 'TeapotError', code: 'E_TEAPOT', detail: { brewing: false }, isError: true })
  })

  test(`${pool}: request.log in the worker reaches the app's logger with reqId`, async (t) => {
    const app = await build(t, pool)
    app.get('/logs', { blocking: true }, f.logs)
    app.get('/throws', { blocking: true }, f.logsThenThrows)
    const res = await app.inject('/logs')
    t.equal(res.body, 'logged')
    const reqId = app.logs.find((l) => l.msg === 'incoming request').reqId
    const mine = app.logs.filter((l) => l.reqId === reqId)
    const plain = mine.find((l) => l.msg === 'plain message')
    t.equal(plain.level, 30)
    const withObject = mine.find((l) => l.msg === 'with object')
    t.equal(withObject.level, 40)
    t.equal(withObject.user, 'ada')
    t.notOk('fn' in withObject)
    const errorLine = mine.find((l) => l.level === 50)
    t.equal(errorLine.err.message, 'an error object')
    t.match(errorLine.err.stack, /failures\.js/)
    t.equal(mine.find((l) => l.msg === 'nested error').err.type, 'RangeError')
    t.ok(mine.find((l) => l.msg === '42'))
    await app.inject('/throws')
    t.ok(app.logs.find((l) => l.msg === 'before the throw' && l.reqId !== reqId), 'lines logged before a throw are kept')
  })
}
