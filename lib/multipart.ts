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
import { MessageChannel, receiveMessageOnPort } from 'node:worker_threads'
import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest, onRequestHookHandler, preValidationHookHandler } from 'fastify'
import { FST_BLOCKING_MULTIPART_INVALID } from './common/errors.js'
import { resolveInteger, resolveLimits, type ResolvedOptions } from './options.js'
import { payloadOf, refused } from './reply.js'
import { kUploadBody, kUploadContentType, kUploadReply } from './symbols.js'
import type { Scheduler } from './scheduler.js'
import type { ReadMultipartOptions, ReadMultipartResult } from './common/types.js'
import { copyBytes, ownBuffer } from './common/clone.js'
import { PayloadKind, type ParseTask, type UploadControl, type UploadLimits, type UploadMessage, type UploadSpec, unknownMessage } from './common/protocol.js'

const PRIVATE_TYPE = 'application/x-fastify-blocking-multipart'
/** Bytes of a body in flight to the worker before it grants more. */
export const UPLOAD_HIGH_WATER_MARK = 1_048_576

type UploadRequest = FastifyRequest & { [kUploadContentType]: string | null, [kUploadBody]: Readable | null, [kUploadReply]: FastifyReply | null }

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
  if (original !== null) request.headers['content-type'] = original
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

export interface Upload {
  spec: UploadSpec
  /**
   * Set by the caller once the task is submitted: called when the worker starts
   * taking bytes (the task then waits for its client, without holding a
   * thread's place) and when the body is parsed.
   */
  onWaiting?: () => void
  onParsed?: () => void
  /** Temporary files the worker reported: deleted by cleanup() (the worker deletes them too, unless it died). */
  spooled: string[]
  cleanup: () => Promise<void>
}

/** How an upload is parsed, and how long its client may send nothing (0: no limit), said in `log`. */
export interface UploadOptions {
  limits: UploadLimits
  spoolThreshold: number
  stallTimeout: number
  log: FastifyBaseLogger
}

/**
 * Starts moving a body's bytes to the port a task carries. Nothing is sent
 * beyond the credit the worker grants: a worker that falls behind pauses the
 * body, and so the client's socket. Once the worker has started, a client
 * that sends nothing for `stallTimeout` ms while the worker waits for its
 * bytes loses its connection (the upload then ends as if it had gone).
 */
