// Multipart bodies from the test suites of other parsers, where @fastify/busboy
// alone drops, truncates or misnames a part without a word: each must answer
// 400 FST_BLOCKING_MULTIPART_INVALID or 413 FST_BLOCKING_MULTIPART_LIMIT, on a
// blocking route and with readMultipart(). The peers' bodies are used as they
// wrote them and cited by the test's name; a few valid ones of theirs prove
// that the checks refuse nothing a browser sends.
import tap, { test } from 'tap'
import { pools } from '../helpers.js'
import { parsed, summarize } from '../fixtures/fuzz.js'
import { checkAlive, checkClosed, sandboxTmp, send, startApp } from './leaks.js'

const tmp = sandboxTmp(tap)

/** python-multipart's tests/test_data/http/*.http bodies use this boundary. */
const PM = '----WebKitFormBoundaryTkr3kCBQlBe1nrhc'
const pythonMultipart = (head) => `--${PM}\r\n${head}\r\n\r\nThis is a test.\r\n--${PM}--`

/** A one-part body (boundary `B`) with these header lines. */
const onePart = (lines, value = 'v') => `--B\r\n${lines.join('\r\n')}\r\n\r\n${value}\r\n--B--\r\n`

const INVALID = { status: 400, code: 'FST_BLOCKING_MULTIPART_INVALID' }
const LIMIT = { status: 413, code: 'FST_BLOCKING_MULTIPART_LIMIT' }

