// A streaming export: a generator handler whose chunks go out as the client
// reads them. Worker threads import this module; it must not import app.js
// (that would build the app in every thread, which fastify-blocking refuses).
import { defineHandler, defineTask } from 'fastify-blocking'

const ROWS_PER_CHUNK = 1000 // ~30 KiB a chunk: fewer, larger messages between threads

function row (id) {
  return `${id},user${id},${(id * 7919) % 1000}\n` // stands in for a synchronous cursor's row
}

// This thread's exports (module state is per thread), for the test to look at.
const progress = { open: 0, rows: 0 }
export const exportProgress = defineTask(import.meta.url, () => progress)

/** GET /export?rows=N: `id,name,score` then N rows. */
export const exportCsv = defineHandler(import.meta.url, function * (request, reply) {
  const { rows } = request.query
  // Status and headers: before the first yield.
  reply.type('text/csv; charset=utf-8').header('content-disposition', 'attachment; filename="export.csv"')
  yield 'id,name,score\n'
  progress.open++
  try {
    for (let id = 1; id <= rows; id += ROWS_PER_CHUNK) {
      let chunk = ''
      for (let i = id; i < id + ROWS_PER_CHUNK && i <= rows; i++) chunk += row(i)
      progress.rows += Math.min(ROWS_PER_CHUNK, rows - id + 1)
      // Resumes only once the client has read enough: a slow reader holds the
      // generator here, without holding the thread.
      yield chunk
    }
  } finally {
    // Runs when the client goes away too: the place to release a cursor.
    // (Do not log here: request.log lines of a stream whose client left are dropped.)
    progress.open--
  }
})
