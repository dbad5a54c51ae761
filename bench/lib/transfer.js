// Clients that move bytes, in the calling process, each bounded in time:
// download() reads a response as fast as it can or at a set pace, upload()
// sends a multipart/form-data body with one file, flat out or at a set pace.
// Rates are in bytes per second.
import { randomBytes } from 'node:crypto'
import http from 'node:http'
import { performance } from 'node:perf_hooks'

const CHUNK = 64 * 1024
/** The file's bytes: one random 64 KiB block, sent again and again. */
const block = randomBytes(CHUNK)
const boundary = `----fastify-blocking-bench-${randomBytes(12).toString('hex')}`

/** Settles once, with what was measured so far and the seconds since `started`. */
function settler (resolve, started, extra) {
  let settled = false
  return (result) => {
    if (settled) return
    settled = true
    resolve({ ...result, ...extra(), seconds: (performance.now() - started) / 1000 })
  }
}

/**
 * GET `path` and read the body, at `rate` at most (paused in between) or as
 * fast as it comes. After `seconds` the request is aborted: `complete` says
 * whether the body had ended by then.
 */
export function download ({ port, path, rate, seconds }) {
  return new Promise((resolve) => {
    const started = performance.now()
    let bytes = 0
    let status
    const done = settler(resolve, started, () => ({ bytes, status }))
    const req = http.get({ host: '127.0.0.1', port, path }, (res) => {
      status = res.statusCode
      res.on('data', (chunk) => {
        bytes += chunk.length
        if (rate === undefined) return
        const ahead = bytes - rate * (performance.now() - started) / 1000
        if (ahead > 0) {
          res.pause()
          setTimeout(() => res.resume(), ahead / rate * 1000)
        }
      })
      res.on('end', () => done({ complete: true }))
      res.on('error', (err) => done({ complete: false, error: err.message }))
    })
    const timer = setTimeout(() => {
      done({ complete: false })
      req.destroy()
    }, seconds * 1000)
    req.on('error', (err) => done({ complete: false, error: err.message }))
    req.on('close', () => clearTimeout(timer))
  })
}

/**
 * POST a multipart/form-data body with one file of `size` bytes to `path`,
 * written in 64 KiB chunks: at `rate` (on a timer) or as fast as the server
 * takes them. Aborted after `seconds`. Resolves to { status, body, sent,
 * seconds } or { error, ... }.
 */
export function upload ({ port, path = '/upload', size, rate, seconds }) {
  const head = Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="upload.bin"\r\n` +
    'Content-Type: application/octet-stream\r\n\r\n')
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`)
  return new Promise((resolve) => {
    const started = performance.now()
    let sent = 0
    let body = ''
    const done = settler(resolve, started, () => ({ sent }))
    const req = http.request({
      host: '127.0.0.1',
      port,
      path,
      method: 'POST',
      headers: {
        'content-type': `multipart/form-data; boundary=${boundary}`,
        'content-length': head.length + size + tail.length
      }
    })
    const timer = setTimeout(() => req.destroy(new Error(`not answered within ${seconds} s`)), seconds * 1000)
    req.on('response', (res) => {
      res.setEncoding('utf8')
      res.on('data', (text) => { body += text })
      res.on('end', () => done({ status: res.statusCode, body }))
    })
    req.on('error', (err) => done({ error: err.message }))
    req.on('close', () => {
      clearTimeout(timer)
      done({ error: 'the connection closed before the response' })
    })
    req.write(head)
    const pump = () => {
      while (sent < size) {
        const n = Math.min(CHUNK, size - sent)
        if (rate !== undefined) {
          const wait = (sent + n - rate * (performance.now() - started) / 1000) / rate * 1000
          if (wait > 0) {
            setTimeout(pump, wait)
            return
          }
        }
        sent += n
        if (!req.write(n === CHUNK ? block : block.subarray(0, n))) {
          req.once('drain', pump)
          return
        }
      }
      req.end(tail)
    }
    pump()
  })
}

/** Calls `once()` again and again until `seconds` have passed (at least once); resolves to its results and the seconds taken. */
export async function repeatFor (seconds, once) {
  const started = performance.now()
  const results = []
  do results.push(await once())
  while (performance.now() - started < seconds * 1000)
  return { results, seconds: (performance.now() - started) / 1000 }
}
