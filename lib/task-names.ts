// Stable task names: what a durable job is called in Redis, the same on every
// machine. A task's identity inside one process is `moduleUrl#n` (define.ts),
// an absolute path; another machine has the same modules somewhere else. So a
// job is named by `{ name }` when defineTask was given one, else by the
// module's path from the app's root (the nearest directory above it with a
// package.json) and the task's export name: `tasks/email.js#send`.
import { existsSync } from 'node:fs'
import { dirname, join, relative, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import { allDefinitions, definitionOf, learnNames, type Definition } from './common/define.js'
import { FST_BLOCKING_INVALID_OPTION } from './common/errors.js'

const roots = new Map<string, string>()

/** The app's root for a module file: the nearest directory above it with a package.json (else its own directory). */
export function rootOf (file: string): string {
  const start = dirname(file)
  const known = roots.get(start)
  if (known !== undefined) return known
  let dir = start
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) break
    const up = dirname(dir)
    if (up === dir) {
      dir = start
      break
    }
    dir = up
  }
  roots.set(start, dir)
  return dir
}

const names = new WeakMap<Definition, string>()

/**
 * A task's stable name. The export name comes from define.ts, which learns
 * it once the module has loaded (TaskTable.refresh() makes sure it has); a
 * name made of the index is not kept, in case the export name comes later.
 */
export function stableName (definition: Definition): string {
  if (definition.given !== undefined) return definition.given
  let name = names.get(definition)
  if (name === undefined) {
    const file = fileURLToPath(definition.moduleUrl)
    const unnamed = definition.name === `${definition.moduleUrl.slice(definition.moduleUrl.lastIndexOf('/') + 1)}#${definition.index}`
    name = `${relative(rootOf(file), file).split(sep).join('/')}#${unnamed ? definition.index : definition.name}`
    if (!unnamed) names.set(definition, name)
  }
  return name
}

/** The tasks this process can run, by stable name. */
export class TaskTable {
  private readonly byName = new Map<string, Definition>()
  private readonly seen = new Set<string>()

  /**
   * Takes in the task modules loaded since the last call (their export names
   * first). Throws FST_BLOCKING_INVALID_OPTION when two tasks share a name.
   */
  async refresh (): Promise<void> {
    const fresh = allDefinitions().filter(({ moduleUrl }) => !this.seen.has(moduleUrl))
    for (const { moduleUrl } of fresh) {
      this.seen.add(moduleUrl)
      // Already loaded: import() hands back its namespace. A module that threw
      // while loading has no namespace; its tasks keep their function names.
      const namespace = await import(moduleUrl).catch(() => undefined) as Record<string, unknown> | undefined
      if (namespace !== undefined) learnNames(moduleUrl, namespace)
    }
    const clashes: string[] = []
    for (const { fns } of fresh) {
      for (const fn of fns) {
        const definition = definitionOf(fn)
        if (definition?.kind !== 'task') continue
        const problem = this.add(definition)
        if (problem !== undefined) clashes.push(problem)
      }
    }
    if (clashes.length > 0) throw new FST_BLOCKING_INVALID_OPTION(clashes.join('\n'))
  }

  /** Records a task under its name; says why not when another task has it. */
  add (definition: Definition): string | undefined {
    const name = stableName(definition)
    const other = this.byName.get(name)
    if (other === undefined) {
      this.byName.set(name, definition)
      return undefined
    }
    if (other === definition) return undefined
    return `two tasks are named '${name}' (${other.id} and ${definition.id}): ` +
      'task names must be unique, give one of them another with defineTask(import.meta.url, fn, { name })'
  }

  /** Whether refresh() has taken in this module (its export names are known). */
  has (moduleUrl: string): boolean {
    return this.seen.has(moduleUrl)
  }

  get (name: string): Definition | undefined {
    return this.byName.get(name)
  }

  get size (): number {
    return this.byName.size
  }
}
