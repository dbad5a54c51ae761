// The worker half of multipart uploads: the main thread only moves the
// request's bytes here (lib/multipart.ts); @fastify/busboy parses them in this
// thread. Fields go to `request.body`, files to `request.files`: in memory up
// to `spoolThreshold`, beyond it spooled to a temporary file as the bytes
// arrive. The thread grants credit as it consumes bytes, so a handler that
// reads slowly (a slow disk) pauses the client's socket.
import { randomUUID } from 'node:crypto'
import { createWriteStream, type WriteStream } from 'node:fs'
import { unlink } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { Busboy, Dicer } from '@fastify/busboy'
import parseParams from '@fastify/busboy/lib/utils/parseParams.js'
import { FST_BLOCKING_MULTIPART_INVALID, FST_BLOCKING_MULTIPART_LIMIT } from '../lib/common/errors.js'
import type { WorkerFile } from '../lib/common/types.js'
import { PartScanner } from './multipart-scan.js'
import type { UploadControl, UploadMessage, UploadSpec } from '../lib/common/protocol.js'
import { unknownMessage } from '../lib/common/protocol.js'

/** A WorkerFile while it is parsed: `buffer` or `path` is set once its part has ended. */
export type ParsedFile = Omit<WorkerFile, 'buffer' | 'path'> & { buffer?: Buffer, path?: string }

/** Bytes of credit the worker gives back at once: a quarter of the main thread's 1 MiB window. */
const CREDIT_BATCH = 262_144

export interface ParsedUpload {
  fields: Record<string, string | string[]>
  files: ParsedFile[]
  /** Temporary files written for this upload (deleted by cleanup()). */
  spooled: string[]
}

/** Deletes what an upload spooled; a file already gone is fine. */
export async function removeSpooled (paths: string[]): Promise<void> {
  await Promise.all(paths.map((path) => unlink(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err
  })))
}

/** A field set by name without touching prototypes: `__proto__` is just a name. */
function setField (fields: Record<string, string | string[]>, name: string, value: string): void {
  const existing = Object.hasOwn(fields, name) ? fields[name] : undefined
  // A repeated name grows its array in place: copying it each time made many repeats quadratic.
  if (Array.isArray(existing)) {
    existing.push(value)
    return
  }
  const next = existing === undefined ? value : [existing, value]
  Object.defineProperty(fields, name, { value: next, enumerable: true, writable: true, configurable: true })
}

type DicerParser = InstanceType<typeof Dicer> & { _finished?: boolean, _unpause?: () => void }

/**
 * A busboy for one upload, with @fastify/busboy's (3.2.6) Dicer fixed: a part
 * busboy skips is resumed with no 'data' listener, so what Dicer pushes into
 * it is buffered, and a push past the part's highWaterMark (16 KiB) pauses
 * Dicer, holding that write's callback until the part reads again. When the
 * same write also ends the part and the whole body (the closing delimiter),
 * the part never reads again and Dicer's own 'end' handler resumes only while
 * the body is not finished: the callback is never called, so busboy never
 * emits 'finish' and the chunk's credit never goes back. Here a part that ends
 * after the closing delimiter resumes Dicer (no part takes bytes after it).
 */
export function createBusboy (contentType: string, limits: UploadSpec['limits']): InstanceType<typeof Busboy> {
  const busboy = new Busboy({ headers: { 'content-type': contentType }, limits })
  const dicer = (busboy as unknown as { _parser?: { parser?: DicerParser } })._parser?.parser
  if (!(dicer instanceof Dicer) || typeof dicer._unpause !== 'function') {
    throw new Error('fastify-blocking: this version of @fastify/busboy has no Dicer parser where expected')
  }
  dicer.on('part', (part: Readable) => part.once('end', () => {
    if (dicer._finished === true) dicer._unpause!()
  }))
  return busboy
}

