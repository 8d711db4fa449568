// The "saved" state: which of this page's edits are on the server's disk.
//
// Theory of operation. The page connects with `?ack=1`. After each group commit the server
// sends a frame: varUint message type 100, then a varUint8Array holding a Yjs v1 state vector
// (Y.encodeStateVector format) of what is durable for this document. Durable state only
// grows, so we keep the element-wise maximum of every acknowledgement across reconnects.
// The page is "saved" when, for every (client, clock) in the local document's state vector,
// the durable clock is at least the local one: every edit this page has seen, its own and
// everyone else's, is on disk. Anything else is "saving" (connected) or "unsaved" (offline);
// we never claim "saved" from the socket accepting bytes alone.

import * as Y from 'yjs'
import * as decoding from 'lib0/decoding'

/** y-websocket message type of the server's durable acknowledgement. */
export const messageDurableAck = 100

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
    /** @type {Map<number, number>} */
    this.durable = new Map()
    this.acks = 0
    this._onChange = onChange
    // A handler at index 100 also keeps the stock provider from logging
    // "Unable to compute message" for frames it does not know.
    provider.messageHandlers[messageDurableAck] = (_encoder, decoder) => {
      this.receive(decoding.readVarUint8Array(decoder))
    }
    doc.on('update', () => this._onChange(this.saved))
  }

  /** Merge one acknowledgement (an encoded state vector). */
  receive (encodedStateVector) {
    for (const [client, clock] of Y.decodeStateVector(encodedStateVector)) {
      if ((this.durable.get(client) ?? 0) < clock) this.durable.set(client, clock)
    }
    this.acks++
    this._onChange(this.saved)
  }

  get saved () {
    return coversStateVector(this.durable, Y.decodeStateVector(Y.encodeStateVector(this.doc)))
  }
}
