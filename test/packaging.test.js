// What the package ships: source maps that name files it contains, and a
// TypeScript app written as the docs show that tsc accepts.
import { test } from 'tap'
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join, posix } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

const run = promisify(execFile)
const root = join(dirname(fileURLToPath(import.meta.url)), '..')

test('every source map and declaration map names files that are in the package', async (t) => {
  const { stdout } = await run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root })
  const files = new Set(JSON.parse(stdout)[0].files.map((f) => f.path))
  const maps = [...files].filter((f) => f.endsWith('.map'))
  t.ok(maps.length > 0, 'maps are shipped')
  const missing = []
  for (const map of maps) {
    const { sources } = JSON.parse(readFileSync(join(root, map), 'utf8'))
    for (const source of sources) {
      const path = posix.normalize(posix.join(posix.dirname(map), source))
      if (!files.has(path)) missing.push(`${map} -> ${path}`)
    }
  }
  t.same(missing, [], 'no map points at a file the package lacks')
})

test('the TypeScript app of the docs (imports ./x.js) type-checks with tsc', async (t) => {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc')
  const args = ['--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', '--types', 'node', '--skipLibCheck']
  const { stdout } = await run(process.execPath, [tsc, ...args, join(root, 'test/fixtures/ts-app.ts')], { cwd: root }).catch((err) => err)
  t.equal(stdout, '', 'tsc reports nothing')
})
