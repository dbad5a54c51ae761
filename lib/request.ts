// A blocking request as it leaves the main thread: the route it belongs to,
// the plain-data snapshot a worker sees, and the watch on its client that
// cancels it when the client goes away.
import type { FastifyReply, FastifyRequest } from 'fastify'
import { ServerResponse } from 'node:http'
import { Socket } from 'node:net'
import { uncloneable } from './common/clone.js'
import { FST_BLOCKING_NOT_CLONEABLE } from './common/errors.js'
import type { RequestSnapshot } from './common/protocol.js'
import type { Entry, Meter } from './lane.js'
import type { ResolvedRouteOptions } from './options.js'
import type { Scheduler } from './scheduler.js'
import { kInFlight } from './symbols.js'

export interface BlockingRoute {
  /** The handler's identity (lib/common/define.ts). */
  fn: string
  /** Its number on the threads' channels (threads.ts). */
  number: number
  /** `GET /users/:id`: for errors and logs. */
  label: string
  /** The route's pattern. */
  url: string
  /** Its number on the threads' channels: its config travels once (threads.ts routeConfigs). */
  route: number
  /** A generator handler: the response streams (stream.ts). */
  generator: boolean
  options: ResolvedRouteOptions
  /** This route's counts and timings (stats().routes). */
  meter: Meter
}

/**
 * The request as a worker sees it: plain data, cloned on the way. Throws
 * FST_BLOCKING_NOT_CLONEABLE, naming it, for a request property (see
 * requestProperties) that cannot cross threads.
 */
export function snapshotOf (request: FastifyRequest, reply: FastifyReply, route: BlockingRoute): RequestSnapshot {
  const snapshot: RequestSnapshot = {
    id: request.id,
    method: request.method,
    url: request.url,
    routeUrl: route.url,
    params: request.params,
    query: request.query,
    headers: request.headers,
    body: request.body,
    bodyIsBuffer: Buffer.isBuffer(request.body),
    ip: request.ip,
    hostname: request.hostname,
    protocol: request.protocol,
    route: route.route
  }
  const names = route.options.requestProperties
  if (names.length > 0) {
    const properties: Record<string, unknown> = {}
    for (const name of names) {
      let problem: string | undefined
      try {
        const value = (request as unknown as Record<string, unknown>)[name]
        problem = uncloneable(value)
        properties[name] = value
      } catch (err) {
        problem = `reading it threw: ${(err as Error).message}`
      }
      if (problem !== undefined) {
        throw new FST_BLOCKING_NOT_CLONEABLE(`${route.label}: request.${name} cannot be sent to a worker: ${problem.replace(/^at /, `at request.${name}`)}`)
      }
    }
    snapshot.properties = properties
  }
  if (typeof (reply as { setCookie?: unknown }).setCookie === 'function') snapshot.cookies = true
  return snapshot
}

type WatchedSocket = Socket & { [kInFlight]?: Set<Entry> }

/**
 * Cancels `entry` (scheduler.cancel()) if its client goes away before it
 * settles. A socket is watched once, with one 'close' listener for every
 * request it carries, not one listener a request; a response that is not on
 * a socket of its own (app.inject(), HTTP/2) is watched by itself, when it is
 * known (`reply`). Returns what unwatch() takes.
 */
export function watchClient (request: FastifyRequest, reply: FastifyReply | undefined, scheduler: Scheduler, entry: Entry): Set<Entry> | (() => void) {
  const socket = request.raw.socket as WatchedSocket | undefined
  if (socket instanceof Socket && (reply === undefined || reply.raw instanceof ServerResponse)) {
    let inFlight = socket[kInFlight]
    if (inFlight === undefined) {
      const entries = new Set<Entry>()
      inFlight = entries
      socket[kInFlight] = entries
      socket.once('close', () => {
        for (const gone of entries) scheduler.cancel(gone)
        entries.clear()
      })
    }
    // Gone before its handler was called: its 'close' has been and gone.
    if (socket.destroyed) scheduler.cancel(entry)
    else inFlight.add(entry)
    return inFlight
  }
  if (reply === undefined) return () => {}
  const raw = reply.raw
  const onClose = (): void => {
    if (!raw.writableFinished) scheduler.cancel(entry)
  }
  raw.once('close', onClose)
  return () => raw.removeListener('close', onClose)
}

export function unwatch (watched: Set<Entry> | (() => void), entry: Entry): void {
  if (typeof watched === 'function') watched()
  else watched.delete(entry)
}
