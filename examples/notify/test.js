import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import { test } from 'tap'
import { build } from './app.js'

const DONE = 'fastify-blocking: background task sendNotification done'

/** The app, its log lines, and the notifications sent so far. */
async function start (t) {
  const file = join(t.testdir(), 'notifications.log')
  const logs = []
  const stream = new Writable({ write (line, _, done) { logs.push(JSON.parse(line)); done() } })
  const app = await build({ notifyLog: file, logger: { level: 'debug', stream } })
  t.teardown(() => app.close())
  return {
    app,
    logs,
    notifications: () => existsSync(file) ? readFileSync(file, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [],
    /** The position of the log line `msg` of the request to `url`. */
    at: (msg, url) => {
      const { reqId } = logs.find((l) => l.req?.url === url)
      return logs.findIndex((l) => l.msg === msg && l.reqId === reqId)
    }
  }
}

async function until (predicate) {
  while (!predicate()) await sleep(10)
}

test('a notification follows each response, from a worker handler and from a main-thread one', async (t) => {
  const { app, logs, notifications, at } = await start(t)

  const signup = await app.inject({ method: 'POST', url: '/signup', payload: { email: 'ada@example.com' } })
  t.equal(signup.statusCode, 201)
  const ship = await app.inject({ method: 'POST', url: '/orders/42/ship', payload: { email: 'ada@example.com' } })
  t.same(ship.json(), { shipped: '42' })

  await until(() => notifications().length === 2 && logs.filter((l) => l.msg === DONE).length === 2)
  t.match(notifications().sort((a, b) => a.subject.localeCompare(b.subject)), [
    { to: 'ada@example.com', subject: 'Order 42 has shipped', msg: 'notification sent', reqId: logs[at('request completed', '/orders/42/ship')].reqId },
    { to: 'ada@example.com', subject: 'Welcome!', reqId: logs[at('request completed', '/signup')].reqId }
  ])
  for (const url of ['/signup', '/orders/42/ship']) {
    t.ok(at('request completed', url) < at(DONE, url), `${url}: the task ended after the response`)
  }
})

test('a bad address gets 400 and no notification; a failed delivery is logged, the response stands', async (t) => {
  const { app, logs, notifications, at } = await start(t)

  const bad = await app.inject({ method: 'POST', url: '/signup', payload: { email: 'not an address' } })
  t.equal(bad.statusCode, 400)

  const bounced = await app.inject({ method: 'POST', url: '/orders/7/ship', payload: { email: 'bob@example.invalid' } })
  t.equal(bounced.statusCode, 200)
  const failed = 'fastify-blocking: background task sendNotification failed'
  await until(() => at(failed, '/orders/7/ship') >= 0)
  t.match(logs[at(failed, '/orders/7/ship')], { level: 50, task: 'sendNotification', err: { message: 'cannot deliver to bob@example.invalid' } })
  t.same(notifications(), [])
})
