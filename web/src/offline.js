// Register /sw.js, which keeps the pages and assets so an editor reloads while offline.
// Service workers need a secure context: https, or http on localhost / 127.0.0.1. Elsewhere
// this does nothing and the page still works online, with edits kept in IndexedDB.

export const registerServiceWorker = () => {
  if (!('serviceWorker' in navigator)) return
  navigator.serviceWorker.register('/sw.js', { scope: '/' }).catch((err) => {
    console.warn('collab: no offline reload, service worker not registered:', err)
  })
}
