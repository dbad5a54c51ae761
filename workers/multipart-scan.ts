// What @fastify/busboy does not say about a multipart body, found before it
// sees the bytes. busboy skips a part whose headers it cannot use (no
// Content-Disposition, not form-data, a line it cannot parse), drops header
// lines past headerPairs and truncates a header block past 80 KiB, all without
// a word; a part with no name reaches its listeners as `undefined`. This
// scanner follows busboy's framing (its Dicer: delimiter `CRLF--boundary`, the
// first one preceded by an implied CRLF; a header block ends at CRLFCRLF) and
// checks each part's header block as it completes, so that the upload fails
// with 400 or 413 before busboy could drop anything. It keeps at most a header
// block (bounded by HEADER_SIZE) and a delimiter's length of bytes.
import parseParams from '@fastify/busboy/lib/utils/parseParams.js'
import { FST_BLOCKING_MULTIPART_INVALID, FST_BLOCKING_MULTIPART_LIMIT } from '../lib/common/errors.js'

/** busboy's cap on one part's header block (its `headerSize`, not one of our limits): past it, 413. */
export const HEADER_SIZE = 81_920

const CRLF = Buffer.from('\r\n')
const HEADER_END = Buffer.from('\r\n\r\n')
const DASH = 0x2d
/** A header name (RFC 9110 token). */
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/

const enum State { Body, Delimiter, Header, Done }

/** Where `pattern` starts in `carry` + `data[from...]`, as an index into `data` (below `from`: inside carry), if it does. */
function find (carry: Buffer, data: Buffer, from: number, pattern: Buffer): number | undefined {
  if (carry.length > 0) {
    const joined = Buffer.concat([carry, data.subarray(from, from + pattern.length - 1)])
    const at = joined.indexOf(pattern)
    if (at !== -1) return from + at - carry.length
  }
  const at = data.indexOf(pattern, from)
  return at === -1 ? undefined : at
}

/** The last `n` bytes of `carry` + `data[from...]`. */
function tail (carry: Buffer, data: Buffer, from: number, n: number): Buffer {
  const rest = data.length - from
  if (rest >= n) return Buffer.from(data.subarray(data.length - n))
  return Buffer.concat([carry.subarray(Math.max(0, carry.length - (n - rest))), data.subarray(from)])
}

const invalid = (what: string): Error => new FST_BLOCKING_MULTIPART_INVALID(what)

/**
 * Checks one part's header block (the bytes between its delimiter and the
 * blank line) as busboy's HeaderParser and multipart parser would read it,
 * failing where they would drop, truncate or skip. Throws
 * FST_BLOCKING_MULTIPART_INVALID or FST_BLOCKING_MULTIPART_LIMIT.
 */
export function checkPartHeaders (block: Buffer, headerPairs: number): void {
  if (block.length > HEADER_SIZE) throw new FST_BLOCKING_MULTIPART_LIMIT(`a part's headers are larger than ${HEADER_SIZE} bytes`)
  const lines = block.toString('latin1').split('\r\n')
  let pairs = 0
  let last: string | undefined
  const dispositions: string[] = []
  for (const line of lines) {
    // The CRLF that ends the delimiter line leaves an empty first line.
    if (line === '') continue
    if (line.includes('\r') || line.includes('\n')) throw invalid('a part header has a line break inside it')
    if (line[0] === ' ' || line[0] === '\t') {
      // A folded line continues the header before it.
      if (last === undefined) throw invalid('a part header line starts with whitespace')
      if (last === 'content-disposition') dispositions[dispositions.length - 1] += line
      continue
    }
    const colon = line.indexOf(':')
    if (colon <= 0) throw invalid('a part header line has no name')
    const name = line.slice(0, colon)
    if (!TOKEN.test(name)) throw invalid('a part header name has a character a header name may not have')
    if (++pairs > headerPairs) throw new FST_BLOCKING_MULTIPART_LIMIT(`a part has more header lines than headerPairs (${headerPairs})`)
    last = name.toLowerCase()
    if (last === 'content-disposition') {
      const value = line.slice(colon + 1)
      dispositions.push(value[0] === ' ' || value[0] === '\t' ? value.slice(1) : value)
    }
  }
  // busboy reads the first Content-Disposition.
  const disposition = dispositions[0]
  if (disposition === undefined) throw invalid('a part has no Content-Disposition header')
  const params = parseParams(disposition)
  const type = params[0]
  if (typeof type !== 'string' || !/^form-data$/i.test(type)) throw invalid('a part\'s Content-Disposition is not form-data')
  let named = false
  for (const param of params.slice(1)) {
    if (!Array.isArray(param)) continue
    const [key, value] = param
    if (!/^(?:name|filename)$/i.test(key)) continue
    if (typeof value === 'string' && (value.includes('\r') || value.includes('\n'))) throw invalid(`a part's ${key.toLowerCase()} has a line break inside it`)
    if (/^name$/i.test(key) && value !== undefined) named = true
  }
  // RFC 7578 §4.2: every part has a name.
  if (!named) throw invalid('a part has no name (its Content-Disposition has no name parameter)')
}

