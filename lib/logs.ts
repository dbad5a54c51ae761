// Lines a handler wrote with request.log in a worker, written on the main
// thread with the request's logger (its reqId, its level, its serializers).
import type { FastifyRequest } from 'fastify'
import type { LogLine, SerializedError } from './common/protocol.js'

export type Logger = FastifyRequest['log']

export function writeLine (log: Logger, line: LogLine): void {
  const obj = line.obj
  if (obj === undefined) {
    log[line.level](line.msg as string)
    return
  }
  if (line.errors !== undefined) {
    for (const key of line.errors) obj[key] = reviveError(obj[key] as SerializedError)
  }
  log[line.level](obj, line.msg)
}

export function writeLogs (log: Logger, lines: LogLine[]): void {
  for (const line of lines) writeLine(log, line)
}

/** The worker's error, rebuilt so that Fastify's error handler sees what the handler threw (its stack stays in the logs). */
const builtinErrors: Record<string, ErrorConstructor | undefined> = {
  EvalError, RangeError, ReferenceError, SyntaxError, TypeError, URIError
}

export function reviveError (serialized: SerializedError): Error {
  // A builtin error comes back as its own class, so that loggers report its type.
  const Ctor = builtinErrors[serialized.name] ?? Error
  const err = new Ctor(serialized.message) as Error & Record<string, unknown>
  if (serialized.props !== undefined) Object.assign(err, serialized.props)
  err.name = serialized.name
  if (serialized.code !== undefined) err.code = serialized.code
  if (serialized.statusCode !== undefined) err.statusCode = serialized.statusCode
  if (serialized.stack !== undefined) err.stack = serialized.stack
  return err
}
