// One benchmark client: a Y.Doc synced with a target server over one websocket.
//
// It speaks the wire protocols directly instead of using the y-websocket provider class, so
// that a thousand of them stay cheap:
//   - "yws": the y-websocket protocol (y-protocols PROTOCOL.md): [varUint type][payload],
//     type 0 = sync (step1 / step2 / update), 1 = awareness. The room is the URL path.
//   - "hocuspocus": every frame is prefixed with varString(documentName); the client sends
//     Auth (type 2, Token, token string, provider version) first and syncs once the server
//     answers Authenticated. The server also sends SyncReply (4) and SyncStatus (8) frames.
//   - "echo": the bare relay (bench/echo_app.py). No server state: the client counts as
//     synced once open, and only relayed updates arrive.
// A client is "synced" when it has applied the server's sync step 2 (echo: when open).
import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import * as syncProtocol from 'y-protocols/sync'
import WebSocket from 'ws'

const MSG_SYNC = 0
const MSG_AWARENESS = 1
const MSG_AUTH = 2
const MSG_QUERY_AWARENESS = 3
const MSG_HP_SYNC_REPLY = 4
const MSG_HP_STATELESS = 5
const MSG_HP_CLOSE = 7
const MSG_HP_SYNC_STATUS = 8
const MSG_HP_PING = 9
const MSG_HP_PONG = 10
const HP_AUTH_TOKEN = 0
const HP_AUTH_DENIED = 1
const HP_AUTH_OK = 2

const keepMask = () => {}

/** Renew awareness this often, as y-protocols' Awareness does (outdatedTimeout / 2). */
const AWARENESS_RENEW_MS = 15000

export class Client {
  /**
   * @param {object} o
   * @param {string} o.url    server base URL, e.g. ws://127.0.0.1:1234
   * @param {string} o.protocol "yws" | "hocuspocus" | "echo"
   * @param {string} o.room
   * @param {(msg: string) => void} o.onError
   * @param {boolean} [o.awareness] send an awareness state on connect and renew it
   * @param {string | null} [o.token] access token, sent as y-websocket's ?token= parameter
   */
  constructor ({ url, protocol, room, onError, awareness = true, token = null }) {
    this.url = url
    this.token = token
    this.protocol = protocol
    this.room = room
    this.onError = onError
    this.awareness = awareness
    this.doc = new Y.Doc()
    this.text = this.doc.getText('content')
    this.synced = false
    this.closedByUs = false
    this.ws = null
    this.framesIn = 0
    this.bytesIn = 0
    this.framesOut = 0
    this.bytesOut = 0
    /** Called after each remote sync/update frame was applied. */
    this.onRemote = null
    /** Called with the payload of each awareness frame (null: not decoded at all). */
    this.onAwareness = null
    this.awarenessClock = 0
    this.awarenessTimer = null
    this._prefix = null
    if (protocol === 'hocuspocus') {
      const e = encoding.createEncoder()
      encoding.writeVarString(e, room)
      this._prefix = encoding.toUint8Array(e)
    }
    /** Handles one incoming frame; the driver may swap in a queueing version. */
    this._receiveFrame = (bytes) => {
      try {
        this._receive(bytes)
      } catch (err) {
        this.onError(`${this.room}: bad frame: ${err && err.stack ? err.stack : err}`)
      }
    }
    this.doc.on('update', (update, origin) => {
      if (origin !== this) this._sendUpdate(update)
    })
  }

  _encoder (type) {
    const e = encoding.createEncoder()
    if (this._prefix !== null) encoding.writeUint8Array(e, this._prefix)
    encoding.writeVarUint(e, type)
    return e
  }

  _send (bytes) {
    if (this.ws === null || this.ws.readyState !== WebSocket.OPEN) {
      if (!this.closedByUs) this.onError(`${this.room}: send on a closed socket`)
      return
    }
    this.framesOut++
    this.bytesOut += bytes.length
    this.ws.send(bytes)
  }

  _sendUpdate (update) {
    const e = this._encoder(MSG_SYNC)
    syncProtocol.writeUpdate(e, update)
    this._send(encoding.toUint8Array(e))
  }

  _sendSyncStep1 () {
    const e = this._encoder(MSG_SYNC)
    syncProtocol.writeSyncStep1(e, this.doc)
    this._send(encoding.toUint8Array(e))
  }

  /**
   * An awareness update for this client alone (y-protocols awareness.js layout).
   * @param {object} [extra] more fields of the state (a cursor)
   */
  sendAwareness (extra = {}) {
    this.awarenessClock++
    const state = JSON.stringify({ ...extra, user: { name: `bench-${this.doc.clientID}`, color: '#30bced' } })
    const inner = encoding.createEncoder()
    encoding.writeVarUint(inner, 1)
    encoding.writeVarUint(inner, this.doc.clientID)
    encoding.writeVarUint(inner, this.awarenessClock)
    encoding.writeVarString(inner, state)
    const e = this._encoder(MSG_AWARENESS)
    encoding.writeVarUint8Array(e, encoding.toUint8Array(inner))
    this._send(encoding.toUint8Array(e))
  }