/** The boundary of a multipart content type, read as busboy reads it. */
function boundaryOf (contentType: string): string {
  for (const param of parseParams(contentType)) {
    if (Array.isArray(param) && /^boundary$/i.test(param[0]) && param[1] !== undefined) return param[1]
  }
  // busboy's constructor has refused it already.
  throw new FST_BLOCKING_MULTIPART_INVALID('Multipart: Boundary not found')
}

/** `parsing.ms`: the time spent on the body's chunks is added there (the thread's work, for utilization). */
export function parseUpload (spec: UploadSpec, parsing: { ms: number } = { ms: 0 }): Promise<ParsedUpload> {
  return new Promise<ParsedUpload>((resolve, reject) => {
    let busboy: InstanceType<typeof Busboy>
    let scanner: PartScanner
    try {
      busboy = createBusboy(spec.contentType, spec.limits)
      scanner = new PartScanner(boundaryOf(spec.contentType), spec.limits.headerPairs ?? 2000)
    } catch (err) {
      spec.port.close()
      reject(new FST_BLOCKING_MULTIPART_INVALID((err as Error).message))
      return
    }
    new UploadParser(spec, busboy, scanner, parsing, resolve, reject).start()
  })
}

/**
 * One upload in this thread: the port protocol (UploadMessage in,
 * UploadControl out) on one side, busboy's events on the other. It owns the
 * spool files until it settles: resolved, they go to the handler's task
 * (removeSpooled at its end); failed, it deletes them itself.
 */
class UploadParser {
  private readonly fields: Record<string, string | string[]> = {}
  private readonly files: ParsedFile[] = []
  private readonly spooled: string[] = []
  private readonly writes: Array<Promise<void>> = []
  private readonly outs: WriteStream[] = []
  /** Set once: every event after it is ignored. */
  failed: Error | undefined
  private settled = false
  /** The parts busboy reported: at the end, as many as the scanner checked, or one was dropped. */
  private reported = 0
  /** busboy's multipart parser ignores fieldNameSize (only its urlencoded one has it): checked here. */
  private readonly maxName: number
  /**
   * Credit goes back once busboy has taken the bytes (its callback runs when
   * it is ready for more, later if a file part is paused), in batches: one
   * message per quarter of the window, not one per chunk.
   */
  private owed = 0
  /**
   * The sizes of the chunks busboy has yet to take, in the order written: a
   * Writable calls back in that order, so one callback serves every chunk.
   */
  private readonly taking: number[] = []
  /**
   * The memory the chunks came in goes back to the main thread with the
   * credit (see UploadControl 'upload:more'): freed there, by the thread that
   * allocated it and allocates the next socket reads, it is reused at once.
   * Freed here, late (this thread's collector has little reason to run),
   * the main thread would take fresh pages for every read of a new server.
   */
  private spent: ArrayBuffer[] = []

  constructor (
    readonly spec: UploadSpec,
    private readonly busboy: InstanceType<typeof Busboy>,
    private readonly scanner: PartScanner,
    private readonly parsing: { ms: number },
    private readonly resolve: (upload: ParsedUpload) => void,
    private readonly reject: (err: Error) => void
  ) {
    this.maxName = spec.limits.fieldNameSize ?? 100
  }

  start (): void {
    const { busboy, spec: { port, limits } } = this
    busboy.on('field', (name: string | undefined, value: string, nameTruncated: boolean, valueTruncated: boolean) => this.onField(name, value, nameTruncated, valueTruncated))
    busboy.on('file', (fieldname: string | undefined, stream: Readable, filename: string, encoding: string, mimetype: string) => this.onFile(fieldname, stream, filename, encoding, mimetype))
    busboy.on('partsLimit', () => this.limit(`more parts than parts (${limits.parts})`))
    busboy.on('filesLimit', () => this.limit(`more files than files (${limits.files})`))
    busboy.on('fieldsLimit', () => this.limit(`more fields than fields (${limits.fields})`))
    busboy.on('error', (err: Error) => this.fail(new FST_BLOCKING_MULTIPART_INVALID(err.message)))
    busboy.on('finish', () => this.onFinish())
    // The main thread closes the port when the client goes away.
    port.on('close', () => this.onClose())
    // Says "started": the main thread stops counting the task against maxThreads while the body arrives.
    this.send({ type: 'upload:more', credit: 0 })
    port.on('message', (message: UploadMessage) => this.onMessage(message))
  }

