// Server CPU time and RSS from /proc, summed over a process and its live descendants.
// CPU counts utime+stime of each process plus cutime+cstime (children already reaped).
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'

function readStat (pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' ')
    // rest[0] is field 3 (state): field n is rest[n - 3]
    return {
      ppid: Number(rest[1]),
      ticks: Number(rest[11]) + Number(rest[12]) + Number(rest[13]) + Number(rest[14])
    }
  } catch {
    return null // the process exited between listing and reading
  }
}

function descendants (rootPid) {
  const children = new Map()
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    const st = readStat(name)
    if (st === null) continue
    if (!children.has(st.ppid)) children.set(st.ppid, [])
    children.get(st.ppid).push(Number(name))
  }
  const out = [rootPid]
  for (let i = 0; i < out.length; i++) out.push(...(children.get(out[i]) ?? []))
  return out
}

function rssKiB (pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) : 0
  } catch {
    return 0
  }
}

/** Busy CPU seconds of the whole machine, all cores (/proc/stat, user..steal without idle). */
function machineBusyS (clkTck) {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number)
    // user nice system idle iowait irq softirq steal
    return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / clkTck
  } catch {
    return 0
  }
}

/**
 * A snapshot of the server process tree.
 * @param {number|null} pid
 * @param {number} clkTck clock ticks per second (os.sysconf('SC_CLK_TCK'), usually 100)
 */
export function sample (pid, clkTck) {
  const t = performance.now()
  const busyS = machineBusyS(clkTck)
  if (!pid) return { t, cpuS: 0, rssKiB: 0, busyS }
  let ticks = 0
  let rss = 0
  for (const p of descendants(pid)) {
    const st = readStat(p)
    if (st !== null) ticks += st.ticks
    rss += rssKiB(p)
  }
  return { t, cpuS: ticks / clkTck, rssKiB: rss, busyS }
}

/** Driver CPU seconds so far (this Node process). */
export function driverCpuS () {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1e6
}

/** Total size in bytes of the files under `dir` (0 if missing). */
export function dirBytes (dir) {
  return dirState(dir).bytes
}

/** Size and newest modification time of the files under `dir` (a store may rewrite pages in place). */
export function dirState (dir) {
  const state = { bytes: 0, mtimeMs: 0 }
  if (!dir) return state
  const walk = (d) => {
    let entries
    try {
      entries = readdirSync(d, { withFileTypes: true })
    } catch {
      return
    }
    for (const e of entries) {
      const p = join(d, e.name)
      if (e.isDirectory()) walk(p)
      else {
        try {
          const st = statSync(p)
          state.bytes += st.size
          if (st.mtimeMs > state.mtimeMs) state.mtimeMs = st.mtimeMs
        } catch {}
      }
    }
  }
  walk(dir)
  return state
}
