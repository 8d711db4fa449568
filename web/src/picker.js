// The document picker, /: recent documents on the server and a box to open or create one.

import { editorPath, recentInBrowser } from './docname.js'
import { registerServiceWorker } from './offline.js'
import './style.css'

const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`)

const form = $('open-form')
form.addEventListener('submit', (event) => {
  event.preventDefault()
  const name = $('open-name').value.trim()
  if (name) location.assign(editorPath(name))
})

const formatBytes = (n) =>
  n < 1024 ? `${n} B` : n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KB` : `${(n / 1048576).toFixed(1)} MB`

const formatAge = (unixSeconds) => {
  const s = Math.max(0, Date.now() / 1000 - unixSeconds)
  if (s < 60) return 'just now'
  if (s < 3600) return `${Math.floor(s / 60)} min ago`
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`
  return new Date(unixSeconds * 1000).toLocaleDateString()
}

const docItem = (name, detail) => {
  const li = document.createElement('li')
  li.dataset.testid = 'doc'
  const a = document.createElement('a')
  a.href = editorPath(name)
  a.textContent = name
  li.append(a)
  if (detail) {
    const span = document.createElement('span')
    span.className = 'detail'
    span.textContent = detail
    li.append(span)
  }
  return li
}

const showDocs = async () => {
  const list = $('docs')
  const note = $('docs-note')
  try {
    const response = await fetch('/api/docs?limit=50', { headers: { accept: 'application/json' } })
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`)
    const { docs } = await response.json()
    list.replaceChildren(...docs.map((d) =>
      docItem(d.name, `${formatAge(d.updated_at)} · ${formatBytes(d.bytes)}`)))
    note.textContent = docs.length ? '' : 'No documents yet: name one above to create it.'
  } catch (err) {
    const recent = recentInBrowser()
    list.replaceChildren(...recent.map((n) => docItem(n, 'opened in this browser')))
    note.textContent = `Could not list the server's documents (${err.message}).` +
      (recent.length ? ' These were opened in this browser:' : '')
  }
  list.setAttribute('aria-busy', 'false')
}

showDocs()
registerServiceWorker()
