// A Yjs provider for networks that block websockets: plain HTTP carries the whole y-websocket
// exchange. The change feed (an EventSource on GET /api/docs/<name>/events?awareness=1) brings
// the document and everyone's presence down; POST .../updates and POST .../awareness carry this
// page's edits and presence up.
//
// Theory of operation. The feed's first event announces a session id; awareness posted with it
// belongs to this stream, and the server removes it when the stream ends (as it does when a
// websocket closes). Then the document comes down as a snapshot, or, on a reconnect, as the
// updates after the last event id this page saw. Once the feed is caught up it sends `synced`
// with the server's state vector, and the page posts what it has beyond that (sync step 2).
// After that, every local update is posted, one request at a time (what piles up meanwhile is
// merged into one), and every update of the feed is applied. The server answers a POST only
// once the update is on its disk, so `saved` is exact: no local update pending or in flight,
// deletions included. The browser reconnects an EventSource by itself (with Last-Event-ID)
// after a dropped stream; a stream that failed for good is opened again here with backoff.
//
// Same shape as y-websocket's WebsocketProvider where it makes sense: events `status`
// ({ status: 'connecting' | 'connected' | 'disconnected' }), `sync` (boolean),
// `connection-close` ({ code, reason } or null), `connection-error`, plus `saved` (boolean);
// properties `awareness`, `synced`, `connected`, `unsuccessfulReconnects`, `shouldConnect`;
// methods `connect()`, `disconnect()`, `destroy()`.

import * as Y from 'yjs'
import * as awarenessProtocol from 'y-protocols/awareness'
import { ObservableV2 } from 'lib0/observable'
import { fromBase64 } from 'lib0/buffer'

/** Close codes 4400-4499 mean that reconnecting cannot help (as y-websocket reads them). */
const isTerminal = (code) => code >= 4400 && code < 4500

export class SSEProvider extends ObservableV2 {
  /**
   * @param {string} serverUrl the server's origin, `https://host:port`
   * @param {string} name the document name (not encoded)
   * @param {Y.Doc} doc
   */
  constructor (serverUrl, name, doc, {
    connect = true,
    awareness = new awarenessProtocol.Awareness(doc),
    maxBackoffTime = 2500
  } = {}) {
    super()
    this.doc = doc
    this.awareness = awareness
    this.roomname = name
    this.maxBackoffTime = maxBackoffTime
    // one path segment: a `/` in the name is percent-encoded too
    this.url = serverUrl.replace(/\/+$/, '') + '/api/docs/' + encodeURIComponent(name)
    /** @type {EventSource | null} */
    this.source = null
    this.session = null
    this.lastEventId = null
    this.epoch = null
    this.connected = false
    this._synced = false
    this.shouldConnect = connect
    this.unsuccessfulReconnects = 0
    this._pending = null // local updates not yet posted, merged
    this._posting = false
    this._awarenessPosting = false
    this._awarenessDirty = false
    this._retry = null

    this._updateHandler = (update, origin) => {
      if (origin === this) return
      this._pending = this._pending === null ? update : Y.mergeUpdates([this._pending, update])
      this._emitSaved()
      this._postUpdates()
    }
    doc.on('update', this._updateHandler)
    this._awarenessHandler = ({ added, updated, removed }, origin) => {
      if (origin === this) return
      if ([...added, ...updated, ...removed].includes(doc.clientID)) this._postAwareness()
    }
    awareness.on('update', this._awarenessHandler)
    if (connect) this.connect()
  }

  get synced () {
    return this._synced
  }

  set synced (state) {
    if (this._synced !== state) {
      this._synced = state
      if (state) this.unsuccessfulReconnects = 0
      this.emit('synced', [state])
      this.emit('sync', [state])
      this._emitSaved()
    }
  }

  /** Every local edit is on the server's disk. */
  get saved () {
    return this.synced && this._pending === null && !this._posting
  }

  connect () {
    this.shouldConnect = true
    if (this.source === null) this._open()
  }

  disconnect () {
    this.shouldConnect = false
    clearTimeout(this._retry)
    if (this.source !== null) {
      this.source.close()
      this._lost(this.source, null)
      this.source = null
    }
  }

  destroy () {
    this.disconnect()
    this.doc.off('update', this._updateHandler)
    this.awareness.off('update', this._awarenessHandler)
    super.destroy()
  }

  // --- the feed ---------------------------------------------------------------------------

