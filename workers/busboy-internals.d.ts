// The one file of @fastify/busboy's that the plugin uses beyond its entry point
// (workers/multipart-scan.ts reads part headers exactly as busboy does).
declare module '@fastify/busboy/lib/utils/parseParams.js' {
  /** `type; key=value; ...` as `[type, [key, value], ...]` (RFC 2231/5987 values decoded). */
  export default function parseParams (value: string): Array<string | [string, string | undefined]>
}
