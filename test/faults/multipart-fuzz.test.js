// Fuzzing the multipart path. Valid bodies are generated, then mutated (bit
// flips, deleted and duplicated ranges, inserted tokens, CRLFs removed,
// truncated), or replaced by odd cases: huge part headers, thousands of header
// lines, odd, empty, very long or missing boundaries, thousands of tiny parts,
// unterminated part headers, bodies cut by the client, chunked bodies. They go
// over raw sockets to a real server, to blocking routes (parsed in the worker)
// and to async routes that call request.readMultipart(), with the default
// limits, tight ones and wide ones.
//
// Every response must be 2xx (a mutation may leave the body valid), 400 or
// 413, or the connection closed; never a 5xx, never a hang (each exchange has
// a deadline), never a crash. A body that was not mutated must parse to what
// was sent. Afterwards the app answers, its stats settle, no temporary file is
// left, and once closed it leaves nothing behind.
//
// The same again, fewer cases, beside a process that keeps a core busy (as
// issue 17 was found: a hang that depends on how socket reads fall).
//
// Replay: FUZZ_SEED=<seed from the test name> (and FUZZ_ONLY=<case> for one
// case); run longer: FUZZ_ITERATIONS=<cases per pool> (default 4000, about 10 s a pool),
// FUZZ_BUSY_ITERATIONS=<cases per pool beside the busy process> (default 200).
import tap, { test } from 'tap'
import { spawn } from 'node:child_process'
import { connect } from 'node:net'
import { pools } from '../helpers.js'
import { parsed, summarize } from '../fixtures/fuzz.js'
import { checkAlive, checkClosed, sandboxTmp, startApp } from './leaks.js'

const tmp = sandboxTmp(tap)

const SEED = process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) >>> 0 : (Math.random() * 2 ** 32) >>> 0
const ITERATIONS = Number(process.env.FUZZ_ITERATIONS ?? 4000)
const ONLY = process.env.FUZZ_ONLY !== undefined ? Number(process.env.FUZZ_ONLY) : undefined
const CONCURRENCY = 3
const DEADLINE = 15_000
const SPOOL_THRESHOLD = 512
/** The app's limits, given explicitly (the plugin's defaults, as of writing) so that valid bodies can be checked. */
const APP_LIMITS = { fileSize: 1_048_576, files: 10, fields: 100, fieldSize: 65_536, parts: 1000, headerPairs: 2000 }
/** Tight limits, and wide ones for thousands of tiny parts. */
const TIGHT = { fields: 5, files: 3, fileSize: 2000, parts: 8, fieldSize: 100, headerPairs: 4 }
const WIDE = { files: 5000, fields: 5000, parts: 10_000 }
/** Each route and the limits it parses with. */
const ROUTES = {
  '/blocking': APP_LIMITS,
  '/read': APP_LIMITS,
  '/limited': { ...APP_LIMITS, ...TIGHT },
  '/read-limited': { ...APP_LIMITS, ...TIGHT },
  '/wide': { ...APP_LIMITS, ...WIDE }
}

// ---------------------------------------------------------------------------
// A seeded PRNG (mulberry32); each case has its own stream, so one case can be
// replayed alone.

function mulberry32 (seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) | 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function rng (seed, index) {
  const next = mulberry32(seed ^ Math.imul(index + 1, 0x9E3779B1))
  const r = {
    float: next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    chance: (p) => next() < p,
    pick: (list) => list[Math.floor(next() * list.length)],
    bytes (n) {
      const out = Buffer.alloc(n)
      for (let i = 0; i < n; i++) out[i] = Math.floor(next() * 256)
      return out
    },
    text (n, alphabet) {
      let out = ''
      for (let i = 0; i < n; i++) out += alphabet[Math.floor(next() * alphabet.length)]
      return out
    }
  }
  return r
}

// ---------------------------------------------------------------------------
// Valid bodies.

const BCHARS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=?"
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
const NAME_CHARS = 'abcdefghijklmnopqrstuvwxyz_-0123456789éü日本'
const TEXT = 'abcdefghijklmnopqrstuvwxyz ABCDEFGHIJ0123456789.,;:!?-_=+*&%$#@()[]{}<>/\\\'"'

