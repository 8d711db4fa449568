// Document names and the URLs they live at.
//
// Routing rule (docs/web.md): every websocket upgrade, at any path, is a document connection
// (`ws://HOST/<name>`); plain HTTP GETs go to `/` (picker), `/d/<name>` (editor), `/assets/*`,
// `/sw.js`, `/api/*` and the health endpoints. So `/d/` only ever prefixes HTML pages and a
// document may itself be called "d/..." or "api" without colliding with anything.

/** Percent-encode a document name for a URL path, keeping `/` between segments readable. */
export const encodeDocName = (name) => name.split('/').map(encodeURIComponent).join('/')

/** The editor page of a document: `/d/<name>`. */
export const editorPath = (name) => '/d/' + encodeDocName(name)

/** The document name in an editor page's path, or '' when there is none. */
export const docNameFromPath = (pathname) => {
  if (!pathname.startsWith('/d/')) return ''
  const raw = pathname.slice('/d/'.length)
  try {
    return decodeURIComponent(raw)
  } catch {
    return raw // malformed percent-escape: take the name as typed
  }
}

/** The websocket server URL of this page's origin (y-websocket appends `/<room>`). */
export const websocketOrigin = (location) =>
  (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host

const RECENT_KEY = 'collab.recent'
const RECENT_MAX = 20

/** Names opened in this browser, most recent first (the picker's fallback when offline). */
export const recentInBrowser = () => {
  try {
    const list = JSON.parse(localStorage.getItem(RECENT_KEY) ?? '[]')
    return Array.isArray(list) ? list.filter((n) => typeof n === 'string') : []
  } catch {
    return []
  }
}

export const rememberOpened = (name) => {
  const list = [name, ...recentInBrowser().filter((n) => n !== name)].slice(0, RECENT_MAX)
  try {
    localStorage.setItem(RECENT_KEY, JSON.stringify(list))
  } catch {
    // storage full or disabled: the list is a convenience only
  }
}
