import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'tap'
import { build } from './app.js'

test('read the seed, write a user, read it back (maybe through another thread\'s connection)', async (t) => {
  const app = await build()
  t.teardown(() => app.close())

  const ada = await app.inject('/users/1')
  t.equal(ada.statusCode, 200)
  t.same(ada.json(), { id: 1, name: 'Ada Lovelace', email: 'ada@example.com' })

  const created = await app.inject({ method: 'POST', url: '/users', payload: { name: 'Alan Turing', email: 'alan@example.com' } })
  t.equal(created.statusCode, 201)
  t.equal(created.headers.location, '/users/3')
  // Reads go to either thread; each sees the row through its own connection.
  const reads = await Promise.all([app.inject('/users/3'), app.inject('/users/3'), app.inject('/users/3')])
  for (const res of reads) t.same(res.json(), { id: 3, name: 'Alan Turing', email: 'alan@example.com' })
})

test('bad input: 400 from the schemas, 404 and 409 from the handlers', async (t) => {
  const app = await build()
  t.teardown(() => app.close())

  t.equal((await app.inject('/users/abc')).statusCode, 400)
  t.equal((await app.inject({ method: 'POST', url: '/users', payload: { name: 'x', email: 'nope' } })).statusCode, 400)

  const missing = await app.inject('/users/99')
  t.equal(missing.statusCode, 404)
  t.equal(missing.json().message, 'no user 99')

  const duplicate = await app.inject({ method: 'POST', url: '/users', payload: { name: 'Ada', email: 'ada@example.com' } })
  t.equal(duplicate.statusCode, 409)
  t.equal(duplicate.json().message, 'ada@example.com already has an account')
})

test('the threads\' connections are closed when app.close() ends the threads', async (t) => {
  const file = join(t.testdir(), 'users.db')
  const app = await build({ file })
  await Promise.all([app.inject('/users/1'), app.inject('/users/2')])
  t.ok(existsSync(`${file}-wal`), 'open connections keep a write-ahead log')
  await app.close()
  // The last connection to close checkpoints the log and removes it.
  t.notOk(existsSync(`${file}-wal`), 'no connection was left open')
})
