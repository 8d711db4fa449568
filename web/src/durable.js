// The "saved" state: which of this page's edits are on the server's disk.
//
// Theory of operation. The page connects with `?ack=1`. After each group commit the server
// sends a frame: varUint message type 100, a varUint8Array holding a Yjs v1 state vector
// (Y.encodeStateVector format) of what is durable for this document, then a varUint: how many
// of the update messages (sync step 2 or update) this connection sent are durable. A state
// vector counts insertions only, so a delete-only edit shows in that count alone.
//
// We count the update messages the provider sends on each websocket (by wrapping that socket's
// send), from zero on every new one: the sync step 2 it answers the server's step 1 with
// carries everything from before, deletions included. Durable state only grows, so we keep the
// element-wise maximum of every acknowledged state vector across reconnects. The page is
// "saved" when, on the open connection, the step 2 went out, every update message sent is
// acknowledged, and the durable state vector covers the local one (every insertion this page
// has seen, its own and everyone else's). While disconnected it stays "saved" only if it was
// when the connection closed and nothing changed since. Anything else is "saving" (connected)
// or "unsaved" (offline); we never claim "saved" from the socket accepting bytes alone.

import * as Y from 'yjs'
import * as decoding from 'lib0/decoding'

/** y-websocket message type of the server's durable acknowledgement. */
export const messageDurableAck = 100

/** y-protocols sync.js: message type 0 (sync), then step 2 (1) or update (2). */
const isUpdateMessage = (bytes) => bytes[0] === 0 && (bytes[1] === 1 || bytes[1] === 2)

/** True when `durable` covers every (client, clock) of `local`. */
export const coversStateVector = (durable, local) => {
  for (const [client, clock] of local) {
    if ((durable.get(client) ?? 0) < clock) return false
  }
  return true
}

export class DurableTracker {
  /**
   * @param {Y.Doc} doc
   * @param {import('y-websocket').WebsocketProvider} provider
   * @param {(saved: boolean) => void} onChange called whenever the answer may have changed
   */
  constructor (doc, provider, onChange) {
    this.doc = doc
    this.provider = provider
    /** @type {Map<number, number>} */
    this.durable = new Map()
    this.acks = 0
    /** The open websocket and its counts: { ws, sent, acked, answered }. */
    this.socket = null
    this._savedOffline = false
    this._onChange = onChange
    // A handler at index 100 also keeps the stock provider from logging
    // "Unable to compute message" for frames it does not know.
    provider.messageHandlers[messageDurableAck] = (_encoder, decoder) => {
      const stateVector = decoding.readVarUint8Array(decoder)
      this.receive(stateVector, decoding.hasContent(decoder) ? decoding.readVarUint(decoder) : 0)
    }
    // The provider makes a new websocket on every (re)connection and says "connecting".
    this._track()
    provider.on('status', ({ status }) => {
      if (status === 'disconnected') this._savedOffline = this._savedOn(this.socket)
      this._track()
      this._onChange(this.saved)
    })
    doc.on('update', () => {
      if (!this._live()) this._savedOffline = false
      this._onChange(this.saved)
    })
  }

  _track () {
    const ws = this.provider.ws
    if (ws == null || (this.socket !== null && this.socket.ws === ws)) return
    const socket = { ws, sent: 0, acked: 0, answered: false }
    const send = ws.send.bind(ws)
    ws.send = (data) => {
      const bytes = data instanceof Uint8Array ? data : new Uint8Array(data)
      if (isUpdateMessage(bytes)) {
        socket.sent++
        if (bytes[1] === 1) socket.answered = true
      }
      send(data)
    }
    this.socket = socket
  }

  _live () {
    return this.socket !== null && this.socket.ws === this.provider.ws && this.provider.wsconnected
  }

  _savedOn (socket) {
    return socket !== null && socket.answered && socket.acked >= socket.sent &&
      coversStateVector(this.durable, Y.decodeStateVector(Y.encodeStateVector(this.doc)))
  }

  /** Merge one acknowledgement (an encoded state vector, and this connection's count). */
  receive (encodedStateVector, updates = 0) {
    for (const [client, clock] of Y.decodeStateVector(encodedStateVector)) {
      if ((this.durable.get(client) ?? 0) < clock) this.durable.set(client, clock)
    }
    if (this._live() && updates > this.socket.acked) this.socket.acked = updates
    this.acks++
    this._onChange(this.saved)
  }

  get saved () {
    return this._live() ? this._savedOn(this.socket) : this._savedOffline
  }
}