export function startUpload (body: Readable, contentType: string, { limits, spoolThreshold, stallTimeout, log }: UploadOptions): Upload {
  const { port1: port, port2 } = new MessageChannel()
  const spooled: string[] = []
  let credit = UPLOAD_HIGH_WATER_MARK
  let waiting = false
  let stopped = false
  let stall: NodeJS.Timeout | undefined
  /** (Re)starts the stall clock while the worker waits for the client, else stops it. */
  const watchStall = (): void => {
    clearTimeout(stall)
    stall = undefined
    if (stallTimeout > 0 && waiting && !stopped && credit > 0 && !body.readableEnded) stall = setTimeout(stalled, stallTimeout).unref()
  }
  const stalled = (): void => {
    log.warn(`fastify-blocking: an upload's client sent nothing for ${stallTimeout} ms (stallTimeout); the connection is closed`)
    body.destroy()
  }
  const post = (message: UploadMessage, transfer?: ArrayBuffer[]): void => port.postMessage(message, transfer)

  // A chunk read from a real socket is a fresh allocation that nobody else
  // holds: when it owns its whole buffer, it is moved. Anything else (a slice
  // of a larger read, or bytes app.inject() or a preParsing stream may still
  // hold) is copied once into memory of its own, which is then moved.
  const fromSocket = body instanceof IncomingMessage && body.socket instanceof Socket
  const onData = (chunk: Buffer): void => {
    const bytes = fromSocket && ownBuffer(chunk) !== undefined ? chunk : copyBytes(chunk)
    post({ type: 'upload:chunk', chunk: bytes }, [bytes.buffer as ArrayBuffer])
    credit -= bytes.byteLength
    if (credit <= 0) body.pause()
    watchStall()
  }
  const onEnd = (): void => {
    watchStall()
    post({ type: 'upload:end' })
  }
  const onAborted = (): void => {
    if (!stopped) post({ type: 'upload:abort' })
    stop()
  }
  const stop = (): void => {
    if (stopped) return
    stopped = true
    watchStall()
    body.removeListener('data', onData)
    body.removeListener('end', onEnd)
    body.removeListener('error', onAborted)
    body.removeListener('aborted', onAborted)
    body.removeListener('close', onClosed)
    body.pause()
  }
  const onClosed = (): void => {
    if (!body.readableEnded) onAborted()
  }
  port.on('message', (message: UploadControl) => {
    switch (message.type) {
      case 'upload:more':
        if (!waiting) {
          waiting = true
          upload.onWaiting?.()
        }
        credit += message.credit
        if (credit > 0 && !stopped && body.isPaused()) body.resume()
        watchStall()
        break
      case 'upload:parsed':
        upload.onParsed?.()
        break
      case 'upload:spooled':
        spooled.push(message.path)
        break
      case 'upload:stop':
        stop()
        break
      default:
        // A bug on one side of the protocol: said loudly; the worker's parse then fails when the port closes.
        log.error({ err: unknownMessage('upload', message) }, 'fastify-blocking: upload stopped')
        stop()
        port.close()
    }
  })
  // The worker closes its end when it has parsed the body (or given up on it).
  port.on('close', stop)
  body.on('data', onData)
  body.on('end', onEnd)
  body.on('error', onAborted)
  body.on('aborted', onAborted)
  body.on('close', onClosed)
  // The client may have gone before we listened.
  if (body.destroyed && !body.readableEnded) onAborted()

  const upload: Upload = {
    spec: { port: port2, contentType, limits, spoolThreshold },
    spooled,
    async cleanup () {
      // The task's outcome comes back over the pool's channel, not this port:
      // it can be seen before the worker's messages here, which closing the
      // port would drop. Take the paths it reported from them first.
      for (let next = receiveMessageOnPort(port); next !== undefined; next = receiveMessageOnPort(port)) {
        const message = next.message as UploadControl
        if (message.type === 'upload:spooled') spooled.push(message.path)
      }
      stop()
      port.close()
      // The worker's end too, in case it never left this thread (the task was
      // dropped before a thread took it): closing ours alone would keep it, and
      // the chunks queued in it, alive for good. Once transferred this is a no-op.
      port2.close()
      await Promise.all(spooled.splice(0).map((path) => unlink(path).catch(() => {
        // Already deleted by the worker: the usual case.
      })))
    }
  }
  return upload
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
  let limits = plugin.multipart.limits
  let spoolThreshold = plugin.multipart.spoolThreshold
  try {
    if (options?.limits !== undefined) limits = { ...limits, ...resolveLimits('readMultipart(options).limits', options.limits) }
    if (options?.spoolThreshold !== undefined) spoolThreshold = resolveInteger('readMultipart(options).spoolThreshold', options.spoolThreshold)
  } catch (err) {
    return Promise.reject(err)
  }
  const upload = startUpload(found.body, found.contentType, { limits, spoolThreshold, stallTimeout: plugin.stallTimeout, log: request.log })
  const task: ParseTask = { type: 'blocking:parse', slot: -1, upload: upload.spec }
  let entry
  try {
    entry = scheduler.submit({
      task,
      lane: 'request',
      // The route's pattern, not its URL: labels end up in logs and metrics.
      label: `${request.method} ${request.routeOptions.url ?? request.url}: readMultipart()`,
      timeout: plugin.taskTimeout,
      transferList: [upload.spec.port],
      stream: true
    })
  } catch (err) {
    const reply = (request as UploadRequest)[kUploadReply]
    if (reply !== null) refused(reply, scheduler, err)
    void upload.cleanup()
    return Promise.reject(err)
  }
  const submitted = entry
  upload.onWaiting = () => scheduler.pause(submitted)
  upload.onParsed = () => scheduler.resume(submitted)
  // Spooled files live until the response has been sent, and the channel
  // until the task is over: a pool may hand the task to a thread later than
  // it was dispatched, and the worker's end must still be open then. A client
  // that goes away first takes the task out of the queue if it is still there
  // (its body's end tells a running parse to stop).
  const over = entry.promise.then(() => {}, () => {})
  const reply = (request as UploadRequest)[kUploadReply]
  if (reply !== null) {
    reply.raw.once('close', () => {
      scheduler.cancel(submitted)
      void over.then(() => upload.cleanup())
    })
  } else {
    void over.then(() => upload.cleanup())
  }
  return entry.promise.then((outcome) => {
    if (outcome.kind === PayloadKind.Skipped) throw new FST_BLOCKING_MULTIPART_INVALID('the request body ended early (the client went away)')
    const result = payloadOf(outcome) as ReadMultipartResult
    for (const file of result.files) {
      if (file.buffer !== undefined) file.buffer = Buffer.from(file.buffer.buffer, file.buffer.byteOffset, file.buffer.byteLength)
    }
    return result
  })
}
