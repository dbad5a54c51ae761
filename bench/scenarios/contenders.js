// How the report names the servers of bench/servers/server.js.
export const labels = {
  inline: 'inline (main thread)',
  piscina: "blocking, `pool: 'piscina'`",
  tinypool: "blocking, `pool: 'tinypool'`",
  'by-hand': 'async route + `piscina.run()` by hand'
}

export const blockingPools = ['piscina', 'tinypool']
