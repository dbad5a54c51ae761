// Picks the pool: each backend is loaded only when chosen, so an app that uses
// one never imports the other.
import type { PoolAdapter, PoolConfig } from './adapter.js'

export async function createPool (kind: 'piscina' | 'tinypool', config: PoolConfig): Promise<PoolAdapter> {
  const mod = kind === 'piscina' ? await import('./piscina.js') : await import('./tinypool.js')
  return mod.create(config)
}
