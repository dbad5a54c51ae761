// The blocking handlers: scrypt takes ~50 ms of CPU and 16 MiB per call, time
// during which the event loop would serve nothing else.
//
// Every worker thread that runs these handlers imports this module. It must not
// import app.js: the worker would then load Fastify and build the app in every
// thread (fastify-blocking refuses to be registered in a worker, and startup
// fails with FST_BLOCKING_HANDLER_NOT_DEFINED). Dependencies go one way only:
// app.js -> handlers.js.
import { randomBytes, scryptSync, timingSafeEqual } from 'node:crypto'
import { defineHandler } from 'fastify-blocking'
import { httpError } from '../shared/http-error.js'

const SALT_BYTES = 16
const KEY_BYTES = 64
// Node's default cost. Verifying always uses it: a cost read from the client's
// hash would let anyone ask for minutes of CPU.
const COST = { N: 16384, r: 8, p: 1 }

/** POST /hash {password} -> {hash: 'scrypt$<salt>$<key>'} */
export const hash = defineHandler(import.meta.url, (request) => {
  const salt = randomBytes(SALT_BYTES)
  const key = scryptSync(request.body.password, salt, KEY_BYTES, COST)
  return { hash: `scrypt$${salt.toString('base64')}$${key.toString('base64')}` }
})

/** POST /verify {password, hash} -> {valid} */
export const verify = defineHandler(import.meta.url, (request) => {
  const [scheme, salt, key, ...rest] = request.body.hash.split('$')
  const expected = Buffer.from(key ?? '', 'base64')
  if (scheme !== 'scrypt' || rest.length > 0 || Buffer.from(salt ?? '', 'base64').length !== SALT_BYTES || expected.length !== KEY_BYTES) {
    throw httpError(400, 'hash is not one that POST /hash made')
  }
  const actual = scryptSync(request.body.password, Buffer.from(salt, 'base64'), KEY_BYTES, COST)
  return { valid: timingSafeEqual(actual, expected) }
})
