// collab's service worker: lets an open document reload while the server is unreachable.
// The build fills in VERSION and PRECACHE (the two page shells and the hashed assets).
//
// Pages (`/`, `/d/<name>`) are network first, falling back to the cached shell: online, a
// reload always gets the current page; offline, it gets the last one and y-indexeddb supplies
// the document. Hashed assets never change, so they are served from the cache. Everything
// else (`/api/*`, websockets) is left alone.

const VERSION = "4ca002175e14d954"
const PRECACHE = ["/","/assets/editor-5G2WMQ6R.css","/assets/editor-QOC4MQ6C.js","/assets/picker-5657SPDX.css","/assets/picker-HQ7GVFJK.js","/d/"]
const CACHE = 'collab-' + VERSION

self.addEventListener('install', (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE)
    await cache.addAll(PRECACHE)
    await self.skipWaiting()
  })())
})

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const key of await caches.keys()) {
      if (key.startsWith('collab-') && key !== CACHE) await caches.delete(key)
    }
    await self.clients.claim()
  })())
})

const shellFor = (pathname) => (pathname === '/' ? '/' : pathname.startsWith('/d/') ? '/d/' : null)

self.addEventListener('fetch', (event) => {
  const request = event.request
  if (request.method !== 'GET') return
  const url = new URL(request.url)
  if (url.origin !== self.location.origin) return
  if (request.mode === 'navigate') {
    const shell = shellFor(url.pathname)
    if (shell === null) return
    event.respondWith(fetch(request).catch(async () => {
      const cached = await caches.match(shell, { cacheName: CACHE })
      return cached ?? Response.error()
    }))
  } else if (url.pathname.startsWith('/assets/')) {
    event.respondWith(caches.match(request, { cacheName: CACHE }).then((hit) => hit ?? fetch(request)))
  }
})
