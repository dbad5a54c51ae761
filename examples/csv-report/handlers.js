// The upload handler: the multipart body is parsed in the worker, and so is the
// CSV. Worker threads import this module, so it must not import app.js (that
// would build the app in every thread, which fastify-blocking refuses).
//
// Not a generator: streaming handlers do not get multipart bodies (a multipart
// request to one is answered 415), so the report is built whole and returned.
import { readFileSync } from 'node:fs'
import { defineHandler } from 'fastify-blocking'
import { httpError } from '../shared/http-error.js'

/** RFC 4180 CSV: quoted fields may hold commas, newlines and doubled quotes. */
export function parseCsv (text) {
  const rows = []
  let row = []
  let field = ''
  let quoted = false
  for (let i = 0; i < text.length; i++) {
    const c = text[i]
    if (quoted) {
      if (c !== '"') field += c
      else if (text[i + 1] === '"') field += text[i++]
      else quoted = false
    } else if (c === '"') quoted = true
    else if (c === ',') { row.push(field); field = '' } else if (c === '\n') { row.push(field); rows.push(row); row = []; field = '' } else if (c !== '\r') field += c
  }
  if (quoted) throw httpError(422, 'a quoted field is never closed')
  if (field !== '' || row.length > 0) { row.push(field); rows.push(row) }
  return rows
}

function describe (name, values) {
  const numbers = values.filter((v) => v !== '').map(Number)
  if (numbers.length > 0 && numbers.every(Number.isFinite)) {
    const sum = numbers.reduce((a, b) => a + b, 0)
    return `${name}: numbers, sum ${sum}, min ${Math.min(...numbers)}, max ${Math.max(...numbers)}, mean ${+(sum / numbers.length).toFixed(3)}`
  }
  return `${name}: text, ${new Set(values).size} distinct`
}

/** POST /report, multipart with a `file` field: a plain-text summary of each column. */
export const report = defineHandler(import.meta.url, (request, reply) => {
  // request.files is undefined when the body is not multipart.
  const file = request.files?.find((f) => f.fieldname === 'file')
  if (file === undefined) throw httpError(400, 'send the CSV as a file field named "file"')
  // Small files come in memory, larger ones spooled to a temporary file (deleted after this handler).
  const [header, ...rows] = parseCsv(file.buffer?.toString('utf8') ?? readFileSync(file.path, 'utf8'))
  if (header === undefined) throw httpError(422, `${file.filename} is empty`)
  rows.forEach((row, i) => {
    if (row.length !== header.length) throw httpError(422, `line ${i + 2} has ${row.length} fields, the header ${header.length}`)
  })
  reply.type('text/plain; charset=utf-8')
  const lines = [`${file.filename}: ${rows.length} rows, ${header.length} columns`]
  header.forEach((name, i) => lines.push(describe(name, rows.map((row) => row[i]))))
  return lines.join('\n') + '\n'
})
