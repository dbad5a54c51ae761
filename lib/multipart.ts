// The main-thread half of multipart uploads: the body is not parsed here. Its
// bytes are moved to the worker that parses them (workers/multipart.ts), with
// no copy when a chunk owns its memory and no promise per chunk; the worker's
// credits pause the socket when it falls behind.
//
// Fastify needs a content-type parser before a handler runs, and
// @fastify/multipart may or may not own `multipart/form-data`. So a route that
// parses in the pool renames the request's content type in onRequest to a
// private one whose parser leaves the body unread, and restores it in
// preValidation: no parser of anyone else's is touched.
import { unlink } from 'node:fs/promises'
import { IncomingMessage } from 'node:http'
import { Socket } from 'node:net'
import type { Readable } from 'node:stream'
import { MessageChannel, receiveMessageOnPort, type MessagePort } from 'node:worker_threads'
import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest, onRequestHookHandler, preValidationHookHandler } from 'fastify'
import { FST_BLOCKING_MULTIPART_INVALID } from './common/errors.js'
import { resolveInteger, resolveLimits, type ResolvedOptions } from './options.js'
import { payloadOf, refused } from './reply.js'
import { kUploadBody, kUploadContentType, kUploadReply } from './symbols.js'
import type { Entry } from './lane.js'
import type { Scheduler } from './scheduler.js'
import type { ReadMultipartOptions, ReadMultipartResult } from './common/types.js'
import { copyBytes, ownBuffer } from './common/clone.js'
import { PayloadKind, type Outcome, type ParseTask, type UploadControl, type UploadLimits, type UploadMessage, type UploadSpec, unknownMessage } from './common/protocol.js'

const PRIVATE_TYPE = 'application/x-fastify-blocking-multipart'
/** Bytes of a body in flight to the worker before it grants more. */
export const UPLOAD_HIGH_WATER_MARK = 1_048_576

type UploadRequest = FastifyRequest & { [kUploadContentType]?: string | null, [kUploadBody]?: Readable | null, [kUploadReply]?: FastifyReply | null }

function isMultipart (contentType: string | undefined): contentType is string {
  return contentType !== undefined && /^multipart\/form-data\b/i.test(contentType)
}

/** The private parser: leaves the body unread for the worker. */
export function registerParser (fastify: FastifyInstance): void {
  fastify.addContentTypeParser(PRIVATE_TYPE, (request, payload, done) => {
    (request as UploadRequest)[kUploadBody] = payload
    done(null, undefined)
  })
}

const renameContentType: onRequestHookHandler = function (request, reply, done) {
  const contentType = request.headers['content-type']
  if (isMultipart(contentType)) {
    (request as UploadRequest)[kUploadContentType] = contentType;
    (request as UploadRequest)[kUploadReply] = reply
    request.headers['content-type'] = PRIVATE_TYPE
  }
  done()
}

/** Where @fastify/multipart parses a route's body, only remember the reply (readMultipart cleans up on its close). */
const rememberReply: onRequestHookHandler = function (request, reply, done) {
  if (isMultipart(request.headers['content-type'])) (request as UploadRequest)[kUploadReply] = reply
  done()
}

const restoreContentType: preValidationHookHandler = function (request, reply, done) {
  const original = (request as UploadRequest)[kUploadContentType]
  if (original != null) request.headers['content-type'] = original
  done()
}

/**
 * Adds the rename and restore hooks to a route's own hooks, first, so that no
 * other hook sees the private type. With `rename` false (a route whose body
 * @fastify/multipart parses) the type is left alone.
 */
export function interceptMultipart (route: { onRequest?: unknown, preValidation?: unknown }, rename: boolean): void {
  const prepend = (existing: unknown, hook: Function): Function[] =>
    existing === undefined ? [hook] : Array.isArray(existing) ? [hook, ...existing] : [hook, existing as Function]
  route.onRequest = prepend(route.onRequest, rename ? renameContentType : rememberReply)
  if (rename) route.preValidation = prepend(route.preValidation, restoreContentType)
}