function boundaryOf (r, length = r.int(1, 70)) {
  let b = r.text(length, BCHARS + ' ')
  if (b.endsWith(' ')) b = b.slice(0, -1) + 'x'
  return b
}

/** The content-type for a boundary: quoted when it must be, and sometimes when it need not be. */
function contentTypeOf (r, boundary) {
  const quoted = !TOKEN.test(boundary) || r.chance(0.2)
  return `multipart/form-data; boundary=${quoted ? `"${boundary}"` : boundary}`
}

/**
 * A valid body and what parsing it must give: `parts` are
 * `{ field: true, name, value }` or `{ name, filename, data }`.
 */
function validBody (r, boundary, { parts = r.int(0, 8), tiny = false } = {}) {
  const specs = []
  for (let i = 0; i < parts; i++) {
    const name = r.chance(0.05) ? '__proto__' : r.text(r.int(1, 12), NAME_CHARS)
    if (r.chance(0.5)) {
      specs.push({ field: true, name, value: tiny ? 'x' : r.text(r.int(0, r.chance(0.1) ? 200 : 60), TEXT) })
    } else {
      let data
      const size = tiny ? r.int(0, 2) : r.chance(0.3) ? r.int(SPOOL_THRESHOLD, 3000) : r.int(0, 400)
      do data = r.bytes(size)
      while (data.includes(`\r\n--${boundary}`) || data.includes(`--${boundary}`))
      specs.push({ name, filename: r.text(r.int(1, 16), NAME_CHARS) + r.pick(['.bin', '.txt', '', '.tar.gz']), data })
    }
  }
  const chunks = []
  if (r.chance(0.2)) chunks.push(Buffer.from(`preamble ${r.text(r.int(0, 40), 'abc ')}\r\n`))
  for (const spec of specs) {
    let head = `--${boundary}\r\n`
    if (spec.field) {
      head += `Content-Disposition: form-data; name="${spec.name}"\r\n`
      if (r.chance(0.3)) head += 'Content-Type: text/plain; charset=utf-8\r\n'
    } else {
      head += `Content-Disposition: form-data; name="${spec.name}"; filename="${spec.filename}"\r\n`
      head += `Content-Type: ${r.pick(['application/octet-stream', 'image/png', 'text/plain', 'application/x-weird'])}\r\n`
      if (r.chance(0.2)) head += 'Content-Transfer-Encoding: binary\r\n'
    }
    chunks.push(Buffer.from(head + '\r\n'))
    chunks.push(spec.field ? Buffer.from(spec.value) : spec.data)
    chunks.push(Buffer.from('\r\n'))
  }
  chunks.push(Buffer.from(`--${boundary}--`))
  if (r.chance(0.5)) chunks.push(Buffer.from('\r\n'))
  if (r.chance(0.1)) chunks.push(Buffer.from(`epilogue ${r.text(r.int(0, 40), 'xyz ')}`))
  return { body: Buffer.concat(chunks), specs }
}

/** What a route must answer for a valid body: its summary, or 413 where one of its limits is passed. */
function expected (specs, route) {
  const fields = specs.filter((s) => s.field)
  const files = specs.filter((s) => !s.field)
  const limits = ROUTES[route]
  const over = specs.length > limits.parts || fields.length > limits.fields || files.length > limits.files ||
    files.some((f) => f.data.length > limits.fileSize) || fields.some((f) => Buffer.byteLength(f.value) > limits.fieldSize)
  if (over) return { status: 413 }
  return {
    status: 200,
    summary: { values: fields.length, files: files.map((f) => f.data.length), spooled: files.filter((f) => f.data.length > SPOOL_THRESHOLD).length }
  }
}

// ---------------------------------------------------------------------------
// Mutations.

function indexesOf (buffer, needle) {
  const out = []
  let i = -1
  while ((i = buffer.indexOf(needle, i + 1)) !== -1) out.push(i)
  return out
}

