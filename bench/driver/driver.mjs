// Benchmark driver: runs one scenario against one running server and prints one JSON line.
//
//   node driver.mjs '{"scenario": "fanout", "url": "ws://127.0.0.1:1234", "protocol": "yws", ...}'
//
// bench/run.py starts the servers and calls this once per scenario and run. Every loop here is
// bounded in count and in time; a hard deadline ends the process with an error result.
// A "delivery" is one edit observed by one receiving client. Latency is measured from just
// before the writer's insert to the moment the receiver's socket frame was read (frames are
// stamped on arrival and applied afterwards, so applying 63 updates in a row does not count
// against the last receiver). Every client applies every update to its own Y.Doc, and final
// texts are compared, so a lost or corrupted update is an error, not a silent speedup.
import * as Y from 'yjs'
import * as decoding from 'lib0/decoding'
import { Client, connectAll, clockOf } from './client.mjs'
import { sample, driverCpuS, dirBytes, dirState } from './proc.mjs'
import { loadTrace, expectedText } from './trace.mjs'

const cfg = JSON.parse(process.argv[2])
const clkTck = cfg.clk_tck ?? 100
const errors = []
const onError = (msg) => {
  if (errors.length < 100) errors.push(msg)
  if (errors.length <= 5) console.error(`driver: ${msg}`)
}
// Findings about a target that are not failures of the run (a store that lags behind).
const warnings = []
const onWarning = (msg) => {
  if (warnings.length < 100) warnings.push(msg)
  console.error(`driver: warning: ${msg}`)
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const now = () => performance.now()
const srv = () => sample(cfg.server_pid, clkTck)
const live = []

function newClient (room, opts = {}) {
  const c = new Client({ url: cfg.url, protocol: cfg.protocol, room, onError, token: cfg.token ?? null, ...opts })
  live.push(c)
  return c
}

// Frames are stamped when read and applied in a setImmediate batch (see the header).
const inbox = []
let draining = false
function drainInbox () {
  draining = false
  for (let i = 0; i < inbox.length; i++) {
    const [client, t, bytes] = inbox[i]
    client.arrival = t
    client.receiveNow(bytes)
  }
  inbox.length = 0
}
function deferReceive (client) {
  client.receiveNow = client._receiveFrame
  client._receiveFrame = (bytes) => {
    inbox.push([client, now(), bytes])
    if (!draining) {
      draining = true
      setImmediate(drainInbox)
    }
  }
}

function percentiles (values) {
  if (values.length === 0) return { n: 0, p50: null, p99: null, max: null, mean: null }
  const a = Float64Array.from(values).sort()
  const at = (q) => a[Math.min(a.length - 1, Math.floor(q * a.length))]
  let sum = 0
  for (const v of a) sum += v
  const r = (x) => Math.round(x * 1000) / 1000
  return { n: a.length, p50: r(at(0.5)), p99: r(at(0.99)), max: r(a[a.length - 1]), mean: r(sum / a.length) }
}

function cpuWindow (s0, s1, d0, d1) {
  const wall = (s1.t - s0.t) / 1000
  const cpu = s1.cpuS - s0.cpuS
  const busy = s1.busyS - s0.busyS
  return {
    wall_s: round(wall, 3),
    server_cpu_s: round(cpu, 3),
    server_cpu_pct: round((100 * cpu) / wall, 1),
    driver_cpu_pct: round((100 * (d1 - d0)) / wall, 1),
    // The whole machine's busy CPU (100 = one core), and what neither server nor driver used:
    // other people's work on a shared machine, which makes a run noisy.
    machine_cpu_pct: round((100 * busy) / wall, 1),
    other_cpu_pct: round((100 * (busy - cpu - (d1 - d0))) / wall, 1),
    server_rss_kib: s1.rssKiB
  }
}
const round = (x, n) => Math.round(x * 10 ** n) / 10 ** n

/** Wait until `cond()` holds, checking every `everyMs`, for at most `timeoutMs`. */
async function waitFor (cond, timeoutMs, everyMs = 5) {
  const deadline = now() + timeoutMs
  while (!cond()) {
    if (now() > deadline) return false
    await sleep(everyMs)
  }
  return true
}

function checkSameText (clients, label) {
  const want = clients[0].text.toString()
  for (const c of clients) {
    if (c.text.toString() !== want) onError(`${label}: ${c.room} client ${c.doc.clientID} text differs from its room's writer`)
  }
}

/** `n` clients in `room`, connected (16 handshakes at a time) and settled for a moment. */
async function openRoom (room, n, settleMs) {
  const clients = Array.from({ length: n }, () => newClient(room))
  clients.forEach(deferReceive)
  const t0 = now()
  await connectAll(clients, { concurrency: 16, timeoutMs: cfg.connect_timeout_ms ?? 30000 })
  const connectS = (now() - t0) / 1000
  await sleep(cfg.settle_ms ?? settleMs)
  return { clients, connectS }
}

// Scenario 1: one room, one writer inserting a timestamped string every interval_ms.
async function fanout () {
  const n = cfg.clients
  const intervalMs = cfg.interval_ms ?? 10
  const durationMs = cfg.duration_ms ?? 10000
  const { clients, connectS } = await openRoom(`${cfg.room_prefix ?? ''}fanout-${n}`, n, 300)

  const writer = clients[0]
  const wid = writer.doc.clientID
  const receivers = clients.slice(1)
  const sends = [] // per insert: [clock after it, send time]
  const lat = []
  const next = new Int32Array(receivers.length)
  receivers.forEach((r, i) => {
    r.onRemote = () => {
      const clock = clockOf(r.doc, wid)
      while (next[i] < sends.length && sends[next[i]][0] <= clock) {
        lat.push(r.arrival - sends[next[i]][1])
        next[i]++
      }
    }
  })

  const count = Math.floor(durationMs / intervalMs)
  const s0 = srv()
  const d0 = driverCpuS()
  const t0 = now()
  for (let k = 0; k < count; k++) {
    const wait = t0 + k * intervalMs - now()
    if (wait >= 1) await sleep(wait)
    const s = `${k}:${Date.now()};`
    sends.push([clockOf(writer.doc, wid) + s.length, now()])
    writer.text.insert(writer.text.length, s)
  }
  const expected = count * receivers.length
  await waitFor(() => lat.length >= expected, cfg.drain_ms ?? 10000)
  const s1 = srv()
  const d1 = driverCpuS()
  checkSameText(clients, 'fanout')
  return {
    clients: n,
    inserts: count,
    deliveries: lat.length,
    expected_deliveries: expected,
    missed: expected - lat.length,
    connect_s: round(connectS, 3),
    latency_ms: percentiles(lat),
    ...withRate(lat.length, cpuWindow(s0, s1, d0, d1))
  }
}

/** A CPU window with deliveries per server CPU-second added. */
function withRate (deliveries, win) {
  return { ...win, deliveries_per_server_cpu_s: win.server_cpu_s > 0 ? Math.round(deliveries / win.server_cpu_s) : null }
}

/**
 * Text deliveries among the members of a room where any member may write: `note(w, s)`
 * before writer w inserts s; each member's onRemote counts what it now holds of every
 * other writer, with the latency from each insert to the frame's arrival.
 */
function trackText (members, lat) {
  const counts = { delivered: 0, expected: 0 }
  for (const w of members) {
    w.sends = []
    w.ptr = new Map() // receiver -> inserts of w it holds
  }
  const note = (w, s) => {
    w.sends.push([clockOf(w.doc, w.doc.clientID) + s.length, now()])
    counts.expected += members.length - 1
  }
  for (const r of members) {
    r.onRemote = () => {
      for (const w of members) {
        if (w === r || w.sends.length === 0) continue
        const clock = clockOf(r.doc, w.doc.clientID)
        let p = w.ptr.get(r) ?? 0
        while (p < w.sends.length && w.sends[p][0] <= clock) {
          lat.push(r.arrival - w.sends[p][1])
          p++
          counts.delivered++
        }
        w.ptr.set(r, p)
      }
    }
  }
  return { counts, note }
}

/** Call fn(k) for k = 0, 1, ... every periodMs from a random phase, until stop() is true. */
function every (periodMs, fn, stop) {
  let k = 0
  const t0 = now() + Math.random() * periodMs
  const tick = () => {
    if (stop()) return
    fn(k++)
    setTimeout(tick, Math.max(0, t0 + k * periodMs - now()))
  }
  setTimeout(tick, t0 - now())
}

// Scenario 9 (round two): many rooms, each of two clients typing a few times a second.
async function manyRooms () {
  const nRooms = cfg.rooms ?? 1000
  const perRoom = cfg.clients_per_room ?? 2
  const hz = cfg.type_hz ?? 2
  const durationMs = cfg.duration_ms ?? 10000
  const rooms = []
  for (let r = 0; r < nRooms; r++) {
    rooms.push(Array.from({ length: perRoom }, () => newClient(`${cfg.room_prefix ?? ''}many-${r}`)))
  }
  const all = rooms.flat()
  all.forEach(deferReceive)
  const tc0 = now()
  await connectAll(all, { concurrency: cfg.concurrency ?? 100, timeoutMs: cfg.connect_timeout_ms ?? 60000 })
  const connectS = (now() - tc0) / 1000
  await sleep(cfg.settle_ms ?? 1000)
  const lat = []
  const trackers = rooms.map((members) => trackText(members, lat))
  let stopped = false
  const s0 = srv()
  const d0 = driverCpuS()
  rooms.forEach((members, i) => {
    for (const w of members) {
      every(1000 / hz, (k) => {
        const s = `${k}.`
        trackers[i].note(w, s)
        w.text.insert(w.text.length, s)
      }, () => stopped)
    }
  })
  await sleep(durationMs)
  stopped = true
  const s1 = srv()
  const d1 = driverCpuS()
  const expected = trackers.reduce((a, t) => a + t.counts.expected, 0)
  const delivered = () => trackers.reduce((a, t) => a + t.counts.delivered, 0)
  if (!await waitFor(() => delivered() >= expected, cfg.drain_ms ?? 15000)) {
    onError(`many rooms: ${expected - delivered()} deliveries still missing after the drain`)
  }
  for (const members of rooms) checkSameText(members, 'many rooms')
  return {
    rooms: nRooms,
    clients_per_room: perRoom,
    type_hz: hz,
    deliveries: delivered(),
    expected_deliveries: expected,
    missed: expected - delivered(),
    connect_s: round(connectS, 3),
    latency_ms: percentiles(lat),
    ...withRate(delivered(), cpuWindow(s0, s1, d0, d1))
  }
}

// The sequence number a bench client puts first in its awareness state: {"s": 12, ...}.
// Read without a JSON parse (a server may re-encode the JSON, so spaces may differ).
const SEQ = /^\{"s": ?(\d+)/

/** Each awareness entry of a frame: (client id, state JSON or "null"). */
function readAwarenessEntries (payload, fn) {
  const d = decoding.createDecoder(payload)
  const n = decoding.readVarUint(d)
  for (let i = 0; i < n; i++) {
    const client = decoding.readVarUint(d)
    decoding.readVarUint(d) // clock
    fn(client, decoding.readVarString(d))
  }
}

// Scenario 8 (round two): a cursor storm. One room; every client moves its cursor
// (an awareness update) move_hz times a second while `typists` of them type. A move counts
// as delivered to a peer once the peer holds that move or a later one (a coalescing server
// sends only the latest), with its latency from the move to that frame's arrival.
async function cursors () {
  const n = cfg.clients ?? 64
  const typists = Math.min(cfg.typists ?? 4, n)
  const moveHz = cfg.move_hz ?? 10
  const typeHz = cfg.type_hz ?? 10
  const durationMs = cfg.duration_ms ?? 10000
  const { clients, connectS } = await openRoom(`${cfg.room_prefix ?? ''}cursors-${n}`, n, 500)

  const byId = new Map(clients.map((c) => [c.doc.clientID, c]))
  const moves = new Map(clients.map((c) => [c.doc.clientID, []])) // sender -> send times
  const seen = new Map(clients.map((c) => [c, new Map()])) // receiver -> sender -> moves held
  const awLat = []
  let awDelivered = 0
  let measuring = false
  for (const r of clients) {
    const held = seen.get(r)
    r.onAwareness = (payload) => {
      if (!measuring) return
      const t = r.arrival
      readAwarenessEntries(payload, (client, state) => {
        if (client === r.doc.clientID || !byId.has(client)) return
        const m = SEQ.exec(state)
        if (m === null) return
        const seq = Number(m[1])
        const sent = moves.get(client)
        let k = held.get(client) ?? 0
        for (; k <= seq && k < sent.length; k++) {
          awLat.push(t - sent[k])
          awDelivered++
        }
        if (k > (held.get(client) ?? 0)) held.set(client, k)
      })
    }
  }
  const textLat = []
  const text = trackText(clients, textLat)
  let stopped = false
  const s0 = srv()
  const d0 = driverCpuS()
  const f0 = clients.reduce((a, c) => a + c.framesIn, 0)
  measuring = true
  for (const c of clients) {
    const sent = moves.get(c.doc.clientID)
    every(1000 / moveHz, (k) => {
      sent.push(now())
      c.sendAwareness({ s: k, cursor: { anchor: k, head: k } })
    }, () => stopped)
  }
  for (const w of clients.slice(0, typists)) {
    every(1000 / typeHz, (k) => {
      const s = `${k};`
      text.note(w, s)
      w.text.insert(w.text.length, s)
    }, () => stopped)
  }
  await sleep(durationMs)
  stopped = true
  const s1 = srv()
  const d1 = driverCpuS()
  const framesIn = clients.reduce((a, c) => a + c.framesIn, 0) - f0
  const totalMoves = [...moves.values()].reduce((a, m) => a + m.length, 0)
  const expectedAw = totalMoves * (n - 1)
  await waitFor(() => awDelivered >= expectedAw && text.counts.delivered >= text.counts.expected, cfg.drain_ms ?? 10000)
  measuring = false
  if (text.counts.delivered < text.counts.expected) {
    onError(`cursors: ${text.counts.expected - text.counts.delivered} text deliveries missing after the drain`)
  }
  // The last moves may be superseded by nothing: a peer that holds a client's last move
  // holds all of them, so a shortfall here is a move that never arrived.
  if (awDelivered < expectedAw) onError(`cursors: ${expectedAw - awDelivered} cursor moves never reached a peer`)
  checkSameText(clients, 'cursors')
  const win = cpuWindow(s0, s1, d0, d1)
  return {
    clients: n,
    typists,
    move_hz: moveHz,
    type_hz: typeHz,
    moves: totalMoves,
    awareness_deliveries: awDelivered,
    expected_awareness_deliveries: expectedAw,
    awareness_deliveries_per_server_cpu_s: win.server_cpu_s > 0 ? Math.round(awDelivered / win.server_cpu_s) : null,
    awareness_latency_ms: percentiles(awLat),
    text_deliveries: text.counts.delivered,
    missed: text.counts.expected - text.counts.delivered,
    text_latency_ms: percentiles(textLat),
    frames_in_per_client_per_s: round(framesIn / n / win.wall_s, 1),
    connect_s: round(connectS, 3),
    ...win
  }
}

/** A pseudo-random generator (mulberry32), so every target gets the same documents. */
function prng (seed) {
  return () => {
    seed |= 0
    seed = (seed + 0x6d2b79f5) | 0
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** A document of about `bytes` encoded bytes: inserts at random places, a tenth deleted. */
function megabyteDoc (bytes, trace) {
  const doc = new Y.Doc()
  const text = doc.getText('content')
  const rand = prng(42)
  const words = expectedText(trace, Math.min(trace.ops.length, 20000))
  let size = 0
  while (size < bytes) {
    doc.transact(() => {
      for (let i = 0; i < 500; i++) {
        const at = Math.floor(rand() * words.length - 40)
        text.insert(Math.floor(rand() * (text.length + 1)), words.slice(Math.max(0, at), Math.max(0, at) + 40))
        if (rand() < 0.1 && text.length > 20) text.delete(Math.floor(rand() * (text.length - 10)), 5)
      }
    })
    size = Y.encodeStateAsUpdate(doc).length
  }
  return doc
}

/**
 * Put `update` in `room` through the server (a client sends it without applying it, so the
 * driver holds no copy) and stays connected, so that the server keeps the document loaded;
 * then time a fresh client until it holds the whole text, twice: the first load may still
 * wait for the upload to be integrated, the second is the load alone.
 */
async function upload (room, update, want) {
  const holder = newClient(room, { awareness: false })
  await holder.connect(cfg.connect_timeout_ms ?? 60000)
  holder._sendUpdate(update)
  const loads = []
  for (let i = 0; i < 2; i++) {
    const c = newClient(room, { awareness: false })
    const t0 = now()
    let full = null
    c.onRemote = () => { if (full === null && c.text.length === want) full = now() }
    await c.connect(cfg.connect_timeout_ms ?? 60000)
    if (full === null && c.text.length === want) full = now()
    if (!await waitFor(() => full !== null, cfg.load_timeout_ms ?? 120000, 1)) {
      onError(`large docs ${room}: loaded ${c.text.length} chars, want ${want}`)
    }
    loads.push(full === null ? null : round(full - t0, 3))
    c.close()
    await c.closed()
    c.destroy()
    live.splice(live.indexOf(c), 1)
  }
  return { upload_and_load_ms: loads[0], load_ms: loads[1] }
}

// Scenario 10 (round two): large documents. The whole automerge-paper document, then
// `copies` rooms each holding a document of `doc_bytes`: the server's RSS after each, and
// how long a fresh client takes to load one.
async function largeDocs () {
  const trace = loadTrace(cfg.trace)
  const paper = new Y.Doc()
  const paperText = paper.getText('content')
  for (const [pos, del, ins] of trace.ops) {
    paper.transact(() => {
      if (del > 0) paperText.delete(pos, del)
      if (ins.length > 0) paperText.insert(pos, ins)
    })
  }
  const paperUpdate = Y.encodeStateAsUpdate(paper)
  const big = megabyteDoc(cfg.doc_bytes ?? 1024 * 1024, trace)
  const bigUpdate = Y.encodeStateAsUpdate(big)
  const bigChars = big.getText('content').length
  const r0 = srv()
  const paperLoad = await upload(`${cfg.room_prefix ?? ''}large-paper`, paperUpdate, paperText.length)
  await sleep(cfg.settle_ms ?? 1000)
  const r1 = srv()
  const loads = []
  const copies = cfg.copies ?? 100
  for (let i = 0; i < copies; i++) {
    loads.push(await upload(`${cfg.room_prefix ?? ''}large-mb-${i}`, bigUpdate, bigChars))
  }
  await sleep(cfg.settle_ms ?? 1000)
  const r2 = srv()
  const ms = (k) => percentiles(loads.map((l) => l[k]).filter((x) => x !== null))
  return {
    paper_update_bytes: paperUpdate.length,
    paper_chars: paperText.length,
    paper_load_ms: paperLoad.load_ms,
    paper_upload_and_load_ms: paperLoad.upload_and_load_ms,
    rss_before_kib: r0.rssKiB,
    rss_paper_kib: r1.rssKiB - r0.rssKiB,
    doc_bytes: bigUpdate.length,
    copies,
    rss_copies_kib: r2.rssKiB - r1.rssKiB,
    rss_per_copy_kib: round((r2.rssKiB - r1.rssKiB) / copies, 1),
    copy_load_ms: ms('load_ms'),
    copy_upload_and_load_ms: ms('upload_and_load_ms'),
    server_cpu_s: round(r2.cpuS - r0.cpuS, 3),
    server_rss_kib: r2.rssKiB
  }
}

// Scenario 2 (and 6): rooms x clients, every client a writer keeping `window` inserts in flight.
async function throughput () {
  const nRooms = cfg.rooms ?? 20
  const perRoom = cfg.clients_per_room ?? 5
  const windowSize = cfg.window ?? 8
  const durationMs = cfg.duration_ms ?? 10000
  const rooms = []
  const all = []
  for (let r = 0; r < nRooms; r++) {
    const members = Array.from({ length: perRoom }, () => newClient(`${cfg.room_prefix ?? ''}tp-${r}`))
    rooms.push(members)
    all.push(...members)
  }
  all.forEach(deferReceive)
  const tc0 = now()
  await connectAll(all, { concurrency: 50, timeoutMs: cfg.connect_timeout_ms ?? 30000 })
  const connectS = (now() - tc0) / 1000
  await sleep(cfg.settle_ms ?? 300)

  let stopped = false
  let delivered = 0
  let deliveredInWindow = 0
  let expected = 0
  const lat = []
  let tEnd = Infinity
  for (const members of rooms) {
    // w.sends: [clock after insert, send time]; w.ptr[j]: inserts of w seen by members[j]
    for (const w of members) {
      w.sends = []
      w.completed = 0
      w.ptr = new Int32Array(perRoom)
      w.refill = () => {
        while (!stopped && w.sends.length - w.completed < windowSize) {
          const s = `${w.doc.clientID % 1000}.${w.sends.length} `
          w.sends.push([clockOf(w.doc, w.doc.clientID) + s.length, now()])
          expected += perRoom - 1
          w.text.insert(w.text.length, s)
        }
      }
    }
    members.forEach((r, j) => {
      r.onRemote = () => {
        const t = r.arrival
        for (const w of members) {
          if (w === r) continue
          const clock = clockOf(r.doc, w.doc.clientID)
          let p = w.ptr[j]
          if (p >= w.sends.length || w.sends[p][0] > clock) continue
          while (p < w.sends.length && w.sends[p][0] <= clock) {
            lat.push(t - w.sends[p][1])
            p++
            delivered++
            if (t <= tEnd) deliveredInWindow++
          }
          w.ptr[j] = p
          let min = Infinity
          for (let k = 0; k < perRoom; k++) if (members[k] !== w && w.ptr[k] < min) min = w.ptr[k]
          if (min > w.completed) {
            w.completed = min
            w.refill()
          }
        }
      }
    })
  }

  const s0 = srv()
  const d0 = driverCpuS()
  const t0 = now()
  tEnd = t0 + durationMs
  for (const w of all) w.refill()
  await sleep(durationMs)
  const s1 = srv()
  const d1 = driverCpuS()
  stopped = true
  const drained = await waitFor(() => delivered >= expected, cfg.drain_ms ?? 15000)
  if (!drained) onError(`throughput: ${expected - delivered} deliveries still missing after the drain`)
  for (const members of rooms) checkSameText(members, 'throughput')
  const win = cpuWindow(s0, s1, d0, d1)
  const inserts = all.reduce((a, w) => a + w.sends.length, 0)
  return {
    rooms: nRooms,
    clients_per_room: perRoom,
    window: windowSize,
    inserts,
    deliveries: delivered,
    expected_deliveries: expected,
    missed: expected - delivered,
    deliveries_in_window: deliveredInWindow,
    deliveries_per_s: Math.round(deliveredInWindow / win.wall_s),
    deliveries_per_server_cpu_s: win.server_cpu_s > 0 ? Math.round(deliveredInWindow / win.server_cpu_s) : null,
    connect_s: round(connectS, 3),
    latency_ms: percentiles(lat),
    ...win
  }
}

// Scenario 3: many idle connections over many rooms.
async function idle () {
  const n = cfg.clients ?? 1000
  const nRooms = cfg.rooms ?? 100
  const clients = Array.from({ length: n }, (_, i) => newClient(`${cfg.room_prefix ?? ''}idle-${i % nRooms}`))
  const s0 = srv()
  const d0 = driverCpuS()
  const t0 = now()
  await connectAll(clients, { concurrency: cfg.concurrency ?? 100, timeoutMs: cfg.connect_timeout_ms ?? 30000 })
  const connectS = (now() - t0) / 1000
  const sc = srv()
  await sleep(cfg.settle_ms ?? 1500)
  const s1 = srv()
  const d1 = driverCpuS()
  return {
    clients: n,
    rooms: nRooms,
    concurrency: cfg.concurrency ?? 100,
    connect_all_s: round(connectS, 3),
    server_cpu_s_connecting: round(sc.cpuS - s0.cpuS, 3),
    rss_before_kib: s0.rssKiB,
    rss_after_kib: s1.rssKiB,
    rss_per_conn_kib: round((s1.rssKiB - s0.rssKiB) / n, 2),
    ...cpuWindow(s0, s1, d0, d1)
  }
}

/**
 * Type `count` ops of a trace through the server with one writer while a watcher follows,
 * at most `window` ops ahead of what the watcher has seen. Progress is counted as inserted
 * characters (the writer's clock) plus deleted characters, as seen by the watcher.
 */
async function replayOps (trace, count, room, { windowSize, timeLimitMs }) {
  const writer = newClient(room)
  const watcher = newClient(room)
  await connectAll([writer, watcher], { concurrency: 2, timeoutMs: cfg.connect_timeout_ms ?? 30000 })
  const wid = writer.doc.clientID
  let deleted = 0
  watcher.doc.on('afterTransaction', (tr) => {
    if (tr.origin !== watcher) return
    tr.deleteSet.clients.forEach((items) => { for (const it of items) deleted += it.len })
  })
  const target = new Float64Array(count)
  const sentAt = new Float64Array(count)
  const lat = []
  let sent = 0
  let acked = 0
  let cum = 0
  let stopped = false
  let resolveDone
  const done = new Promise((resolve) => { resolveDone = resolve })
  const pump = () => {
    while (!stopped && sent < count && sent - acked < windowSize) {
      const [pos, del, ins] = trace.ops[sent]
      cum += del + ins.length
      target[sent] = cum
      sentAt[sent] = now()
      writer.doc.transact(() => {
        if (del > 0) writer.text.delete(pos, del)
        if (ins.length > 0) writer.text.insert(pos, ins)
      })
      sent++
    }
  }
  watcher.onRemote = () => {
    const progress = clockOf(watcher.doc, wid) + deleted
    const t = now()
    while (acked < sent && target[acked] <= progress) {
      lat.push(t - sentAt[acked])
      acked++
    }
    if (acked >= count) resolveDone()
    else pump()
  }
  const t0 = now()
  const timer = setTimeout(() => { stopped = true; resolveDone() }, timeLimitMs)
  pump()
  await done
  clearTimeout(timer)
  const elapsed = (now() - t0) / 1000
  const complete = acked >= count
  if (complete) {
    const want = expectedText(trace, count)
    if (writer.text.toString() !== want) onError(`replay ${room}: the writer's text is not the trace's`)
    if (watcher.text.toString() !== want) onError(`replay ${room}: the watcher's text is not the trace's`)
  }
  return { writer, watcher, elapsed, complete, acked, lat }
}

/**
 * Poll a data directory until its files have not changed (size or mtime) for quietMs, for at
 * most timeoutMs. `s` is when the last change was seen: how long the store lagged behind.
 */
async function settleDir (dir, quietMs = cfg.settle_quiet_ms ?? 1500, timeoutMs = cfg.settle_timeout_ms ?? 60000) {
  const t0 = now()
  let last = dirState(dir)
  let lastChange = now()
  while (now() - lastChange < quietMs) {
    if (now() - t0 > timeoutMs) return { settled: false, s: round((now() - t0) / 1000, 3), bytes: last.bytes }
    await sleep(100)
    const st = dirState(dir)
    if (st.bytes !== last.bytes || st.mtimeMs !== last.mtimeMs) {
      last = st
      lastChange = now()
    }
  }
  return { settled: true, s: round((lastChange - t0) / 1000, 3), bytes: last.bytes }
}

// Scenario 5: type a trace keystroke by keystroke while another client watches.
async function replay () {
  const trace = loadTrace(cfg.trace)
  const count = Math.min(cfg.ops ?? trace.ops.length, trace.ops.length)
  const room = `${cfg.room_prefix ?? ''}replay`
  const bytes0 = dirBytes(cfg.data_dir)
  const s0 = srv()
  const d0 = driverCpuS()
  const r = await replayOps(trace, count, room, { windowSize: cfg.window ?? 32, timeLimitMs: cfg.time_limit_ms ?? 300000 })
  const s1 = srv()
  const d1 = driverCpuS()
  const settle = cfg.data_dir ? await settleDir(cfg.data_dir) : null
  if (!r.complete) onWarning(`replay: time limit reached after ${r.acked} of ${count} ops`)
  if (settle && !settle.settled) onWarning(`replay: the store was still writing ${settle.s} s after the last update was seen`)
  return {
    ops: count,
    ops_done: r.acked,
    complete: r.complete,
    window: cfg.window ?? 32,
    total_s: round(r.elapsed, 3),
    ops_per_s: Math.round(r.acked / r.elapsed),
    latency_ms: percentiles(r.lat),
    final_chars: r.watcher.text.length,
    dir_bytes_settled: settle ? settle.bytes - bytes0 : null,
    store_settle_s: settle ? settle.s : null,
    store_settled: settle ? settle.settled : null,
    ...cpuWindow(s0, s1, d0, d1)
  }
}

// Scenario 4, part 1: build the documents through the server, and wait until stored.
async function coldloadBuild () {
  const trace = loadTrace(cfg.trace)
  const out = {}
  for (const doc of cfg.docs) {
    const count = Math.min(doc.ops, trace.ops.length)
    const r = await replayOps(trace, count, doc.room, { windowSize: cfg.window ?? 64, timeLimitMs: cfg.time_limit_ms ?? 600000 })
    if (!r.complete) onWarning(`coldload build ${doc.room}: time limit reached after ${r.acked} of ${count} ops`)
    const settle = await settleDir(cfg.data_dir)
    if (!settle.settled) onWarning(`coldload build ${doc.room}: the store was still writing ${settle.s} s after the last update was seen`)
    r.writer.close()
    r.watcher.close()
    await Promise.all([r.writer.closed(), r.watcher.closed()])
    out[doc.room] = { ops: count, complete: r.complete, build_s: round(r.elapsed, 3), store_settle_s: settle.s, settled: settle.settled, chars: r.writer.text.length }
  }
  // Some servers store on the last disconnect (Hocuspocus): wait for that too, unless a
  // store already could not keep up (then this would only time out again).
  const allSettled = Object.values(out).every((d) => d.settled)
  const settle = allSettled ? await settleDir(cfg.data_dir) : { bytes: dirBytes(cfg.data_dir), settled: false }
  return { docs: out, dir_bytes: settle.bytes, settled: settle.settled }
}

// Scenario 4, part 2: a fresh client on a freshly started server; time until it holds the doc.
async function coldloadMeasure () {
  const trace = loadTrace(cfg.trace)
  const out = {}
  // This driver process is fresh too: decode a locally built document a few times so that
  // Yjs's decoding is compiled before the timed loads (a cold apply of the paper document is
  // several times slower than a warm one, and would count against every server).
  const local = new Y.Doc()
  const localText = local.getText('content')
  for (let i = 0; i < Math.min(20000, trace.ops.length); i++) {
    const [pos, del, ins] = trace.ops[i]
    local.transact(() => {
      if (del > 0) localText.delete(pos, del)
      if (ins.length > 0) localText.insert(pos, ins)
    })
  }
  const localUpdate = Y.encodeStateAsUpdate(local)
  for (let i = 0; i < 5; i++) Y.applyUpdate(new Y.Doc(), localUpdate)
  // The first connection to a fresh server process pays for its warm-up (lazy imports, JIT,
  // opening the database): do that on an empty room first, and report it apart.
  const warm = newClient(`warmup-${Date.now()}`, { awareness: false })
  const tw = now()
  try {
    await warm.connect(cfg.connect_timeout_ms ?? 60000)
  } catch (err) {
    onError(`coldload warm-up: ${err.message}`)
  }
  const warmupMs = round(now() - tw, 3)
  warm.close()
  await warm.closed()
  for (const doc of cfg.docs) {
    const want = expectedText(trace, Math.min(doc.ops, trace.ops.length))
    const c = newClient(doc.room, { awareness: false })
    const s0 = srv()
    const t0 = now()
    let tFull = null
    c.onRemote = () => {
      if (tFull === null && c.text.length === want.length) tFull = now()
    }
    try {
      await c.connect(cfg.connect_timeout_ms ?? 60000)
    } catch (err) {
      onError(`coldload ${doc.room}: ${err.message}`)
    }
    const tSynced = now()
    if (tFull === null && c.text.length === want.length) tFull = tSynced
    await waitFor(() => tFull !== null, cfg.load_timeout_ms ?? 60000, 1)
    const s1 = srv()
    const ok = c.text.toString() === want
    if (!ok) onError(`coldload ${doc.room}: loaded ${c.text.length} chars, want ${want.length}`)
    out[doc.room] = {
      load_ms: tFull === null ? null : round(tFull - t0, 3),
      synced_ms: round(tSynced - t0, 3),
      chars: c.text.length,
      ok,
      server_cpu_s: round(s1.cpuS - s0.cpuS, 3),
      server_rss_kib: s1.rssKiB
    }
    c.close()
    await c.closed()
  }
  return { warmup_ms: warmupMs, docs: out }
}

const scenarios = {
  fanout,
  throughput,
  idle,
  replay,
  coldload_build: coldloadBuild,
  coldload_measure: coldloadMeasure,
  cursors,
  many_rooms: manyRooms,
  large_docs: largeDocs
}

async function main () {
  const hard = setTimeout(() => {
    onError(`hard deadline of ${cfg.hard_timeout_ms} ms reached`)
    finish({ aborted: true })
  }, cfg.hard_timeout_ms ?? 900000)
  hard.unref()
  const fn = scenarios[cfg.scenario]
  if (!fn) throw new Error(`unknown scenario ${cfg.scenario}`)
  let result
  try {
    result = await fn()
  } catch (err) {
    onError(`${cfg.scenario}: ${err && err.stack ? err.stack : err}`)
    result = { aborted: true }
  }
  for (const c of live) c.close()
  await Promise.all(live.map((c) => c.closed(1000)))
  finish(result)
}

function finish (result) {
  const bytesIn = live.reduce((a, c) => a + c.bytesIn, 0)
  const bytesOut = live.reduce((a, c) => a + c.bytesOut, 0)
  process.stdout.write(JSON.stringify({ scenario: cfg.scenario, ...result, bytes_in: bytesIn, bytes_out: bytesOut, warnings, errors }) + '\n')
  process.exit(0)
}

main()