/** The unread multipart body of a request, if it has one. */
export function multipartBody (request: FastifyRequest): { body: Readable, contentType: string } | undefined {
  const r = request as UploadRequest
  const contentType = r[kUploadContentType] ?? request.headers['content-type']
  if (!isMultipart(contentType)) return undefined
  // Ours when the route renamed the type; otherwise @fastify/multipart's parser left request.raw unread.
  const body: Readable = r[kUploadBody] ?? (request.raw as IncomingMessage)
  if (body.readableEnded) return undefined
  return { body, contentType }
}

/** How an upload is parsed, and how long its client may send nothing (0: no limit), said in `log`. */
export interface UploadOptions {
  limits: UploadLimits
  spoolThreshold: number
  stallTimeout: number
  log: FastifyBaseLogger
}

/**
 * Starts moving a body's bytes to the port a task carries (`spec.port`).
 * Nothing is sent beyond the credit the worker grants: a worker that falls
 * behind pauses the body, and so the client's socket. Once the worker has
 * started, a client that sends nothing for `stallTimeout` ms while the worker
 * waits for its bytes loses its connection (the upload then ends as if it had gone).
 */
export function startUpload (body: Readable, contentType: string, options: UploadOptions): UploadSender {
  return new UploadSender(body, contentType, options)
}

/**
 * The sending half of an upload (see startUpload()). One instance an upload,
 * in place of a closure per event: the listeners it hands out (body, port,
 * timer, task) are its arrow fields; what the worker says on the port is
 * dispatched by onMessage().
 */
export class UploadSender {
  readonly spec: UploadSpec
  private readonly port: MessagePort
  private readonly stallTimeout: number
  private readonly log: FastifyBaseLogger
  /**
   * A chunk read from a real socket is a fresh allocation that nobody else
   * holds: when it owns its whole buffer, it is moved. Anything else (a slice
   * of a larger read, or bytes app.inject() or a preParsing stream may still
   * hold) is copied once into memory of its own, which is then moved.
   */
  private readonly fromSocket: boolean
  /** Temporary files the worker reported: deleted by cleanup() (the worker deletes them too, unless it died). */
  private readonly spooled: string[] = []
  private credit = UPLOAD_HIGH_WATER_MARK
  private waiting = false
  private stopped = false
  private stall: NodeJS.Timeout | undefined = undefined
  /** The task that parses the body (attach()). */
  private scheduler: Scheduler | undefined = undefined
  private entry: Entry | undefined = undefined

  constructor (private readonly body: Readable, contentType: string, { limits, spoolThreshold, stallTimeout, log }: UploadOptions) {
    const { port1, port2 } = new MessageChannel()
    this.port = port1
    this.spec = { port: port2, contentType, limits, spoolThreshold }
    this.stallTimeout = stallTimeout
    this.log = log
    this.fromSocket = body instanceof IncomingMessage && body.socket instanceof Socket
    port1.on('message', this.onMessage)
    // The worker closes its end when it has parsed the body (or given up on it).
    port1.on('close', this.stop)
    body.on('data', this.onData)
    body.on('end', this.onEnd)
    body.on('error', this.onAborted)
    body.on('aborted', this.onAborted)
    body.on('close', this.onClosed)
    // The client may have gone before we listened.
    if (body.destroyed && !body.readableEnded) this.onAborted()
  }

  /**
   * The task that parses this body, once submitted: while the worker takes
   * bytes it waits for its client without holding a thread's place
   * (scheduler.pause()), and holds one again once the body is parsed.
   */
  attach (scheduler: Scheduler, entry: Entry): void {
    this.scheduler = scheduler
    this.entry = entry
  }

  // --- The body -> the worker (UploadMessage) ---

  private readonly onData = (chunk: Buffer): void => {
    const bytes = this.fromSocket && ownBuffer(chunk) !== undefined ? chunk : copyBytes(chunk)
    this.send({ type: 'upload:chunk', chunk: bytes }, [bytes.buffer as ArrayBuffer])
    this.credit -= bytes.byteLength
    if (this.credit <= 0) this.body.pause()
    this.watchStall()
  }

