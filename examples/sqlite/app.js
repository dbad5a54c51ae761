// A synchronous database on the worker pool: GET /users/:id, POST /users.
//
//   node examples/sqlite/app.js      (see README.md for requests)
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import Fastify from 'fastify'
import blocking from 'fastify-blocking'
import { startIfMain } from '../shared/start.js'
import { createUser, getUser } from './handlers.js'

function createDatabase (file) {
  const db = new Database(file)
  db.pragma('journal_mode = WAL') // kept in the file: every connection opened later uses it
  db.exec('CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL UNIQUE)')
  const insert = db.prepare('INSERT INTO users (name, email) VALUES (?, ?)')
  insert.run('Ada Lovelace', 'ada@example.com')
  insert.run('Grace Hopper', 'grace@example.com')
  db.close()
}

const user = {
  type: 'object',
  properties: { id: { type: 'integer' }, name: { type: 'string' }, email: { type: 'string' } }
}

/** `file`: where to create the database (default: in a temporary directory removed on close). */
export async function build ({ file, ...options } = {}) {
  const app = Fastify(options)
  if (file === undefined) {
    const dir = mkdtempSync(join(tmpdir(), 'fastify-blocking-sqlite-'))
    file = join(dir, 'users.db')
    app.addHook('onClose', async () => rmSync(dir, { recursive: true, force: true }))
  }
  createDatabase(file)
  // The handler module opens the file in each worker thread. Threads copy
  // process.env when they start, which the plugin's registration begins.
  process.env.USERS_DB = file

  await app.register(blocking, { maxThreads: 2, minThreads: 2 })
  app.get('/users/:id', {
    blocking: true,
    schema: {
      params: { type: 'object', properties: { id: { type: 'integer', minimum: 1 } } },
      response: { 200: user }
    }
  }, getUser)
  app.post('/users', {
    blocking: true,
    schema: {
      body: {
        type: 'object',
        required: ['name', 'email'],
        properties: { name: { type: 'string', minLength: 1 }, email: { type: 'string', pattern: '^[^@\\s]+@[^@\\s]+$' } }
      },
      response: { 201: user }
    }
  }, createUser)
  return app
}

await startIfMain(import.meta.url, build)
