import { test } from 'tap'
import { build } from './app.js'

/** Builds the app for test `t`; returns a function that POSTs JSON to it. */
async function start (t) {
  const app = await build()
  t.teardown(() => app.close())
  return (url, payload) => app.inject({ method: 'POST', url, payload })
}

test('hash, then verify the right and a wrong password', async (t) => {
  const post = await start(t)

  const res = await post('/hash', { password: 'correct horse' })
  t.equal(res.statusCode, 200)
  const { hash } = res.json()
  t.match(hash, /^scrypt\$[\w+/]+=*\$[\w+/]+=*$/)
  t.not((await post('/hash', { password: 'correct horse' })).json().hash, hash, 'a new salt every time')

  t.same((await post('/verify', { password: 'correct horse', hash })).json(), { valid: true })
  t.same((await post('/verify', { password: 'wrong horse!', hash })).json(), { valid: false })
})

test('bad input gets 400, from the schema or from the worker', async (t) => {
  const post = await start(t)

  const short = await post('/hash', { password: 'short' })
  t.equal(short.statusCode, 400)
  t.match(short.json().message, /password must NOT have fewer than 8 characters/)

  const forged = await post('/verify', { password: 'correct horse', hash: 'md5$abc$def' })
  t.equal(forged.statusCode, 400)
  t.equal(forged.json().message, 'hash is not one that POST /hash made')
})
