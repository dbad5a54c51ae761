// How the servers of the stream, background and multipart scenarios start and
// stop: listen on 127.0.0.1 (port 0), print the address for the harness
// (bench/lib/harness.js startServer), close on SIGTERM.
export async function serve (app, name) {
  const address = await app.listen({ host: '127.0.0.1', port: 0 })
  process.stdout.write(`${name} listening on ${address}\n`)
  process.once('SIGTERM', () => app.close().then(() => process.exit(0)))
}
