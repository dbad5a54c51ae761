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
  const { port, limits, spoolThreshold } = spec
  const fields: Record<string, string | string[]> = {}
  const files: ParsedFile[] = []
  const spooled: string[] = []
  const writes: Array<Promise<void>> = []
  const outs: WriteStream[] = []
  let failed: Error | undefined

  const send = (message: UploadControl, transfer?: ArrayBuffer[]): void => port.postMessage(message, transfer)

  return new Promise<ParsedUpload>((resolve, reject) => {
    let settled = false
    const fail = (err: Error): void => {
      if (failed !== undefined) return
      failed = err
      // Stop the main thread from sending the rest of the body.
      send({ type: 'upload:stop' })
      port.removeAllListeners('close')
      port.close()
      busboy.removeAllListeners('finish')
      busboy.on('error', () => {})
      busboy.destroy()
      // Half-written spool files: stop writing, then delete them.
      for (const out of outs) out.destroy()
      Promise.allSettled(writes).then(() => removeSpooled(spooled)).then(() => {
        settled = true
        reject(err)
      }, reject)
    }
    const limit = (what: string): void => fail(new FST_BLOCKING_MULTIPART_LIMIT(what))

    let busboy: InstanceType<typeof Busboy>
    let scanner: PartScanner
    try {
      busboy = createBusboy(spec.contentType, limits)
      scanner = new PartScanner(boundaryOf(spec.contentType), limits.headerPairs ?? 2000)
    } catch (err) {
      port.close()
      reject(new FST_BLOCKING_MULTIPART_INVALID((err as Error).message))
      return
    }

    // busboy's multipart parser ignores fieldNameSize (only its urlencoded one has it): checked here.
    const maxName = limits.fieldNameSize ?? 100
    // A part without a name parameter has none (undefined): nothing to measure.
    const nameTooLong = (name: string | undefined): boolean => name !== undefined && Buffer.byteLength(name) > maxName
    // The parts busboy reported: at the end, as many as the scanner checked, or one was dropped.
    let reported = 0
    const unnamed = (): void => fail(new FST_BLOCKING_MULTIPART_INVALID('a part has no name (its Content-Disposition has no name parameter)'))
    busboy.on('field', (name: string | undefined, value: string, nameTruncated: boolean, valueTruncated: boolean) => {
      reported++
      if (name === undefined) return unnamed()
      if (nameTruncated || nameTooLong(name)) return limit(`a field name is longer than fieldNameSize (${maxName} bytes)`)
      if (valueTruncated) return limit(`field "${name}" is longer than fieldSize (${limits.fieldSize ?? 1_048_576} bytes)`)
      setField(fields, name, value)
    })
    busboy.on('file', (fieldname: string | undefined, stream: Readable, filename: string, encoding: string, mimetype: string) => {
      reported++
      if (fieldname === undefined || nameTooLong(fieldname)) {
        stream.resume()
        return fieldname === undefined ? unnamed() : limit(`a field name is longer than fieldNameSize (${maxName} bytes)`)
      }
      const record: ParsedFile = { fieldname, filename, mimetype, encoding, size: 0 }
      // In the order of the body, whichever part ends first.
      files.push(record)
      let chunks: Buffer[] | undefined = []
      let out: WriteStream | undefined
      stream.on('limit', () => limit(`file "${filename}" is larger than fileSize (${limits.fileSize} bytes)`))
      stream.on('data', (chunk: Buffer) => {
        // busboy reports a limit before it delivers the bytes that passed it:
        // once the upload has failed (and deleted its files), start no file.
        if (failed !== undefined) return
        record.size += chunk.length
        if (out === undefined && record.size > spoolThreshold) {
          // Past the threshold: spool to a temporary file, named by us, never by the client.
          const path = join(tmpdir(), `fastify-blocking-${randomUUID()}`)
          spooled.push(path)
          send({ type: 'upload:spooled', path })
          // Readable by this user only; never an existing file (no link followed).
          const file = createWriteStream(path, { mode: 0o600, flags: 'wx' })
          out = file
          outs.push(file)
          writes.push(new Promise((resolve, reject) => {
            file.on('close', resolve)
            file.on('error', reject)
          }))
          for (const c of chunks!) out.write(c)
          chunks = undefined
          record.path = path
        }
        if (out !== undefined) {
          // A slow disk pauses the part, and with it the parser and the socket.
          if (!out.write(chunk)) {
            stream.pause()
            out.once('drain', () => stream.resume())
          }
        } else {
          chunks!.push(chunk)
        }
      })
      stream.on('end', () => {
        if (failed !== undefined) return
        if (out !== undefined) out.end()
        else record.buffer = Buffer.concat(chunks!)
      })
      stream.on('error', (err: Error) => fail(new FST_BLOCKING_MULTIPART_INVALID(err.message)))
    })
    busboy.on('partsLimit', () => limit(`more parts than parts (${limits.parts})`))
    busboy.on('filesLimit', () => limit(`more files than files (${limits.files})`))
    busboy.on('fieldsLimit', () => limit(`more fields than fields (${limits.fields})`))
    busboy.on('error', (err: Error) => fail(new FST_BLOCKING_MULTIPART_INVALID(err.message)))
    busboy.on('finish', () => {
      if (failed !== undefined) return
      if (reported !== scanner.parts) return fail(new FST_BLOCKING_MULTIPART_INVALID(`busboy reported ${reported} of the ${scanner.parts} parts`))
      Promise.all(writes).then(() => {
        if (failed !== undefined || settled) return
        settled = true
        send({ type: 'upload:parsed' })
        port.removeAllListeners('close')
        port.close()
        resolve({ fields, files, spooled })
      }, (err: Error) => fail(err))
    })

    // The main thread closes the port when the client goes away.
    port.on('close', () => {
      if (!settled && failed === undefined) fail(new FST_BLOCKING_MULTIPART_INVALID('the request body ended early (the client went away)'))
    })
    // Credit goes back once busboy has taken the bytes (its callback runs when
    // it is ready for more, later if a file part is paused), in batches: one
    // message per quarter of the window, not one per chunk.
    let owed = 0
    // The memory the chunks came in goes back to the main thread with the
    // credit (see UploadControl 'upload:more'): freed there, by the thread that
    // allocated it and allocates the next socket reads, it is reused at once.
    // Freed here, late (this thread's collector has little reason to run),
    // the main thread would take fresh pages for every read of a new server.
    let spent: ArrayBuffer[] = []
    const giveCredit = (): void => {
      const returned = spent
      spent = []
      send({ type: 'upload:more', credit: owed, ...(returned.length > 0 ? { returned } : {}) }, returned)
      owed = 0
    }
    // Says "started": the main thread stops counting the task against maxThreads while the body arrives.
    send({ type: 'upload:more', credit: 0 })
    const repay = (bytes: number): void => {
      owed += bytes
      if (failed === undefined && owed >= CREDIT_BATCH) giveCredit()
    }
    port.on('message', (message: UploadMessage) => {
      if (failed !== undefined) return
      switch (message.type) {
        case 'upload:chunk': {
          const began = performance.now()
          const { chunk } = message
          // A copy in this thread's memory: busboy and the file streams may keep slices of it.
          const own = Buffer.from(chunk)
          spent.push(chunk.buffer as ArrayBuffer)
          try {
            scanner.push(own)
          } catch (err) {
            return fail(err as Error)
          }
          busboy.write(own, () => repay(own.byteLength))
          parsing.ms += performance.now() - began
          break
        }
        case 'upload:end':
          if (owed > 0 || spent.length > 0) giveCredit()
          busboy.end()
          break
        case 'upload:abort':
          fail(new FST_BLOCKING_MULTIPART_INVALID('the request body ended early (the client aborted)'))
          break
        default:
          fail(unknownMessage('upload (in the worker)', message))
      }
    })
  })
}