  private readonly onEnd = (): void => {
    this.watchStall()
    this.send({ type: 'upload:end' })
  }

  private readonly onAborted = (): void => {
    if (!this.stopped) this.send({ type: 'upload:abort' })
    this.stop()
  }

  private readonly onClosed = (): void => {
    if (!this.body.readableEnded) this.onAborted()
  }

  private send (message: UploadMessage, transfer?: ArrayBuffer[]): void {
    this.port.postMessage(message, transfer)
  }

  // --- The worker -> here (UploadControl) ---

  private readonly onMessage = (message: UploadControl): void => {
    switch (message.type) {
      case 'upload:more':
        this.onMore(message.credit)
        break
      case 'upload:parsed':
        this.onParsed()
        break
      case 'upload:spooled':
        this.onSpooled(message.path)
        break
      case 'upload:stop':
        this.onStop()
        break
      default:
        // A bug on one side of the protocol: said loudly; the worker's parse then fails when the port closes.
        this.log.error({ err: unknownMessage('upload', message) }, 'fastify-blocking: upload stopped')
        this.stop()
        this.port.close()
    }
  }

  private onMore (credit: number): void {
    if (!this.waiting) {
      // The worker has started taking bytes: its task now waits for the client.
      this.waiting = true
      if (this.scheduler !== undefined && this.entry !== undefined) this.scheduler.pause(this.entry)
    }
    this.credit += credit
    if (this.credit > 0 && !this.stopped && this.body.isPaused()) this.body.resume()
    this.watchStall()
  }

  private onParsed (): void {
    if (this.scheduler !== undefined && this.entry !== undefined) this.scheduler.resume(this.entry)
  }

  private onSpooled (path: string): void {
    this.spooled.push(path)
  }

  /** A limit was hit or the body is malformed. */
  private onStop (): void {
    this.stop()
  }

  /** Sends nothing more: the body is left paused (and its listeners removed). */
  private readonly stop = (): void => {
    if (this.stopped) return
    this.stopped = true
    this.watchStall()
    const body = this.body
    body.removeListener('data', this.onData)
    body.removeListener('end', this.onEnd)
    body.removeListener('error', this.onAborted)
    body.removeListener('aborted', this.onAborted)
    body.removeListener('close', this.onClosed)
    body.pause()
  }

  // --- A client that sends nothing ---

  /** (Re)starts the stall clock while the worker waits for the client, else stops it. */
  private watchStall (): void {
    clearTimeout(this.stall)
    this.stall = undefined
    if (this.stallTimeout > 0 && this.waiting && !this.stopped && this.credit > 0 && !this.body.readableEnded) {
      this.stall = setTimeout(this.stalled, this.stallTimeout).unref()
    }
  }

  private readonly stalled = (): void => {
    this.log.warn(`fastify-blocking: an upload's client sent nothing for ${this.stallTimeout} ms (stallTimeout); the connection is closed`)
    this.body.destroy()
  }

  // --- The end ---

  /** Stops the upload, closes its channel and deletes its spooled files: called once its task is over. */
  readonly cleanup = async (): Promise<void> => {
    // The task's outcome comes back over the pool's channel, not this port:
    // it can be seen before the worker's messages here, which closing the
    // port would drop. Take the paths it reported from them first.
    const port = this.port
    for (let next = receiveMessageOnPort(port); next !== undefined; next = receiveMessageOnPort(port)) {
      const message = next.message as UploadControl
      if (message.type === 'upload:spooled') this.spooled.push(message.path)
    }
    this.stop()
    port.close()
    // The worker's end too, in case it never left this thread (the task was
    // dropped before a thread took it): closing ours alone would keep it, and
    // the chunks queued in it, alive for good. Once transferred this is a no-op.
    this.spec.port.close()
    await Promise.all(this.spooled.splice(0).map(unlinkSpooled))
  }
}