export class PartScanner {
  /** Header blocks checked: the parts busboy must report. */
  parts = 0
  private readonly delimiter: Buffer
  private readonly headerPairs: number
  private state = State.Body
  /** Body: the last bytes of the body, where a delimiter may have begun. Header: the block so far. */
  private carry: Buffer
  private header: Buffer[] = []
  private headerLength = 0
  /** Dashes seen right after a delimiter (two: the closing one). */
  private dashes = 0

  constructor (boundary: string, headerPairs: number) {
    this.delimiter = Buffer.from(`\r\n--${boundary}`, 'latin1')
    this.headerPairs = headerPairs
    // busboy reads the body as if a CRLF came before it: the first delimiter needs none.
    this.carry = CRLF
  }

  /** Takes the next bytes of the body; throws when a part's headers are malformed or over a limit. */
  push (data: Buffer): void {
    let at = 0
    while (at < data.length) {
      switch (this.state) {
        case State.Done:
          // The epilogue: busboy ignores it.
          return
        case State.Body: {
          const found = find(this.carry, data, at, this.delimiter)
          if (found === undefined) {
            this.carry = tail(this.carry, data, at, this.delimiter.length - 1)
            return
          }
          at = found + this.delimiter.length
          this.carry = Buffer.alloc(0)
          this.state = State.Delimiter
          this.dashes = 0
          break
        }
        case State.Delimiter:
          // `--` right after a delimiter closes the body.
          if (data[at] === DASH) {
            at++
            if (++this.dashes === 2) this.state = State.Done
            break
          }
          this.state = State.Header
          this.header = this.dashes === 1 ? [Buffer.from('-')] : []
          this.headerLength = this.header.length
          break
        case State.Header:
          at = this.scanHeader(data, at)
          break
      }
    }
  }

  /** Looks for the end of the header block (or a delimiter first: headers never ended); returns where scanning goes on. */
  private scanHeader (data: Buffer, at: number): number {
    const previous = this.headerTail()
    const end = find(previous, data, at, HEADER_END)
    const delimiter = find(previous, data, at, this.delimiter)
    if (delimiter !== undefined && (end === undefined || end + HEADER_END.length > delimiter)) {
      // busboy ignores a part with nothing at all in it (a delimiter right after another).
      if (delimiter === at - this.headerLength && this.dashes === 0) {
        this.header = []
        this.headerLength = 0
        this.state = State.Delimiter
        return delimiter + this.delimiter.length
      }
      throw invalid('a part\'s headers end without the blank line that ends them')
    }
    if (end === undefined) {
      this.header.push(Buffer.from(data.subarray(at)))
      this.headerLength += data.length - at
      // Beyond the cap (and the 3 bytes a split blank line may have left): too large, whatever follows.
      if (this.headerLength > HEADER_SIZE + 3) throw new FST_BLOCKING_MULTIPART_LIMIT(`a part's headers are larger than ${HEADER_SIZE} bytes`)
      return data.length
    }
    let block = Buffer.concat([...this.header, data.subarray(at, Math.max(at, end))])
    // The blank line began in an earlier chunk: those bytes are not part of the block.
    if (end < at) block = block.subarray(0, block.length - (at - end))
    this.header = []
    this.headerLength = 0
    checkPartHeaders(block, this.headerPairs)
    this.parts++
    this.state = State.Body
    return end + HEADER_END.length
  }

  /** The header block's last bytes, where a blank line or a delimiter may have begun. */
  private headerTail (): Buffer {
    const n = this.delimiter.length - 1
    const last = this.header.length === 0 ? Buffer.alloc(0) : Buffer.concat(this.header.slice(-Math.min(this.header.length, n)))
    return last.subarray(Math.max(0, last.length - n))
  }
}
