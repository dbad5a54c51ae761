// The servers of bench/servers/server.js, and how the report names them.
export const contenders = ['inline', 'piscina', 'tinypool', 'by-hand']

export const labels = {
  inline: 'inline (main thread)',
  piscina: "blocking, `pool: 'piscina'`",
  tinypool: "blocking, `pool: 'tinypool'`",
  'by-hand': 'async route + `piscina.run()` by hand'
}

export const blockingPools = ['piscina', 'tinypool']