function unlinkSpooled (path: string): Promise<void> {
  return unlink(path).catch(() => {
    // Already deleted by the worker: the usual case.
  })
}

/** After a 413 the rest of the body is not read: close the connection rather than parse what follows. */
export function closeAfterLimit (reply: FastifyReply, err: unknown): void {
  if ((err as { code?: string }).code === 'FST_BLOCKING_MULTIPART_LIMIT') reply.header('connection', 'close')
}

/** `request.readMultipart()`: the parsing of a blocking route, for an async one. */
export function readMultipart (
  request: FastifyRequest,
  scheduler: Scheduler,
  plugin: ResolvedOptions,
  options: ReadMultipartOptions | undefined
): Promise<ReadMultipartResult> {
  const found = multipartBody(request)
  if (found === undefined) {
    return Promise.reject(new FST_BLOCKING_MULTIPART_INVALID('the request has no unread multipart/form-data body'))
  }
  let parsing: UploadOptions
  try {
    parsing = uploadOptions(request, plugin, options)
  } catch (err) {
    return Promise.reject(err)
  }
  const upload = startUpload(found.body, found.contentType, parsing)
  const reply = (request as UploadRequest)[kUploadReply] ?? null
  let entry: Entry
  try {
    entry = submitParse(request, scheduler, plugin, upload)
  } catch (err) {
    if (reply !== null) refused(reply, scheduler, err)
    void upload.cleanup()
    return Promise.reject(err)
  }
  upload.attach(scheduler, entry)
  cleanupWhenOver(upload, scheduler, entry, reply)
  return entry.promise.then(parsedResult)
}

/** The plugin's multipart options, with those of a readMultipart() call over them. */
function uploadOptions (request: FastifyRequest, plugin: ResolvedOptions, options: ReadMultipartOptions | undefined): UploadOptions {
  let limits = plugin.multipart.limits
  let spoolThreshold = plugin.multipart.spoolThreshold
  if (options?.limits !== undefined) limits = { ...limits, ...resolveLimits('readMultipart(options).limits', options.limits) }
  if (options?.spoolThreshold !== undefined) spoolThreshold = resolveInteger('readMultipart(options).spoolThreshold', options.spoolThreshold)
  return { limits, spoolThreshold, stallTimeout: plugin.stallTimeout, log: request.log }
}

function submitParse (request: FastifyRequest, scheduler: Scheduler, plugin: ResolvedOptions, upload: UploadSender): Entry {
  const task: ParseTask = { type: 'blocking:parse', slot: -1, upload: upload.spec }
  return scheduler.submit({
    task,
    lane: 'request',
    // The route's pattern, not its URL: labels end up in logs and metrics.
    label: `${request.method} ${request.routeOptions.url ?? request.url}: readMultipart()`,
    timeout: plugin.taskTimeout,
    transferList: [upload.spec.port],
    stream: true
  })
}

/**
 * Spooled files live until the response has been sent, and the channel
 * until the task is over: a pool may hand the task to a thread later than
 * it was dispatched, and the worker's end must still be open then. A client
 * that goes away first takes the task out of the queue if it is still there
 * (its body's end tells a running parse to stop).
 */
function cleanupWhenOver (upload: UploadSender, scheduler: Scheduler, entry: Entry, reply: FastifyReply | null): void {
  const over = entry.promise.then(ignore, ignore)
  if (reply !== null) {
    reply.raw.once('close', () => {
      scheduler.cancel(entry)
      void over.then(upload.cleanup)
    })
  } else {
    void over.then(upload.cleanup)
  }
}

function ignore (): void {}

function parsedResult (outcome: Outcome): ReadMultipartResult {
  if (outcome.kind === PayloadKind.Skipped) throw new FST_BLOCKING_MULTIPART_INVALID('the request body ended early (the client went away)')
  const result = payloadOf(outcome) as ReadMultipartResult
  for (const file of result.files) {
    if (file.buffer !== undefined) file.buffer = Buffer.from(file.buffer.buffer, file.buffer.byteOffset, file.buffer.byteLength)
  }
  return result
}
