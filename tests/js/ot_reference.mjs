// Answers a batch of calls with the reference text-unicode OT type (npm ot-text-unicode v4).
//
// stdin:  a JSON array of cases, each [name, ...args] where name is one of apply, transform,
//         compose, normalize, transformPosition, invert, invertWithDoc, makeInvertible,
//         stripInvertible, isInvertible.
// stdout: a JSON array with one entry per case: {"ok": result} or {"error": message}.
//
// Used by tests/test_ot_reference.py, which compares every answer with collab.ot.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { type } = require('ot-text-unicode')

const chunks = []
for await (const chunk of process.stdin) chunks.push(chunk)
const cases = JSON.parse(Buffer.concat(chunks).toString('utf8'))

const answers = cases.map(([name, ...args]) => {
  const fn = type[name]
  if (typeof fn !== 'function') return { error: `no such function: ${name}` }
  try {
    // normalize and friends may alias or mutate their input, so every call gets its own copy.
    return { ok: fn(...structuredClone(args)) }
  } catch (e) {
    return { error: String(e && e.message ? e.message : e) }
  }
})
process.stdout.write(JSON.stringify(answers))
