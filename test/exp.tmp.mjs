import Fastify from 'fastify'
import blocking from 'fastify-blocking'
import { returnsFn, echo, exits, id } from './fixtures/bad.js'
for (const pool of ['piscina','tinypool']) {
const app = Fastify()
await app.register(blocking, { pool, maxThreads: 1 })
app.addContentTypeParser('application/x-fn', (req, payload, done) => done(null, { f () {} }))
app.get('/fn', { blocking: true }, returnsFn)
app.post('/echo', { blocking: true }, echo)
app.get('/exit', { blocking: true }, exits)
await app.ready()
for (const [m,u,ct] of [['GET','/fn'],['GET','/fn'],['POST','/echo','application/x-fn'],['POST','/echo','application/json'],['GET','/exit'],['POST','/echo','application/json'],['GET','/exit'],['POST','/echo','application/json']]) {
  const r = await app.inject({method:m,url:u,headers: ct?{'content-type':ct}:{}, payload: ct ? '{"a":1}' : undefined}); console.log(pool, u, r.statusCode, r.body)
}
try { await app.blocking.run(id, () => 1) } catch (e) { console.log('run', e.code, e.message) }
console.log(await app.blocking.run(id, 5))
await app.close()
}