const MUTATIONS = {
  flip (r, b) {
    const out = Buffer.from(b)
    for (let k = r.int(1, 8); k > 0 && out.length > 0; k--) out[r.int(0, out.length - 1)] ^= 1 << r.int(0, 7)
    return out
  },
  delete (r, b) {
    if (b.length === 0) return b
    const at = r.int(0, b.length - 1)
    return Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + r.int(1, 64)))])
  },
  duplicate (r, b) {
    if (b.length === 0) return b
    const at = r.int(0, b.length - 1)
    const range = b.subarray(at, Math.min(b.length, at + r.int(1, 200)))
    const times = r.chance(0.1) ? r.int(2, 50) : 1
    return Buffer.concat([b.subarray(0, at), ...Array(times + 1).fill(range), b.subarray(at + range.length)])
  },
  insert (r, b, boundary) {
    const at = r.int(0, b.length)
    const token = r.pick(['\r\n', '\r\n\r\n', '--', `--${boundary}`, `\r\n--${boundary}\r\n`, `--${boundary}--`, '"', ';', '\r', '\n', '\0', 'Content-Disposition: form-data; name="x"\r\n'])
    const what = r.chance(0.3) ? r.bytes(r.int(1, 32)) : Buffer.from(token)
    return Buffer.concat([b.subarray(0, at), what, b.subarray(at)])
  },
  crlf (r, b) {
    const s = b.toString('latin1')
    switch (r.int(0, 3)) {
      case 0: return Buffer.from(s.replaceAll('\r\n', '\n'), 'latin1')
      case 1: return Buffer.from(s.replaceAll('\r', ''), 'latin1')
      default: {
        const all = indexesOf(b, '\r\n')
        if (all.length === 0) return b
        const at = r.pick(all)
        return Buffer.concat([b.subarray(0, at), b.subarray(at + r.int(1, 2))])
      }
    }
  },
  truncate (r, b) {
    return b.subarray(0, r.int(0, Math.max(0, b.length - 1)))
  },
  boundary (r, b, boundary) {
    const all = indexesOf(b, boundary)
    if (all.length === 0) return b
    const at = r.pick(all)
    const replacement = r.chance(0.5) ? boundary.slice(0, r.int(0, boundary.length - 1)) : boundary + r.text(r.int(1, 4), BCHARS)
    return Buffer.concat([b.subarray(0, at), Buffer.from(replacement), b.subarray(at + boundary.length)])
  }
}

// ---------------------------------------------------------------------------
// Cases: { kind, route, contentType, body, framing ('length' | 'chunked' | 'cut'), cutAt?, expect? }

function part (boundary, headers, data) {
  return Buffer.concat([Buffer.from(`--${boundary}\r\n${headers.join('\r\n')}\r\n\r\n`), Buffer.from(data), Buffer.from('\r\n')])
}