  /**
   * Open the socket and resolve once synced (or reject after timeoutMs).
   * @param {number} timeoutMs
   */
  connect (timeoutMs) {
    return new Promise((resolve, reject) => {
      let done = false
      const finish = (err) => {
        if (done) return
        done = true
        clearTimeout(timer)
        if (err) reject(err); else resolve(this)
      }
      const timer = setTimeout(() => finish(new Error(`${this.room}: not synced after ${timeoutMs} ms`)), timeoutMs)
      this._onSynced = () => finish(null)
      let path = this.protocol === 'hocuspocus' ? '/' : '/' + encodeURIComponent(this.room)
      if (this.token !== null) path += '?token=' + encodeURIComponent(this.token)
      // A constant frame mask: RFC 6455 masking guards proxies against cache poisoning, which
      // does not apply on loopback; ws's default draws 4 random bytes per frame, a measurable
      // share of the driver's CPU at thousands of frames per second.
      const ws = new WebSocket(this.url + path, {
        perMessageDeflate: false,
        maxPayload: 256 * 1024 * 1024,
        generateMask: keepMask
      })
      this.ws = ws
      ws.binaryType = 'nodebuffer'
      ws.on('open', () => {
        if (this.protocol === 'yws') {
          this._sendSyncStep1()
        } else if (this.protocol === 'hocuspocus') {
          const e = this._encoder(MSG_AUTH)
          encoding.writeVarUint(e, HP_AUTH_TOKEN)
          encoding.writeVarString(e, '')
          this._send(encoding.toUint8Array(e))
        } else {
          this._markSynced()
        }
      })
      ws.on('message', (data) => {
        this._receiveFrame(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
      })
      ws.on('error', (err) => {
        if (!done) finish(err)
        else if (!this.closedByUs) this.onError(`${this.room}: socket error: ${err.message}`)
      })
      ws.on('close', (code, reason) => {
        this._stopAwareness()
        if (!done) finish(new Error(`${this.room}: closed before sync (${code} ${reason})`))
        else if (!this.closedByUs) this.onError(`${this.room}: closed by server (${code} ${reason})`)
      })
    })
  }

  _markSynced () {
    if (this.synced) return
    this.synced = true
    if (this.awareness) {
      this.sendAwareness()
      this.awarenessTimer = setInterval(() => this.sendAwareness(), AWARENESS_RENEW_MS)
    }
    this._onSynced()
  }

  _stopAwareness () {
    if (this.awarenessTimer !== null) clearInterval(this.awarenessTimer)
    this.awarenessTimer = null
  }

  _receive (bytes) {
    this.framesIn++
    this.bytesIn += bytes.length
    const d = decoding.createDecoder(bytes)
    if (this._prefix !== null) decoding.readVarString(d)
    const type = decoding.readVarUint(d)
    switch (type) {
      case MSG_SYNC:
      case MSG_HP_SYNC_REPLY: {
        if (this.protocol === 'hocuspocus' && type === MSG_SYNC && !this._authenticated) {
          throw new Error('sync frame before Authenticated')
        }
        const reply = this._encoder(MSG_SYNC)
        const emptyLength = encoding.length(reply)
        const kind = syncProtocol.readSyncMessage(d, reply, this.doc, this, (err) => {
          this.onError(`${this.room}: update failed to apply: ${err.message}`)
        })
        if (encoding.length(reply) > emptyLength) this._send(encoding.toUint8Array(reply))
        if (kind === syncProtocol.messageYjsSyncStep2) this._markSynced()
        if (kind !== syncProtocol.messageYjsSyncStep1 && this.onRemote !== null) this.onRemote(this)
        break
      }
      case MSG_AWARENESS:
        // decoded only where a scenario asks (the cursor storm): it costs driver CPU
        if (this.onAwareness !== null) this.onAwareness(decoding.readVarUint8Array(d))
        break
      case MSG_QUERY_AWARENESS:
        break
      case MSG_AUTH: {
        if (this.protocol !== 'hocuspocus') throw new Error('auth frame from a y-websocket server')
        const authType = decoding.readVarUint(d)
        if (authType === HP_AUTH_OK) {
          this._authenticated = true
          this._sendSyncStep1()
        } else if (authType === HP_AUTH_DENIED) {
          throw new Error(`permission denied: ${decoding.readVarString(d)}`)
        }
        break
      }
      case MSG_HP_SYNC_STATUS:
      case MSG_HP_STATELESS:
      case MSG_HP_PING:
      case MSG_HP_PONG:
        if (this.protocol !== 'hocuspocus') throw new Error(`unexpected message type ${type}`)
        break
      case MSG_HP_CLOSE:
        throw new Error('server sent CLOSE')
      default:
        throw new Error(`unknown message type ${type}`)
    }
  }

  close () {
    this.closedByUs = true
    this._stopAwareness()
    if (this.ws !== null) this.ws.close()
  }

  /** Wait until the socket has closed (bounded). */
  closed (timeoutMs = 2000) {
    if (this.ws === null || this.ws.readyState === WebSocket.CLOSED) return Promise.resolve()
    return new Promise((resolve) => {
      const t = setTimeout(() => { this.ws.terminate(); resolve() }, timeoutMs)
      this.ws.once('close', () => { clearTimeout(t); resolve() })
    })
  }

  destroy () {
    this._stopAwareness()
    this.doc.destroy()
  }
}

/** Connect many clients with at most `concurrency` handshakes in flight; returns them in order. */
export async function connectAll (clients, { concurrency = 50, timeoutMs = 30000 } = {}) {
  let next = 0
  const worker = async () => {
    while (next < clients.length) {
      const c = clients[next++]
      await c.connect(timeoutMs)
    }
  }
  const workers = []
  for (let i = 0; i < Math.min(concurrency, clients.length); i++) workers.push(worker())
  await Promise.all(workers)
  return clients
}

/** How many characters `clientId` has inserted into `doc` that `doc` has integrated. */
export const clockOf = (doc, clientId) => Y.getState(doc.store, clientId)