/** [peer test, boundary, body, expected answer, limits for readMultipart() and the route] */
const CASES = [
  // A part without a name (RFC 7578 §4.2): the peers answer 400; busboy called it "undefined".
  ['starlette test_formparsers.py test_missing_name_parameter_on_content_disposition', 'a7f7ac8d4e2e437c877bb7b8d7cc549c',
    '--a7f7ac8d4e2e437c877bb7b8d7cc549c\r\nContent-Disposition: form-data; ="field0"\r\n\r\nvalue0\r\n', { ...INVALID, message: /no name/ }],
  ['starlette test_missing_name_parameter_on_content_disposition, with its closing delimiter', 'a7f7ac8d4e2e437c877bb7b8d7cc549c',
    '--a7f7ac8d4e2e437c877bb7b8d7cc549c\r\nContent-Disposition: form-data; ="field0"\r\n\r\nvalue0\r\n--a7f7ac8d4e2e437c877bb7b8d7cc549c--\r\n', { ...INVALID, message: /no name/ }],
  ['a Content-Disposition of `form-data;` (no parameter at all), as a file', 'B',
    onePart(['Content-Disposition: form-data;', 'Content-Type: application/octet-stream']), { ...INVALID, message: /no name/ }],

  // headerPairs: busboy stopped reading header lines past it, and skipped the part when
  // its Content-Disposition came after them. The lines are @fastify/busboy's
  // test/dicer-headerparser.test.js 'should enforce maxHeaderPairs of 1'.
  ['@fastify/busboy dicer-headerparser.test.js "should enforce maxHeaderPairs of 1", Content-Disposition first', 'B',
    onePart(['Content-Disposition: form-data; name="f"', 'Content-Type:\t  text/plain', 'Content-Length:0']), { ...LIMIT, message: /headerPairs \(2\)/ }, { headerPairs: 2 }],
  ['the same lines with Content-Disposition past the limit (busboy dropped the part with a 200)', 'B',
    onePart(['Content-Type:\t  text/plain', 'Content-Length:0', 'Content-Disposition: form-data; name="f"']), { ...LIMIT, message: /headerPairs \(2\)/ }, { headerPairs: 2 }],
  ['the same lines at exactly headerPairs', 'B',
    onePart(['Content-Type:\t  text/plain', 'Content-Length:0', 'Content-Disposition: form-data; name="f"']), { status: 200, summary: { values: 1, files: [], spooled: 0 } }, { headerPairs: 3 }],

  // A header block over busboy's 80 KiB: it kept the first 80 KiB (a filename cut short, the
  // other headers gone). @fastify/busboy dicer-headerparser.test.js 'Max header size (single chunk)'
  // uses 128 KiB of 'A'; the issue's case is a 96 KiB filename.
  ['@fastify/busboy dicer-headerparser.test.js "Max header size (single chunk)" (128 KiB of A)', 'B',
    onePart([`X-Big: ${'A'.repeat(128 * 1024)}`, 'Content-Disposition: form-data; name="f"']), { ...LIMIT, message: /headers are larger than 81920 bytes/ }],
  ['a filename of 96 KiB', 'B',
    onePart([`Content-Disposition: form-data; name="f"; filename="${'n'.repeat(96 * 1024)}"`, 'Content-Type: application/octet-stream']), { ...LIMIT, message: /81920/ }],
  ['a header block of exactly 81920 bytes', 'B',
    // The block counts from the CRLF after the delimiter: 2 + 'X-Pad: ' (7) + padding + CRLF + the disposition.
    onePart([`X-Pad: ${'p'.repeat(81_920 - 2 - 7 - 2 - 'Content-Disposition: form-data; name="f"'.length)}`, 'Content-Disposition: form-data; name="f"']),
    { status: 200, summary: { values: 1, files: [], spooled: 0 } }],

  // Part headers that cannot be parsed: busboy dropped the part (and its field) with a 200.
  ['python-multipart tests/test_data/http/CR_in_header.http', PM, pythonMultipart('Content-\risposition: form-data; name="field"'), INVALID],
  ['python-multipart tests/test_data/http/CRLF_in_header.http', PM, pythonMultipart('Content-\r\nisposition: form-data; name="field"'), INVALID],
  ['python-multipart tests/test_data/http/CR_in_header_value.http', PM, pythonMultipart('Content-Disposition: form-data; n\rme="field"'), INVALID],
  ['python-multipart tests/test_data/http/bad_header_char.http', PM, pythonMultipart('Content-<<<position: form-data; name="field"'), INVALID],
  ['python-multipart tests/test_data/http/empty_header.http', PM, pythonMultipart(': form-data; name="field"'), INVALID],
  ['python-multipart tests/test_data/http/bad_end_of_headers.http', PM,
    `--${PM}\r\nContent-Disposition: form-data; name="field"\r\n\rQThis is a test.\r\n--${PM}--`, INVALID],
  ['@fastify/busboy dicer-malformed-header.test.js "should gracefully handle headers with leading whitespace"', '----WebKitFormBoundaryoo6vortfDzBsDiro',
    '------WebKitFormBoundaryoo6vortfDzBsDiro\r\n Content-Disposition: form-data; name="bildbeschreibung"\r\n\r\n\r\n------WebKitFormBoundaryoo6vortfDzBsDiro--', INVALID],
  ['@fastify/busboy types-multipart.test.js "Empty content-type and empty content-disposition" (busboy expects the second part ignored)', '----WebKitFormBoundaryTB2MiQ36fnSJlrhY',
    ['------WebKitFormBoundaryTB2MiQ36fnSJlrhY', 'Content-Disposition: form-data; name="cont"', 'Content-Type: ', '', 'some random content',
      '------WebKitFormBoundaryTB2MiQ36fnSJlrhY', 'Content-Disposition: ', '', 'some random pass', '------WebKitFormBoundaryTB2MiQ36fnSJlrhY--'].join('\r\n'), INVALID],
  ['@fastify/busboy dicer-headerparser.test.js "Bare LF in header name"', 'B', onePart(['Foo\nbad: bar', 'Content-Disposition: form-data; name="f"']), INVALID],
  ['a part whose Content-Disposition is not form-data (issue 17: `form-d\\0ta`)', 'B', onePart(['Content-Disposition: form-d\0ta; name="f"']), INVALID],

  // Valid bodies of theirs: accepted as before.
  ['python-multipart tests/test_data/http/header_with_number.http (header names with every token character)', 'b8825ae386be4fdc9644d87e392caad3',
    '--b8825ae386be4fdc9644d87e392caad3\r\nContent-Disposition: form-data; filename="secret.txt"; name="files"\r\nContent-Type: text/plain; charset=utf-8\r\n' +
    "X-Funky-Header-1: bar\r\nabcdefghijklmnopqrstuvwxyz01234: foo\r\nABCDEFGHIJKLMNOPQRSTUVWXYZ56789: bar\r\nother!#$%&'*+-.^_`|~: baz\r\nContent-Length: 6\r\n\r\naaaaaa\r\n--b8825ae386be4fdc9644d87e392caad3--",
    { status: 200, summary: { values: 0, files: [6], spooled: 0 } }],
  ['@fastify/busboy types-multipart.test.js "multiple empty parts should get ignored"', '----WebKitFormBoundaryzca7IDMnT6QwqBp7',
    ['------WebKitFormBoundaryzca7IDMnT6QwqBp7', 'Content-Disposition: form-data; name="regsubmit"', '', 'yes',
      '------WebKitFormBoundaryzca7IDMnT6QwqBp7', '------WebKitFormBoundaryzca7IDMnT6QwqBp7', '------WebKitFormBoundaryzca7IDMnT6QwqBp7',
      '------WebKitFormBoundaryzca7IDMnT6QwqBp7', 'Content-Disposition: form-data; name="referer"', '', 'http://domainExample/./',
      '------WebKitFormBoundaryzca7IDMnT6QwqBp7', 'Content-Disposition: form-data; name="activationauth"', '', '',
      '------WebKitFormBoundaryzca7IDMnT6QwqBp7', 'Content-Disposition: form-data; name="seccodemodid"', '', 'member::register',
      '------WebKitFormBoundaryzca7IDMnT6QwqBp7--'].join('\r\n'),
    { status: 200, summary: { values: 4, files: [], spooled: 0 } }],
  ['@fastify/busboy types-multipart.test.js "Fields and files" (a folded Content-Disposition added)', '---------------------------paZqsnEHRufoShdX6fh0lUhXBP4k',
    ['-----------------------------paZqsnEHRufoShdX6fh0lUhXBP4k', 'Content-Disposition: form-data;', ' name="field1"', 'content-type: text/plain; charset=utf-8', '',
      'Aufklärung ist der Ausgang des Menschen aus seiner selbstverschuldeten Unmündigkeit.',
      '-----------------------------paZqsnEHRufoShdX6fh0lUhXBP4k', 'Content-Disposition: form-data; name="field2"', 'content-type: text/plain; charset=iso-8859-1', '',
      'sapere aude!', '-----------------------------paZqsnEHRufoShdX6fh0lUhXBP4k--'].join('\r\n'),
    { status: 200, summary: { values: 2, files: [], spooled: 0 } }]
]

