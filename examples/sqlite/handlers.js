// Blocking handlers over better-sqlite3, a synchronous driver: each query holds
// its thread until it is done, so it belongs on the pool.
//
// Worker threads import this module (and never app.js: importing the app here
// would build it in every thread, which fastify-blocking refuses at startup).
//
// Connections. Module state is per thread, so `statements` below is one
// connection per worker thread, opened the first time that thread serves a
// request (better-sqlite3 connections cannot move between threads anyway).
// Nothing here closes it, and nothing outside the thread can: the pool owns the
// threads. That is fine because:
// - the database is in WAL mode (set once by app.js, stored in the file): the
//   threads' connections read while one of them writes, and a connection that
//   goes away mid-transaction (a thread terminated after a task timeout) leaves
//   nothing half-written: SQLite rolls it back on the next open;
// - when a thread ends (app.close(), idleTimeout), better-sqlite3 closes the
//   connections that thread opened, as Node tears the thread down. The test
//   checks that no -wal file is left after app.close().
import Database from 'better-sqlite3'
import { defineHandler } from 'fastify-blocking'
import { httpError } from '../shared/http-error.js'

let statements

function db () {
  if (statements === undefined) {
    // USERS_DB: set by app.js before the pool starts its threads (they copy process.env).
    // A writer that finds the database locked retries for up to `timeout` ms.
    const conn = new Database(process.env.USERS_DB, { fileMustExist: true, timeout: 5000 })
    statements = {
      get: conn.prepare('SELECT id, name, email FROM users WHERE id = ?'),
      insert: conn.prepare('INSERT INTO users (name, email) VALUES (?, ?) RETURNING id, name, email')
    }
  }
  return statements
}

/** GET /users/:id */
export const getUser = defineHandler(import.meta.url, (request) => {
  const user = db().get.get(request.params.id)
  if (user === undefined) throw httpError(404, `no user ${request.params.id}`)
  return user
})

/** POST /users {name, email} */
export const createUser = defineHandler(import.meta.url, (request, reply) => {
  const { name, email } = request.body
  try {
    const user = db().insert.get(name, email)
    reply.code(201).header('location', `/users/${user.id}`)
    return user
  } catch (err) {
    if (err.code === 'SQLITE_CONSTRAINT_UNIQUE') throw httpError(409, `${email} already has an account`)
    throw err
  }
})
