// Tasks of the durable example: they run in a worker process's pool, on
// whichever machine took the job. Each writes a line to the outbox file
// ($OUTBOX, else stdout) so you can see who did what.
import { appendFileSync } from 'node:fs'
import { pbkdf2Sync } from 'node:crypto'
import { defineTask } from 'fastify-blocking'

function write (line) {
  const text = JSON.stringify({ ...line, pid: process.pid }) + '\n'
  if (process.env.OUTBOX) appendFileSync(process.env.OUTBOX, text)
  else process.stdout.write(text)
}

// A name of its own: jobs keep it if this file moves.
export const sendWelcome = defineTask(import.meta.url, (to, signedUpAt) => {
  // A Date argument arrives as a Date.
  write({ task: 'email.welcome', to, signedUpAt: signedUpAt.toISOString() })
}, { name: 'email.welcome' })

// No name given: its jobs are named 'examples/durable/tasks/email.js#renderReport',
// the path from the app's root (the nearest package.json) and the export name.
export const renderReport = defineTask(import.meta.url, (reportId) => {
  // CPU-bound: it runs on a pool thread, so the worker keeps renewing the job's lock meanwhile.
  const digest = pbkdf2Sync(String(reportId), 'salt', 200_000, 32, 'sha256').toString('hex')
  write({ task: 'report', reportId, digest: digest.slice(0, 16) })
  return { digest }
})
