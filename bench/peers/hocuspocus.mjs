// Hocuspocus benchmark target: `node hocuspocus.mjs --port PORT [--sqlite PATH]`.
// Default configuration (debounce 2 s, maxDebounce 10 s, unload on last disconnect), as a
// user would deploy it; --sqlite adds @hocuspocus/extension-sqlite (one row per document).
import { Server } from '@hocuspocus/server'

const args = process.argv.slice(2)
const opt = (name) => {
  const i = args.indexOf(name)
  return i === -1 ? null : args[i + 1]
}
const port = Number(opt('--port') ?? 1234)
const sqlitePath = opt('--sqlite')

const extensions = []
if (sqlitePath) {
  const { SQLite } = await import('@hocuspocus/extension-sqlite')
  extensions.push(new SQLite({ database: sqlitePath }))
}

const server = new Server({ port, address: '127.0.0.1', quiet: true, extensions })
await server.listen()
console.log(`hocuspocus listening on 127.0.0.1:${port}${sqlitePath ? ' sqlite=' + sqlitePath : ''}`)
