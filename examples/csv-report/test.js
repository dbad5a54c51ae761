import { test } from 'tap'
import { build } from './app.js'

// Over a real socket: app.inject() with a FormData of two or more files crashes
// the process (the plugin moves the chunks' memory to the worker, and
// light-my-request yields the same chunk again).
async function start (t) {
  const app = await build()
  t.teardown(() => app.close())
  const base = await app.listen({ port: 0, host: '127.0.0.1' })
  const post = (body) => fetch(`${base}/report`, { method: 'POST', body })
  const upload = (files) => {
    const form = new FormData()
    for (const [name, text] of Object.entries(files)) form.append(name, new Blob([text], { type: 'text/csv' }), `${name}.csv`)
    return post(form)
  }
  return { post, upload }
}

test('a report of each column, from a small (in memory) and a large (spooled) file', async (t) => {
  const { upload } = await start(t)

  const res = await upload({ file: 'region,product,amount\r\nnorth,"tea, green",10\nsouth,"say ""hi""",32.5\nnorth,coffee,\n' })
  t.equal(res.status, 200)
  t.equal(res.headers.get('content-type'), 'text/plain; charset=utf-8')
  t.equal(await res.text(), [
    'file.csv: 3 rows, 3 columns',
    'region: text, 2 distinct',
    'product: text, 3 distinct',
    'amount: numbers, sum 42.5, min 10, max 32.5, mean 21.25',
    ''
  ].join('\n'))

  const rows = Array.from({ length: 50_000 }, (_, i) => `${i},item ${i % 7}`)
  const big = await upload({ file: `n,label\n${rows.join('\n')}\n` }) // ~700 KiB: spooled to disk
  t.equal(big.status, 200)
  t.match(await big.text(), /^file\.csv: 50000 rows, 2 columns\nn: numbers, sum 1249975000, min 0, max 49999, mean 24999\.5\nlabel: text, 7 distinct\n$/)
})

test('bad uploads: 400, 422 and 413', async (t) => {
  const { post, upload } = await start(t)

  const noFile = await upload({ other: 'a,b\n' })
  t.equal(noFile.status, 400)
  t.equal((await noFile.json()).message, 'send the CSV as a file field named "file"')

  const notMultipart = await post('a,b\n1,2\n') // text/plain: no request.files
  t.equal(notMultipart.status, 400)

  const ragged = await upload({ file: 'a,b\n1,2\n3\n' })
  t.equal(ragged.status, 422)
  t.equal((await ragged.json()).message, 'line 3 has 1 fields, the header 2')

  const twoFiles = await upload({ file: 'a\n1\n', more: 'b\n2\n' })
  t.equal(twoFiles.status, 413)
  t.equal((await twoFiles.json()).code, 'FST_BLOCKING_MULTIPART_LIMIT')
})
