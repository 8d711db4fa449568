// The editor page, /d/<name>: CodeMirror 6 bound to the document's Y.Text('content') through
// y-codemirror.next, synced by the stock y-websocket provider, cached in IndexedDB. Where the
// websocket cannot connect but plain HTTP can (a proxy that blocks upgrades), the page falls
// back to the SSE provider on its own; `?transport=sse` forces it, `?transport=websocket`
// never falls back.

import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { IndexeddbPersistence } from 'y-indexeddb'
import { Awareness, removeAwarenessStates } from 'y-protocols/awareness'
import { yCollab, yRemoteSelections, yUndoManagerKeymap } from 'y-codemirror.next'
import { EditorState } from '@codemirror/state'
import {
  EditorView, ViewPlugin, keymap, drawSelection, highlightActiveLine, highlightSpecialChars,
  placeholder
} from '@codemirror/view'
import { defaultKeymap, indentWithTab } from '@codemirror/commands'
import { markdown } from '@codemirror/lang-markdown'
import { syntaxHighlighting, defaultHighlightStyle } from '@codemirror/language'

import { docNameFromPath, encodeDocName, rememberOpened, websocketOrigin } from './docname.js'
import { awarenessUser, loadUser, saveUser } from './user.js'
import { DurableTracker } from './durable.js'
import { registerServiceWorker } from './offline.js'
import { SSEProvider } from './sse-provider.js'
import './style.css'