  // --- the port: the body's bytes in, credit and control out ---

  private onMessage (message: UploadMessage): void {
    if (this.failed !== undefined) return
    switch (message.type) {
      case 'upload:chunk': return this.onChunk(message.chunk)
      case 'upload:end': return this.onEnd()
      case 'upload:abort': return this.onAbort()
      default: return this.fail(unknownMessage('upload (in the worker)', message))
    }
  }

  private onChunk (chunk: Uint8Array): void {
    const began = performance.now()
    // A copy in this thread's memory: busboy and the file streams may keep slices of it.
    const own = Buffer.from(chunk)
    this.spent.push(chunk.buffer as ArrayBuffer)
    try {
      this.scanner.push(own)
    } catch (err) {
      return this.fail(err as Error)
    }
    this.taking.push(own.byteLength)
    this.busboy.write(own, this.onTaken)
    this.parsing.ms += performance.now() - began
  }

  private onEnd (): void {
    if (this.owed > 0 || this.spent.length > 0) this.grantCredit()
    this.busboy.end()
  }

  private onAbort (): void {
    this.fail(new FST_BLOCKING_MULTIPART_INVALID('the request body ended early (the client aborted)'))
  }

  private onClose (): void {
    if (!this.settled && this.failed === undefined) this.fail(new FST_BLOCKING_MULTIPART_INVALID('the request body ended early (the client went away)'))
  }

  /** busboy's write callback: one function for every chunk, no closure per message. */
  private readonly onTaken = (): void => {
    this.owed += this.taking.shift()!
    if (this.failed === undefined && this.owed >= CREDIT_BATCH) this.grantCredit()
  }

  private grantCredit (): void {
    const returned = this.spent
    this.spent = []
    this.send({ type: 'upload:more', credit: this.owed, ...(returned.length > 0 ? { returned } : {}) }, returned)
    this.owed = 0
  }

  private send (message: UploadControl, transfer?: ArrayBuffer[]): void {
    this.spec.port.postMessage(message, transfer)
  }

  private closePort (): void {
    this.spec.port.removeAllListeners('close')
    this.spec.port.close()
  }

  // --- busboy: fields, files, limits, the end of the body ---

  private onField (name: string | undefined, value: string, nameTruncated: boolean, valueTruncated: boolean): void {
    this.reported++
    if (name === undefined) return this.unnamed()
    if (nameTruncated || this.nameTooLong(name)) return this.nameLimit()
    if (valueTruncated) return this.limit(`field "${name}" is longer than fieldSize (${this.spec.limits.fieldSize ?? 1_048_576} bytes)`)
    setField(this.fields, name, value)
  }

  private onFile (fieldname: string | undefined, stream: Readable, filename: string, encoding: string, mimetype: string): void {
    this.reported++
    if (fieldname === undefined || this.nameTooLong(fieldname)) {
      stream.resume()
      return fieldname === undefined ? this.unnamed() : this.nameLimit()
    }
    const record: ParsedFile = { fieldname, filename, mimetype, encoding, size: 0 }
    // In the order of the body, whichever part ends first.
    this.files.push(record)
    new FilePart(this, stream, record).listen()
  }

  private onFinish (): void {
    if (this.failed !== undefined) return
    if (this.reported !== this.scanner.parts) return this.fail(new FST_BLOCKING_MULTIPART_INVALID(`busboy reported ${this.reported} of the ${this.scanner.parts} parts`))
    Promise.all(this.writes).then(() => this.settle(), (err: Error) => this.fail(err))
  }

  /** Every part is parsed and every spool file written: the handler runs now. */
  private settle (): void {
    if (this.failed !== undefined || this.settled) return
    this.settled = true
    this.send({ type: 'upload:parsed' })
    this.closePort()
    this.resolve({ fields: this.fields, files: this.files, spooled: this.spooled })
  }

