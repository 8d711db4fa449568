// The operator's page: polls /api/status once a second and draws what it says.
// No external assets, no framework: text nodes only (document names are never HTML).
const token = new URLSearchParams(location.search).get('token')
const headers = token ? { Authorization: 'Bearer ' + token } : {}
const rates = []
let last = null

function show (id, value) { document.getElementById(id).textContent = value }

function draw () {
  const canvas = document.getElementById('chart')
  const ctx = canvas.getContext('2d')
  ctx.clearRect(0, 0, canvas.width, canvas.height)
  const max = Math.max(1, ...rates)
  ctx.strokeStyle = '#0a66c2'
  ctx.beginPath()
  rates.forEach((r, i) => {
    const x = canvas.width - (rates.length - 1 - i) * (canvas.width / 120)
    const y = canvas.height - 4 - (r / max) * (canvas.height - 8)
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y)
  })
  ctx.stroke()
}

async function refresh () {
  try {
    const response = await fetch('/api/status', { headers, cache: 'no-store' })
    const body = await response.json()
    if (!response.ok) throw new Error(body.error || response.statusText)
    show('error', '')
    show('connections', body.connections)
    show('rooms', body.rooms.length)
    show('p50', body.commit_latency_ms.p50 ?? '–')
    show('p99', body.commit_latency_ms.p99 ?? '–')
    if (last !== null) {
      const rate = Math.max(0, (body.updates - last.updates) / ((body.time - last.time) || 1))
      rates.push(rate)
      if (rates.length > 120) rates.shift()
      show('rate', rate.toFixed(1))
    }
    last = body
    const rows = document.getElementById('docs')
    rows.replaceChildren(...body.rooms.map(({ name, connections }) => {
      const tr = document.createElement('tr')
      const a = document.createElement('td')
      a.textContent = name
      const b = document.createElement('td')
      b.className = 'n'
      b.textContent = connections
      tr.append(a, b)
      return tr
    }))
    show('updated', new Date().toLocaleTimeString())
    draw()
  } catch (error) {
    show('error', 'cannot read /api/status: ' + error.message)
  }
}

refresh()
setInterval(refresh, 1000)
