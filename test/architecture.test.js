// The source tree's dependencies point one way: lib/ (the main thread) and
// workers/ (the pool's threads) import the leaf layer lib/common/, which imports
// neither, and never each other; there are no import cycles.
import { test } from 'tap'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')

function sources (dir) {
  const out = []
  for (const name of readdirSync(join(root, dir))) {
    const path = join(dir, name)
    if (statSync(join(root, path)).isDirectory()) out.push(...sources(path))
    else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) out.push(path)
  }
  return out
}

/** Relative imports of a source file, as repo paths of .ts files (type-only imports included). */
function importsOf (file) {
  const text = readFileSync(join(root, file), 'utf8')
  const found = new Set()
  for (const match of text.matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)'/g)) {
    found.add(relative(root, resolve(root, dirname(file), match[1])).replace(/\.js$/, '.ts'))
  }
  return [...found]
}

const files = [...sources('lib'), ...sources('workers'), ...sources('bin')]
const graph = new Map(files.map((file) => [file, importsOf(file)]))
const layer = (file) => file.startsWith('lib/common/') ? 'common' : file.split('/')[0]

test('every relative import names a source file that exists', async (t) => {
  const missing = []
  for (const [file, imports] of graph) {
    for (const target of imports) if (!graph.has(target)) missing.push(`${file} -> ${target}`)
  }
  t.same(missing, [])
})

test('lib/common/ imports nothing from lib/ or workers/; lib/ and workers/ never import each other', async (t) => {
  const allowed = {
    common: ['common'],
    lib: ['common', 'lib'],
    workers: ['common', 'workers'],
    bin: ['lib', 'common']
  }
  const wrong = []
  for (const [file, imports] of graph) {
    for (const target of imports) {
      if (!allowed[layer(file)].includes(layer(target))) wrong.push(`${file} -> ${target}`)
    }
  }
  t.same(wrong, [])
})

test('no import cycles', async (t) => {
  const cycles = []
  const state = new Map() // 1: on the path, 2: done
  const path = []
  const visit = (file) => {
    state.set(file, 1)
    path.push(file)
    for (const target of graph.get(file) ?? []) {
      if (state.get(target) === 1) cycles.push([...path.slice(path.indexOf(target)), target].join(' -> '))
      else if (!state.has(target)) visit(target)
    }
    path.pop()
    state.set(file, 2)
  }
  for (const file of graph.keys()) if (!state.has(file)) visit(file)
  t.same(cycles, [])
})
