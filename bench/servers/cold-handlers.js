// The blocking handler of the cold-start scenario (bench/scenarios/cold.js),
// in a module that does what a real one does when a thread imports it: it
// loads big dependencies (bullmq, with ioredis, msgpackr, lodash and luxon
// behind it, and pako: ~0.5-1 s in a fresh thread of a 2-core machine) and
// builds a lookup table. Its handler renders a small image and deflates it,
// code the JIT has never seen in a fresh thread.
//
// BENCH_PLUGIN (a file URL) names the plugin build to define the handler
// with, the same one bench/servers/cold.js registers: the scenario points
// both at an older commit's build for its "before" rows.
import 'bullmq'
import pako from 'pako'

const { defineHandler } = await import(process.env.BENCH_PLUGIN || 'fastify-blocking')

const SIZE = 128
// A gamma table and a palette: the kind of table modules build at import.
const gamma = new Float64Array(65536)
for (let i = 0; i < gamma.length; i++) gamma[i] = Math.pow(i / 65535, 1 / 2.2)
const palette = new Uint8Array(256 * 3)
for (let i = 0; i < 256; i++) {
  palette[i * 3] = Math.round(255 * gamma[(i * 257) & 0xffff])
  palette[i * 3 + 1] = (i * 7) & 0xff
  palette[i * 3 + 2] = 255 - i
}

/** A plasma image, box-blurred, mapped through the palette and deflated. */
function render (seed) {
  const field = new Float64Array(SIZE * SIZE)
  for (let y = 0; y < SIZE; y++) {
    for (let x = 0; x < SIZE; x++) {
      field[y * SIZE + x] = Math.sin(x / 9 + seed) + Math.sin(y / 7) + Math.sin((x + y) / 11) + Math.sin(Math.hypot(x - 64, y - 64) / 5)
    }
  }
  const blurred = new Float64Array(SIZE * SIZE)
  for (let y = 1; y < SIZE - 1; y++) {
    for (let x = 1; x < SIZE - 1; x++) {
      let sum = 0
      for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) sum += field[(y + dy) * SIZE + x + dx]
      blurred[y * SIZE + x] = sum / 9
    }
  }
  const rgb = new Uint8Array(SIZE * SIZE * 3)
  for (let i = 0; i < blurred.length; i++) {
    const c = Math.max(0, Math.min(255, Math.round((blurred[i] + 4) * 32)))
    rgb[i * 3] = palette[c * 3]
    rgb[i * 3 + 1] = palette[c * 3 + 1]
    rgb[i * 3 + 2] = palette[c * 3 + 2]
  }
  return pako.deflate(rgb, { level: 6 }).length
}

export const image = defineHandler(import.meta.url, (request) => ({ bytes: render(Number(request.query.seed ?? 1)) }))
