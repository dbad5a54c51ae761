// Shared by the examples: each app.js exports build() for its test, and starts
// a server only when it is the script node was asked to run.
import { realpathSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

/** Like Python's `if __name__ == '__main__'`: `await startIfMain(import.meta.url, build)`. */
export async function startIfMain (moduleUrl, build) {
  const script = process.argv[1]
  if (script === undefined || realpathSync(script) !== fileURLToPath(moduleUrl)) return
  const app = await build({ logger: true })
  await app.listen({ host: '127.0.0.1', port: Number(process.env.PORT ?? 3000) })
  for (const signal of ['SIGINT', 'SIGTERM']) process.once(signal, () => app.close())
}
