// Shared by the examples' handler modules (so it is imported by worker threads too: no side effects).

/** An error the app's error handler answers with `statusCode`; it keeps its status when thrown in a worker. */
export function httpError (statusCode, message) {
  return Object.assign(new Error(message), { statusCode })
}