for (const pool of pools) {
  test(`${pool}: the peers' malformed multipart bodies answer 400 or 413, their valid ones parse`, async (t) => {
    const { app, since, port } = await startApp(t, pool, { maxThreads: 1 }, (app) => {
      // The routes take the case's limits from a header: one app for every case.
      app.post('/blocking', { blocking: true }, parsed)
      app.post('/blocking-pairs-2', { blocking: { multipart: { limits: { headerPairs: 2 } } } }, parsed)
      app.post('/blocking-pairs-3', { blocking: { multipart: { limits: { headerPairs: 3 } } } }, parsed)
      app.post('/read', async (request) => {
        const pairs = request.headers['x-header-pairs']
        const { fields, files } = await request.readMultipart(pairs === undefined ? undefined : { limits: { headerPairs: Number(pairs) } })
        return summarize(fields, files)
      })
    })
    for (const [name, boundary, body, expected, limits] of CASES) {
      for (const route of ['blocking', 'read']) {
        const pairs = limits?.headerPairs
        const path = route === 'read' ? '/read' : pairs === undefined ? '/blocking' : `/blocking-pairs-${pairs}`
        const headers = { 'content-type': `multipart/form-data; boundary=${boundary}`, ...(pairs === undefined ? {} : { 'x-header-pairs': String(pairs) }) }
        const res = await send(port, { method: 'POST', path, headers, body: Buffer.from(body, 'latin1') })
        const got = res.body === undefined ? undefined : JSON.parse(res.body)
        if (expected.status === 200) {
          t.same([res.status, got], [200, expected.summary], `${route}: ${name}`)
        } else {
          t.equal(res.status, expected.status, `${route}: ${name}: ${res.body}`)
          t.match(got, { code: expected.code, ...(expected.message === undefined ? {} : { message: expected.message }) }, `${route}: ${name}: its error`)
        }
      }
    }
    await checkAlive(t, app, { maxThreads: 1, tmp })
    await checkClosed(t, app, since, { tmp })
  })
}
