// A stock y-websocket client, remote-controlled over stdin/stdout with JSON lines, so the
// Python tests can drive the real JS yjs + y-websocket packages against a collab server.
//
//   node yclient.mjs ws://127.0.0.1:PORT ROOM [--ack] [--token=JWT]
// stdin:  {"id": 1, "cmd": "insert", "index": 0, "text": "hi"}
// stdout: {"id": 1, "ok": true, "result": ...}   or {"event": "status", "status": "connected"}
import readline from 'node:readline'
import WebSocket from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'

const [serverUrl, room, ...flags] = process.argv.slice(2)
const doc = new Y.Doc()
const text = doc.getText('content')
const map = doc.getMap('map')
const array = doc.getArray('array')
const params = {}
if (flags.includes('--ack')) params.ack = '1'
const tokenFlag = flags.find((flag) => flag.startsWith('--token='))
if (tokenFlag) params.token = tokenFlag.slice('--token='.length)
const provider = new WebsocketProvider(serverUrl, room, doc, {
  WebSocketPolyfill: WebSocket,
  disableBc: true,
  params,
  maxBackoffTime: 500
})
const closes = []
provider.on('status', ({ status }) => emit({ event: 'status', status }))
provider.on('connection-close', (event) => {
  if (event) closes.push({ code: event.code, reason: event.reason })
})

function emit (obj) { process.stdout.write(JSON.stringify(obj) + '\n') }

function until (predicate, timeoutMs = 10000) {
  return new Promise((resolve, reject) => {
    const started = Date.now()
    const check = () => {
      if (predicate()) return resolve(true)
      if (Date.now() - started > timeoutMs) return reject(new Error('timed out'))
      setTimeout(check, 10)
    }
    check()
  })
}

const commands = {
  synced: () => until(() => provider.synced),
  insert: ({ index, text: s }) => text.insert(index ?? text.length, s),
  delete: ({ index, length }) => text.delete(index, length),
  text: () => text.toString(),
  waitText: ({ equals, contains, timeout }) => until(() =>
    equals !== undefined ? text.toString() === equals : text.toString().includes(contains), timeout),
  mapSet: ({ key, value }) => map.set(key, value),
  map: () => map.toJSON(),
  arrayPush: ({ values }) => array.push(values),
  array: () => array.toJSON(),
  setAwareness: ({ state }) => provider.awareness.setLocalState(state),
  awareness: () => Object.fromEntries(
    [...provider.awareness.getStates()].map(([id, state]) => [String(id), state])),
  clientId: () => doc.clientID,
  disconnect: () => provider.disconnect(),
  connect: () => provider.connect(),
  closes: () => closes,
  wsConnected: () => provider.wsconnected,
  exit: () => { provider.destroy(); setTimeout(() => process.exit(0), 50) }
}

readline.createInterface({ input: process.stdin }).on('line', async (line) => {
  const { id, cmd, ...args } = JSON.parse(line)
  try {
    const result = await commands[cmd](args)
    emit({ id, ok: true, result: result === undefined ? null : result })
  } catch (error) {
    emit({ id, ok: false, error: String(error) })
  }
})
process.stdin.on('end', () => { provider.destroy(); process.exit(0) })
