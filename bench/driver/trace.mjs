// Editing traces (josephg/editing-traces format, see bench/traces/README.md).
import { readFileSync } from 'node:fs'
import { gunzipSync } from 'node:zlib'

/**
 * Load a sequential trace as flat ops, one per patch: [pos, delCount, insText].
 * Positions count code points; Y.Text counts UTF-16 units, so traces with characters outside
 * the BMP are refused rather than replayed wrongly.
 * @param {string} path  .json.gz
 */
export function loadTrace (path) {
  const data = JSON.parse(gunzipSync(readFileSync(path)).toString('utf8'))
  if (/[\uD800-\uDFFF]/.test(data.endContent)) {
    throw new Error(`${path}: has characters outside the BMP; positions would need converting`)
  }
  const ops = []
  for (const txn of data.txns) {
    for (const p of txn.patches) ops.push(p)
  }
  return { ops, endContent: data.endContent }
}

/** The text after the first `count` ops (the trace's endContent when that is all of them). */
export function expectedText (trace, count) {
  if (count >= trace.ops.length) return trace.endContent
  const chars = []
  for (let i = 0; i < count; i++) {
    const [pos, del, ins] = trace.ops[i]
    if (del > 0) chars.splice(pos, del)
    if (ins.length > 0) chars.splice(pos, 0, ...ins)
  }
  return chars.join('')
}
