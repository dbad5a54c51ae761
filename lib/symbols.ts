// Every private key the plugin sets on objects it does not own, in one place
// (as Fastify core's lib/symbols.js). The request and reply keys are declared
// once, with their starting value (null), as decorations (lib/decorators.ts),
// so that every request and reply keeps one shape. A context created before
// the plugin was registered does not get value decorations (Fastify copies
// them into a context when it is made), so readers take undefined as null.
import type { FastifyReply } from 'fastify'

/** request: a multipart body held back for the worker, and its own content type (multipart.ts). */
export const kUploadBody = Symbol('fastify-blocking.upload-body')
export const kUploadContentType = Symbol('fastify-blocking.upload-content-type')
/** request: its reply, for a readMultipart() call, which has none of its own (multipart.ts). */
export const kUploadReply = Symbol('fastify-blocking.upload-reply')
/** reply: background tasks called before the response was sent (background.ts). */
export const kBackgroundPending = Symbol('fastify-blocking.background')
/** reply: durable jobs added before the response was sent (queue.ts). */
export const kQueueAdds = Symbol('fastify-blocking.queue-adds')

/** A socket: the entries its 'close' cancels (request.ts). */
export const kInFlight = Symbol('fastify-blocking.in-flight')
/** A handler this plugin made: the route it serves, so that a route seen twice (the automatic HEAD route) is not wrapped twice (route.ts). */
export const kBlockingHandler = Symbol('fastify-blocking.handler')
/** A function detectBlocking already times: the automatic HEAD route shares its GET route's functions (detect.ts). */
export const kTimed = Symbol('fastify-blocking.timed')
/** An app: the routes declared on it, to find blocking routes the plugin did not see (unseen.ts). */
export const kDeclared = Symbol('fastify-blocking.declared')

/**
 * Adds `item` to the list the reply keeps under `key`. The list is made on
 * first use, with one 'close' listener on the raw response (it comes once the
 * response is over: sent, or cut by the client) that hands every item to
 * `atClose`.
 */
export function addToReply<T> (reply: FastifyReply, key: typeof kBackgroundPending | typeof kQueueAdds, item: T, atClose: (item: T) => void): void {
  const state = reply as FastifyReply & Record<typeof key, T[] | null | undefined>
  let list = state[key]
  if (list == null) {
    const items: T[] = []
    list = items
    state[key] = items
    reply.raw.once('close', () => {
      for (const each of items) atClose(each)
    })
  }
  list.push(item)
}

/** The request and reply decorations above, each with its starting value. */
export const requestState = [kUploadBody, kUploadContentType, kUploadReply] as const
export const replyState = [kBackgroundPending, kQueueAdds] as const