const KINDS = {
  clean (r, c) {
    const boundary = boundaryOf(r)
    const { body, specs } = validBody(r, boundary)
    return { ...c, contentType: contentTypeOf(r, boundary), body, expect: expected(specs, c.route) }
  },
  mutated (r, c) {
    const boundary = boundaryOf(r)
    let { body } = validBody(r, boundary)
    const names = []
    for (let k = r.int(1, 3); k > 0; k--) {
      const name = r.pick(Object.keys(MUTATIONS))
      names.push(name)
      body = MUTATIONS[name](r, body, boundary)
    }
    return { ...c, kind: `mutated(${names.join(',')})`, contentType: contentTypeOf(r, boundary), body }
  },
  truncated (r, c) {
    const boundary = boundaryOf(r)
    const { body } = validBody(r, boundary, { parts: r.int(1, 6) })
    return { ...c, contentType: contentTypeOf(r, boundary), body: MUTATIONS.truncate(r, body) }
  },
  hugeHeader (r, c) {
    const boundary = boundaryOf(r)
    const size = r.pick([20_000, 81_920, 100_000, 200_000])
    const huge = r.text(size, 'abcdefgh')
    const headers = r.pick([
      [`Content-Disposition: form-data; name="${huge}"`],
      [`Content-Disposition: form-data; name="f"; filename="${huge}"`],
      ['Content-Disposition: form-data; name="f"', `X-Huge: ${huge}`],
      [`X-${huge}: value`, 'Content-Disposition: form-data; name="f"'],
      [`Content-Disposition: form-data; name="f"; ${huge}`]
    ])
    const body = Buffer.concat([part(boundary, headers, 'value'), Buffer.from(`--${boundary}--\r\n`)])
    return { ...c, contentType: contentTypeOf(r, boundary), body }
  },
  manyHeaders (r, c) {
    const boundary = boundaryOf(r)
    const headers = ['Content-Disposition: form-data; name="f"; filename="a.txt"']
    for (let i = r.int(100, 3000); i > 0; i--) headers.push(`X-H${i}: ${r.text(r.int(0, 10), 'abc')}`)
    if (r.chance(0.5)) headers.reverse()
    const body = Buffer.concat([part(boundary, headers, 'file data'), Buffer.from(`--${boundary}--\r\n`)])
    return { ...c, contentType: contentTypeOf(r, boundary), body }
  },
  oddBoundary (r, c) {
    const boundary = boundaryOf(r)
    const long = boundaryOf(r, r.int(71, 4000))
    const variant = r.int(0, 11)
    let contentType = contentTypeOf(r, boundary)
    let inBody = boundary
    switch (variant) {
      case 0: contentType = 'multipart/form-data'; break
      case 1: contentType = 'multipart/form-data; boundary='; inBody = ''; break
      case 2: contentType = 'multipart/form-data; boundary=""'; inBody = ''; break
      case 3: contentType = `multipart/form-data; boundary="${long}"`; inBody = long; break
      case 4: contentType = 'multipart/form-data; boundary="a\\"b"'; inBody = 'a"b'; break
      case 5: contentType = `multipart/form-data; boundary=${boundary}x; boundary=${boundary}`.replace(/=([^;]*[^!#$%&'*+.^_`|~0-9A-Za-z-][^;]*)/g, '="$1"'); break
      case 6: contentType = 'multipart/form-data;boundary'; break
      case 7: contentType = `MULTIPART/FORM-DATA; BOUNDARY="${boundary}"`; break
      case 8: contentType = `multipart/form-data; charset=utf-8; boundary="${boundary}"  \t`; break
      case 9: contentType = contentTypeOf(r, boundaryOf(r)); break // not the body's boundary
      case 10: contentType = `multipart/form-data; boundary="${boundary}"; boundary`; break
      default: contentType = `multipart/form-data; boundary="${boundary}`; break // unterminated quote
    }
    const { body } = validBody(r, inBody, { parts: r.int(0, 4) })
    return { ...c, kind: `oddBoundary(${variant})`, contentType, body }
  },
  tinyParts (r, c) {
    const boundary = boundaryOf(r, r.int(1, 8))
    const { body, specs } = validBody(r, boundary, { parts: r.int(1000, 4000), tiny: true })
    // Half of them where the limits let them all through.
    const route = r.chance(0.5) ? '/wide' : c.route
    return { ...c, route, contentType: contentTypeOf(r, boundary), body, expect: expected(specs, route) }
  },
  unterminated (r, c) {
    const boundary = boundaryOf(r)
    const { body: before } = validBody(r, boundary, { parts: r.int(0, 3) })
    const prefix = before.subarray(0, before.lastIndexOf(`--${boundary}--`))
    const head = `--${boundary}\r\nContent-Disposition: form-data; name="u"; filename="u.bin"`
    const endings = ['', '\r\n', `\r\n--${boundary}--\r\n`, `\r\nX-More: 1\r\n--${boundary}--`, '\r\n\r', '\n\n']
    const variant = r.int(0, endings.length - 1)
    return { ...c, kind: `unterminated(${variant})`, contentType: contentTypeOf(r, boundary), body: Buffer.concat([prefix, Buffer.from(head + endings[variant])]) }
  },
  empty (r, c) {
    const boundary = boundaryOf(r)
    const body = r.pick(['', `--${boundary}--`, `--${boundary}--\r\n`, 'just a preamble', `--${boundary}\r\n`, '\r\n', `--${boundary}`])
    return { ...c, contentType: contentTypeOf(r, boundary), body: Buffer.from(body) }
  },
  clientCut (r, c) {
    const boundary = boundaryOf(r)
    const { body } = validBody(r, boundary, { parts: r.int(1, 6) })
    return { ...c, contentType: contentTypeOf(r, boundary), body, framing: 'cut', cutAt: r.int(0, Math.max(0, body.length - 1)) }
  },
  skippedPart (r, c) {
    // Issue 17: a few bytes of a part's headers damaged so that busboy would
    // skip the part, its data large enough (often) that a read holds 16 KiB of
    // it with the closing delimiter: busboy never finished. The answer must be
    // 400 (or the connection closed), never a 200 without the part, nor a hang.
    const boundary = boundaryOf(r)
    const cd = 'Content-Disposition: form-data; name="file"; filename="f.bin"'
    const damaged = r.pick([
      cd.replace('form-data', 'form-d\0ta'),
      cd.replace('Content-Disposition', 'Content\0Disposition'),
      cd.replace('form-data', 'attachment'),
      'Content-Type: application/octet-stream',
      cd.replace(': ', ' '),
      `\r${cd}`
    ])
    const size = r.chance(0.03) ? 2 * 1_048_576 : r.chance(0.5) ? r.int(16_384, 100_000) : r.int(0, 20_000)
    // One byte repeated (no CR, so no delimiter inside): what matters is how much of it a read holds.
    const data = Buffer.alloc(size, r.pick(['z', '\0', '\xff', '-']), 'latin1')
    const delimiter = damaged.startsWith('\r') ? `--${boundary}` : `--${boundary}\r\n`
    const body = Buffer.concat([
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="a"\r\n\r\nb\r\n--${boundary}\r\nContent-Disposition: form-data; name="__proto__"\r\n\r\nx\r\n`),
      Buffer.from(`${delimiter}${damaged}\r\nContent-Type: application/octet-stream\r\n\r\n`),
      data,
      Buffer.from(`\r\n--${boundary}--\r\n`)
    ])
    return { ...c, contentType: contentTypeOf(r, boundary), body, malformed: true }
  },
  chunked (r, c) {
    const boundary = boundaryOf(r)
    const { body, specs } = validBody(r, boundary)
    return { ...c, contentType: contentTypeOf(r, boundary), body, framing: 'chunked', expect: expected(specs, c.route) }
  }
}

const WEIGHTS = [
  ['clean', 12], ['mutated', 36], ['truncated', 8], ['hugeHeader', 4], ['manyHeaders', 4], ['oddBoundary', 10],
  ['tinyParts', 3], ['unterminated', 7], ['empty', 4], ['clientCut', 6], ['chunked', 6], ['skippedPart', 3]
]
const TOTAL_WEIGHT = WEIGHTS.reduce((sum, [, w]) => sum + w, 0)

function caseOf (seed, index) {
  const r = rng(seed, index)
  let roll = r.float() * TOTAL_WEIGHT
  let kind = WEIGHTS[0][0]
  for (const [name, weight] of WEIGHTS) {
    if ((roll -= weight) < 0) {
      kind = name
      break
    }
  }
  const made = KINDS[kind](r, { kind, route: r.pick(Object.keys(ROUTES)), framing: 'length' })
  // How the bytes are written: whole, or in slices that land in separate reads.
  made.slices = r.chance(0.5) ? [made.body.length] : Array.from({ length: r.int(2, 12) }, () => r.int(1, 4096))
  made.index = index
  return made
}

// ---------------------------------------------------------------------------
// One exchange over a raw socket.

function sliced (body, sizes) {
  const out = []
  let at = 0
  for (let i = 0; at < body.length; i++) {
    const size = i < sizes.length ? sizes[i] : body.length
    out.push(body.subarray(at, at + size))
    at += size
  }
  return out
}

/** Resolves with `{ status, head, payload }` (`status` undefined when the connection closed without an answer); rejects on a hang. */
function exchange (port, c) {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    socket.setNoDelay(true)
    const received = []
    let settled = false
    const finish = (failure) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.destroy()
      if (failure !== undefined) return reject(failure)
      const text = Buffer.concat(received).toString('latin1')
      const match = /^HTTP\/1\.[01] (\d{3})/.exec(text)
      const split = text.indexOf('\r\n\r\n')
      resolve({
        status: match ? Number(match[1]) : undefined,
        head: split === -1 ? text.slice(0, 300) : text.slice(0, split),
        payload: split === -1 ? '' : Buffer.from(text.slice(split + 4), 'latin1').toString()
      })
    }
    const timer = setTimeout(() => finish(new Error(`no answer within ${DEADLINE} ms`)), DEADLINE)
    socket.on('data', (chunk) => received.push(chunk))
    socket.on('end', () => finish())
    socket.on('close', () => finish())
    socket.on('error', () => {}) // EPIPE/ECONNRESET when the server answers before the body is sent: 'close' follows
    const chunked = c.framing === 'chunked'
    const head = `POST ${c.route} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: ${c.contentType}\r\n` +
      (chunked ? 'Transfer-Encoding: chunked\r\n' : `Content-Length: ${c.body.length}\r\n`) +
      'Connection: close\r\n\r\n'
    const body = c.framing === 'cut' ? c.body.subarray(0, c.cutAt) : c.body
    ;(async () => {
      socket.write(head)
      for (const slice of sliced(body, c.slices)) {
        if (socket.destroyed) return
        const frame = chunked ? Buffer.concat([Buffer.from(`${slice.length.toString(16)}\r\n`), slice, Buffer.from('\r\n')]) : slice
        if (!socket.write(frame)) await new Promise((resolve) => { socket.once('drain', resolve); socket.once('close', resolve) })
        // Let the slice go out on its own: the parser sees it in a read of its own.
        await new Promise((resolve) => setImmediate(resolve))
      }
      if (socket.destroyed) return
      if (chunked) socket.write('0\r\n\r\n')
      // A client that cuts its body short stops sending; the server sees the end of the stream.
      if (c.framing === 'cut') socket.end()
    })()
  })
}

function verdict (c, res) {
  if (c.malformed) return res.status === undefined || res.status === 400 ? undefined : `a malformed body got ${res.status}, not 400`
  if (res.status === undefined) {
    return c.expect !== undefined ? 'a valid body got no answer (the connection closed)' : undefined
  }
  if (c.expect !== undefined) {
    if (res.status !== c.expect.status) return `a valid body got ${res.status}, not ${c.expect.status}`
    if (c.expect.summary !== undefined) {
      let got
      try {
        got = JSON.parse(res.payload)
      } catch {
        return `a valid body got an unreadable answer: ${res.payload.slice(0, 200)}`
      }
      const want = c.expect.summary
      if (JSON.stringify(got) !== JSON.stringify(want)) return `a valid body was parsed as ${JSON.stringify(got).slice(0, 300)}, not ${JSON.stringify(want).slice(0, 300)}`
    }
    return undefined
  }
  if ((res.status >= 200 && res.status < 300) || res.status === 400 || res.status === 413) return undefined
  return `answered ${res.status}`
}

function describeCase (c) {
  const preview = JSON.stringify(c.body.subarray(0, 300).toString('latin1'))
  return `case ${c.index} (${c.kind}, ${c.route}, ${c.framing}${c.framing === 'cut' ? ` at ${c.cutAt}` : ''}, ` +
    `content-type ${JSON.stringify(c.contentType.slice(0, 120))}, ${c.body.length} bytes): ${preview}`
}

/** Runs the cases `indexes` of SEED against a fresh app on `pool`, then checks it answers and leaves nothing behind. */
async function fuzz (t, pool, indexes) {
  // minThreads 2: every thread runs before the first case. (While piscina
  // starts a thread it holds tasks back; an upload whose client leaves in
  // that window is logged as a 500 that nobody receives: a known problem of
  // the blocking route's cleanup, not of the parser.)
  const options = { maxThreads: 2, minThreads: 2, multipart: { limits: APP_LIMITS, spoolThreshold: SPOOL_THRESHOLD } }
  const { app, since, port } = await startApp(t, pool, options, (app) => {
    app.post('/blocking', { blocking: true }, parsed)
    app.post('/limited', { blocking: { multipart: { limits: TIGHT } } }, parsed)
    app.post('/wide', { blocking: { multipart: { limits: WIDE } } }, parsed)
    app.post('/read', async (request) => {
      const { fields, files } = await request.readMultipart()
      return summarize(fields, files)
    })
    app.post('/read-limited', async (request) => {
      const { fields, files } = await request.readMultipart({ limits: TIGHT })
      return summarize(fields, files)
    })
  })
  const failures = []
  const tally = {}
  let next = 0
  const runner = async () => {
    while (next < indexes.length) {
      const c = caseOf(SEED, indexes[next++])
      let res
      try {
        res = await exchange(port, c)
      } catch (err) {
        failures.push(`${describeCase(c)}: ${err.message}`)
        continue
      }
      const kind = c.kind.replace(/\(.*/, '')
      const key = `${kind} ${res.status ?? 'closed'}`
      tally[key] = (tally[key] ?? 0) + 1
      const problem = verdict(c, res)
      if (problem !== undefined) failures.push(`${describeCase(c)}: ${problem}; answer: ${res.head.split('\r\n')[0]} ${res.payload.slice(0, 300)}`)
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, runner))
  t.comment(Object.entries(tally).sort().map(([k, n]) => `${k}: ${n}`).join(', '))
  t.same(failures.slice(0, 10), [], `every case answered 2xx, 400 or 413 or closed, and valid bodies parsed right (${failures.length} failures)`)
  // Also what no client saw (it had gone): nothing may have been answered with a 5xx.
  const errors = app.logs.filter((l) => l.level >= 50 && l.res?.statusCode >= 500)
  t.same(errors.map((l) => l.msg), [], 'no 5xx was logged', {
    requests: errors.map((e) => app.logs.filter((l) => l.reqId === e.reqId).map((l) => `${l.req?.method ?? ''} ${l.req?.url ?? ''} ${l.msg}`))
  })
  await checkAlive(t, app, { maxThreads: 2, tmp })
  await checkClosed(t, app, since, { tmp })
}

const INDEXES = ONLY !== undefined ? [ONLY] : Array.from({ length: ITERATIONS }, (_, i) => i)
for (const pool of pools) {
  const name = `${pool}: multipart fuzz, seed ${SEED} (FUZZ_SEED=${SEED}), ${ONLY !== undefined ? `case ${ONLY}` : `${ITERATIONS} cases`}`
  test(name, { timeout: Math.max(60_000, ITERATIONS * 50) }, (t) => fuzz(t, pool, INDEXES))
}

// Beside a process that keeps a core busy (issue 17 hung about 1 upload in 20
// so, 1 in 1500 without): socket reads and worker turns fall differently.
// Other cases of the same seed (after the ones above); the neighbour is
// started and stopped here, and killed by its own timeout if this process dies.
const BUSY_ITERATIONS = Number(process.env.FUZZ_BUSY_ITERATIONS ?? 200)
for (const pool of BUSY_ITERATIONS > 0 ? pools : []) {
  const from = ONLY ?? ITERATIONS
  const indexes = ONLY !== undefined ? [ONLY] : Array.from({ length: BUSY_ITERATIONS }, (_, i) => from + i)
  const name = `${pool}: multipart fuzz beside a CPU-busy process, seed ${SEED} (FUZZ_SEED=${SEED}), ${ONLY !== undefined ? `case ${ONLY}` : `cases ${from} to ${from + BUSY_ITERATIONS - 1}`}`
  test(name, { timeout: Math.max(60_000, BUSY_ITERATIONS * 100) }, async (t) => {
    // SIGKILL: a loop that never yields runs no signal handler (tap's process
    // hooks, which NODE_OPTIONS would load into it, install some).
    const neighbour = spawn(process.execPath, ['-e', 'for (;;);'], {
      stdio: 'ignore',
      env: { ...process.env, NODE_OPTIONS: '' },
      timeout: Math.max(60_000, BUSY_ITERATIONS * 100),
      killSignal: 'SIGKILL'
    })
    const exited = new Promise((resolve) => neighbour.once('exit', resolve))
    await new Promise((resolve, reject) => { neighbour.once('spawn', resolve); neighbour.once('error', reject) })
    t.teardown(async () => {
      neighbour.kill('SIGKILL')
      await exited
    })
    await fuzz(t, pool, indexes)
  })
}