  _open () {
    const params = new URLSearchParams({ awareness: '1' })
    // The browser sends Last-Event-ID itself only when it reconnects a stream on its own.
    if (this.lastEventId !== null) params.set('last_event_id', this.lastEventId)
    const source = new EventSource(`${this.url}/events?${params}`)
    this.source = source
    this.emit('status', [{ status: 'connecting' }])
    const on = (type, handler) => source.addEventListener(type, (event) => {
      if (this.source === source) handler(event)
    })
    on('session', (event) => {
      this.session = JSON.parse(event.data).session
      this.connected = true
      this.emit('status', [{ status: 'connected' }])
      if (this.awareness.getLocalState() !== null) this._postAwareness()
    })
    on('snapshot', (event) => {
      const epoch = event.lastEventId.split('-')[0]
      if (this.epoch !== null && epoch !== this.epoch) {
        // Deleted or replaced since this page loaded it: what the page holds is history of
        // a retired epoch, which must not come back (the websocket's 4409).
        this._serverClose({ code: 4409, reason: 'this document was deleted or replaced since you loaded it; reload the page' })
        return
      }
      this.epoch = epoch
      this._receive(event)
    })
    on('update', (event) => this._receive(event))
    on('synced', (event) => {
      // Sync step 2: what this page has that the server lacks (offline edits, say).
      const missing = Y.encodeStateAsUpdate(this.doc, fromBase64(event.data))
      this._pending = this._pending === null ? missing : Y.mergeUpdates([this._pending, missing])
      this.synced = true
      this._postUpdates()
    })
    on('awareness', (event) => {
      awarenessProtocol.applyAwarenessUpdate(this.awareness, fromBase64(event.data), this)
    })
    on('close', (event) => this._serverClose(JSON.parse(event.data)))
    source.onerror = (event) => {
      if (this.source !== source) return
      this.emit('connection-error', [event, this])
      this._lost(source, null)
      this.unsuccessfulReconnects++
      if (source.readyState === EventSource.CLOSED) {
        // An HTTP error or a refused connection: the browser gives up, we retry.
        this.source = null
        if (this.shouldConnect) {
          const delay = Math.min(2 ** this.unsuccessfulReconnects * 100, this.maxBackoffTime)
          this._retry = setTimeout(() => this.shouldConnect && this.source === null && this._open(), delay)
        }
      } else {
        this.emit('status', [{ status: 'connecting' }]) // the browser reconnects by itself
      }
    }
  }

  _receive (event) {
    Y.applyUpdate(this.doc, fromBase64(event.data), this)
    this.lastEventId = event.lastEventId
  }

  /** The server ended the stream with a websocket close code. */
  _serverClose ({ code, reason }) {
    this.emit('connection-close', [{ code, reason }, this])
    if (isTerminal(code)) {
      this.shouldConnect = false
      const source = this.source
      this.source = null
      if (source !== null) {
        source.close()
        this._lost(source, { code, reason })
      }
      this.emit('closed', [{ code, reason }, this])
    }
    // Otherwise the browser reconnects when the response ends (the `error` handler).
  }

  /** The stream is gone: nobody else's presence is known, and the session is over. */
  _lost (source, _why) {
    this.session = null
    const wasConnected = this.connected
    this.connected = false
    this.synced = false
    const others = [...this.awareness.getStates().keys()].filter((c) => c !== this.doc.clientID)
    awarenessProtocol.removeAwarenessStates(this.awareness, others, this)
    if (wasConnected) this.emit('status', [{ status: 'disconnected' }])
  }

  // --- up: edits and presence --------------------------------------------------------------

  async _postUpdates () {
    if (this._posting || this._pending === null || !this.connected) return
    const update = this._pending
    this._pending = null
    this._posting = true
    let ok = false
    try {
      const response = await fetch(`${this.url}/updates`, {
        method: 'POST',
        body: update,
        headers: { 'content-type': 'application/octet-stream' }
      })
      ok = response.ok
      if (!ok && response.status >= 400 && response.status < 500) {
        const { error } = await response.json().catch(() => ({ error: response.statusText }))
        if (/deleted or replaced/.test(error ?? '')) {
          this._serverClose({ code: 4409, reason: error })
        } else {
          console.warn('collab: the server refused an update:', error)
        }
        ok = true // never sent again: the server said why it will not take it
      }
    } catch {
      // offline, or the server is unreachable: kept, and sent again
    }
    this._posting = false
    if (!ok) {
      this._pending = this._pending === null ? update : Y.mergeUpdates([update, this._pending])
      const delay = Math.min(2 ** (this.unsuccessfulReconnects + 1) * 100, this.maxBackoffTime)
      setTimeout(() => this._postUpdates(), delay)
    }
    this._emitSaved()
    if (ok) this._postUpdates()
  }

  async _postAwareness () {
    if (this.session === null) return // posted once the next stream announces its session
    if (this._awarenessPosting) {
      this._awarenessDirty = true
      return
    }
    this._awarenessPosting = true
    this._awarenessDirty = false
    const body = awarenessProtocol.encodeAwarenessUpdate(this.awareness, [this.doc.clientID])
    try {
      // keepalive: the "gone" state posted as the tab closes still reaches the server
      await fetch(`${this.url}/awareness?session=${encodeURIComponent(this.session)}`, {
        method: 'POST', body, keepalive: true
      })
    } catch {
      // the stream is down too; the next session posts the state again
    }
    this._awarenessPosting = false
    if (this._awarenessDirty) this._postAwareness()
  }

  _emitSaved () {
    this.emit('saved', [this.saved])
  }
}
