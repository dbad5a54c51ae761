// Fastify's own style (neostandard), with TypeScript.
import neostandard from 'neostandard'

export default [
  ...neostandard({
    ts: true,
    ignores: ['dist/**', 'coverage/**', '.tap/**', 'node_modules/**', 'bench/results/**', '.scratch/**']
  }),
  {
    rules: {
      // `void promise` marks a promise left to run on purpose (its failures are handled where it is made).
      'no-void': ['error', { allowAsStatement: true }]
    }
  }
]