  // --- failures ---

  /** A part without a name parameter has none (undefined): nothing to measure. */
  private nameTooLong (name: string | undefined): boolean {
    return name !== undefined && Buffer.byteLength(name) > this.maxName
  }

  private nameLimit (): void {
    this.limit(`a field name is longer than fieldNameSize (${this.maxName} bytes)`)
  }

  private unnamed (): void {
    this.fail(new FST_BLOCKING_MULTIPART_INVALID('a part has no name (its Content-Disposition has no name parameter)'))
  }

  limit (what: string): void {
    this.fail(new FST_BLOCKING_MULTIPART_LIMIT(what))
  }

  fail (err: Error): void {
    if (this.failed !== undefined) return
    this.failed = err
    // Stop the main thread from sending the rest of the body.
    this.send({ type: 'upload:stop' })
    this.closePort()
    this.busboy.removeAllListeners('finish')
    // The upload has failed with its first error: what busboy says as it is destroyed is not news.
    this.busboy.on('error', () => {})
    this.busboy.destroy()
    // Half-written spool files: stop writing, then delete them.
    for (const out of this.outs) out.destroy()
    Promise.allSettled(this.writes).then(() => removeSpooled(this.spooled)).then(() => {
      this.settled = true
      this.reject(err)
    }, this.reject)
  }

  // --- spool files ---

  /** A temporary file for a part past spoolThreshold, named by us, never by the client. */
  openSpool (): { path: string, out: WriteStream } {
    const path = join(tmpdir(), `fastify-blocking-${randomUUID()}`)
    this.spooled.push(path)
    // Before the first byte: the main thread deletes it if this thread dies.
    this.send({ type: 'upload:spooled', path })
    // Readable by this user only; never an existing file (no link followed).
    const out = createWriteStream(path, { mode: 0o600, flags: 'wx' })
    this.outs.push(out)
    this.writes.push(new Promise((resolve, reject) => {
      out.on('close', resolve)
      out.on('error', reject)
    }))
    return { path, out }
  }
}

/** One file part as it arrives: in memory up to spoolThreshold, beyond it in a spool file. */
class FilePart {
  private chunks: Buffer[] | undefined = []
  private out: WriteStream | undefined

  constructor (private readonly upload: UploadParser, private readonly stream: Readable, private readonly record: ParsedFile) {}

  listen (): void {
    const { upload, stream, record } = this
    stream.on('limit', () => upload.limit(`file "${record.filename}" is larger than fileSize (${upload.spec.limits.fileSize} bytes)`))
    stream.on('data', (chunk: Buffer) => this.onData(chunk))
    stream.on('end', () => this.onEnd())
    stream.on('error', (err: Error) => upload.fail(new FST_BLOCKING_MULTIPART_INVALID(err.message)))
  }

  private onData (chunk: Buffer): void {
    // busboy reports a limit before it delivers the bytes that passed it:
    // once the upload has failed (and deleted its files), start no file.
    if (this.upload.failed !== undefined) return
    this.record.size += chunk.length
    if (this.out === undefined && this.record.size > this.upload.spec.spoolThreshold) this.spool()
    if (this.out === undefined) {
      this.chunks!.push(chunk)
    } else if (!this.out.write(chunk)) {
      // A slow disk pauses the part, and with it the parser and the socket.
      this.stream.pause()
      this.out.once('drain', this.resume)
    }
  }

  private onEnd (): void {
    if (this.upload.failed !== undefined) return
    if (this.out !== undefined) this.out.end()
    else this.record.buffer = Buffer.concat(this.chunks!)
  }

  private spool (): void {
    const { path, out } = this.upload.openSpool()
    this.out = out
    for (const chunk of this.chunks!) out.write(chunk)
    this.chunks = undefined
    this.record.path = path
  }

  private readonly resume = (): void => {
    this.stream.resume()
  }
}