const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`)

// Remote carets always carry their owner's name (y-codemirror.next shows it on hover only).
const remoteCaretTheme = EditorView.theme({
  '.cm-ySelectionInfo': {
    opacity: 1,
    top: '-1.35em',
    padding: '1px 4px',
    borderRadius: '3px 3px 3px 0',
    fontFamily: 'var(--ui-font)',
    fontSize: '11px'
  }
})

// y-codemirror.next 0.3.6 compares caret widgets by colour alone, so CodeMirror keeps the old
// label when someone changes only their name. Its widget class is not exported: teach it,
// from the first instance we meet, to compare names too.
const caretRenames = ViewPlugin.define((view) => ({
  update () {
    const remote = view.plugin(yRemoteSelections)
    if (!remote || caretRenames.patched) return
    for (const iter = remote.decorations.iter(); iter.value; iter.next()) {
      const widget = iter.value.spec.widget
      if (widget && 'name' in widget && 'color' in widget) {
        const proto = Object.getPrototypeOf(widget)
        proto.eq = proto.compare = function (other) {
          return other.color === this.color && other.name === this.name
        }
        caretRenames.patched = true
        return
      }
    }
  }
}))

function openEditor (name) {
  document.title = `${name} · collab`
  $('doc-name').textContent = name
  rememberOpened(name)

  const doc = new Y.Doc()
  const text = doc.getText('content')

  // IndexedDB keeps the document (and edits not yet on the server) across reloads, online or not.
  const local = new IndexeddbPersistence('collab:' + name, doc)

  // One awareness for either transport, so that the editor's carets survive a fallback.
  const awareness = new Awareness(doc)
  const transport = new URLSearchParams(location.search).get('transport')
  let provider = transport === 'sse'
    ? new SSEProvider(location.origin, name, doc, { awareness })
    : new WebsocketProvider(websocketOrigin(location), encodeDocName(name), doc, {
      awareness,
      params: { ack: '1' } // opt in to the server's durable acknowledgements (message type 100)
    })

  // --- who am I ----------------------------------------------------------------------------

  let user = loadUser()
  awareness.setLocalStateField('user', awarenessUser(user))
  const nameInput = $('user-name')
  const colorInput = $('user-color')
  nameInput.value = user.name
  colorInput.value = user.color
  const updateUser = () => {
    const nextName = nameInput.value.trim().slice(0, 40)
    user = { name: nextName || user.name, color: colorInput.value.toLowerCase() }
    saveUser(user)
    awareness.setLocalStateField('user', awarenessUser(user))
  }
  nameInput.addEventListener('change', updateUser)
  colorInput.addEventListener('input', updateUser)

  // --- who is here -------------------------------------------------------------------------

  const renderPeers = () => {
    const list = $('peers')
    const items = []
    for (const [clientId, state] of awareness.getStates()) {
      if (!state.user) continue
      const li = document.createElement('li')
      li.dataset.testid = 'peer'
      li.dataset.clientId = String(clientId)
      li.style.setProperty('--peer-color', state.user.color)
      li.textContent = state.user.name
      if (clientId === doc.clientID) {
        li.classList.add('self')
        li.title = 'you'
        items.unshift(li)
      } else {
        items.push(li)
      }
    }
    list.replaceChildren(...items)
  }
  awareness.on('change', renderPeers)
  renderPeers()

  // Say goodbye when the tab closes so the others drop our caret at once, not after the
  // 30 s awareness timeout.
  window.addEventListener('pagehide', () => {
    removeAwarenessStates(awareness, [doc.clientID], 'window closed')
  })

  // --- connection and saved state ----------------------------------------------------------

  const connection = $('connection')
  const saved = $('saved')

  const isSSE = () => provider instanceof SSEProvider
  const linkUp = () => (isSSE() ? provider.connected : provider.wsconnected)
  const connectionState = () => {
    if (linkUp()) return provider.synced ? 'connected' : 'connecting'
    const failures = isSSE() ? provider.unsuccessfulReconnects : provider.wsUnsuccessfulReconnects
    if (!navigator.onLine || failures > 0) return 'offline'
    return 'connecting'
  }
  const CONNECTION_LABEL = {
    connected: 'connected',
    connecting: 'connecting…',
    offline: 'offline'
  }

  // The SSE provider knows "saved" itself: the server answers each posted update once it
  // is on disk.
  let durable = isSSE() ? provider : new DurableTracker(doc, provider, () => render())

  const savedState = () => {
    if (durable.saved) return 'saved'
    return linkUp() ? 'saving' : 'unsaved'
  }
  const SAVED_LABEL = {
    saved: 'saved',
    saving: 'saving…',
    unsaved: 'not saved yet: kept in this browser'
  }

  const transportPill = $('transport')
  const render = () => {
    transportPill.dataset.transport = isSSE() ? 'sse' : 'websocket'
    transportPill.textContent = isSSE() ? 'HTTP fallback (SSE)' : 'websocket'
    transportPill.title = isSSE()
      ? 'websockets do not get through: edits go by HTTP POST, changes come by server-sent events'
      : ''
    const c = connectionState()
    connection.dataset.state = c
    connection.textContent = CONNECTION_LABEL[c]
    const unreachable = c === 'offline' && navigator.onLine
    connection.title = unreachable ? 'the server is unreachable; retrying' : ''
    const s = savedState()
    saved.dataset.state = s
    saved.textContent = SAVED_LABEL[s]
  }
  const listen = () => {
    provider.on('status', render)
    provider.on('sync', render)
    if (isSSE()) provider.on('saved', render)
  }
  listen()
  render()

  // Fall back to HTTP when the websocket fails again and again before it ever synced while
  // the server answers plain HTTP: something between here and there refuses websockets.
  let everSynced = false
  let probing = false
  const websocketFailed = async () => {
    if (isSSE() || everSynced || probing || transport === 'websocket') return
    if (provider.wsUnsuccessfulReconnects < 3 || !navigator.onLine) return
    probing = true
    try {
      const answer = await fetch('/readyz', { cache: 'no-store' })
      if (answer.ok && !isSSE() && !everSynced) {
        provider.destroy()
        provider = new SSEProvider(location.origin, name, doc, { awareness })
        durable = provider
        window.collab.provider = window.collab.durable = provider
        listen()
        render()
      }
    } catch {
      // the server is down, not just its websockets: keep trying the websocket
    } finally {
      probing = false
    }
  }
  if (!isSSE()) {
    provider.on('sync', (synced) => { everSynced ||= synced })
    provider.on('connection-close', websocketFailed)
  }

  // The browser knows before the socket does: stop retrying while offline, reconnect at once after.
  window.addEventListener('offline', () => {
    provider.disconnect()
    render()
  })
  window.addEventListener('online', () => {
    provider.connect()
    render()
  })
  if (!navigator.onLine) provider.disconnect()

  // --- the editor --------------------------------------------------------------------------

  const undoManager = new Y.UndoManager(text)
  const view = new EditorView({
    parent: $('editor'),
    state: EditorState.create({
      doc: text.toString(),
      extensions: [
        highlightSpecialChars(),
        drawSelection(),
        highlightActiveLine(),
        EditorView.lineWrapping,
        markdown(),
        syntaxHighlighting(defaultHighlightStyle, { fallback: true }),
        placeholder('Start typing. Everyone on this page sees it live.'),
        keymap.of([...yUndoManagerKeymap, ...defaultKeymap, indentWithTab]),
        yCollab(text, awareness, { undoManager }),
        remoteCaretTheme,
        caretRenames
      ]
    })
  })
  local.whenSynced.then(render)

  // A handle for debugging in the console and for the browser tests.
  window.collab = { name, doc, text, provider, awareness, durable, view, local }

  registerServiceWorker()
}

const name = docNameFromPath(location.pathname)
if (name) {
  openEditor(name)
} else {
  location.replace('/') // `/d/` alone: nothing to open, go to the picker
}
