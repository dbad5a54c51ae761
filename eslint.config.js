// Fastify's own style (neostandard), with TypeScript.
import neostandard from 'neostandard'

export default [
  { ignores: ['dist/', 'coverage/', '.tap/', 'bench/results/', '.scratch/'] },
  ...neostandard({ ts: true }),
  {
    rules: {
      // `void promise` marks a promise left to run on purpose (its failures are handled where it is made).
      'no-void': ['error', { allowAsStatement: true }]
    }
  },
  {
    files: ['**/*.ts'],
    rules: {
      // TypeScript checks redeclarations itself, and a const with a type of the
      // same name (PayloadKind, SlotState) is the enum idiom used here.
      '@typescript-eslint/no-redeclare': 'off'
    }
  }
]
