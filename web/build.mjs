// Build the browser editor into collab/web/dist (or the directory given as the first argument).
//
//   npm ci && npm run build            -> ../collab/web/dist
//   node build.mjs /tmp/somewhere      -> /tmp/somewhere (what tests/test_web_bundle.py does)
//
// Deterministic: the same sources and package-lock.json give byte-identical output. Asset names
// carry esbuild's content hash, so the server may let browsers cache them forever; the HTML
// pages and sw.js keep fixed names and are revalidated on every load. No sourcemaps: they would
// embed paths that differ from one checkout to another.

import * as esbuild from 'esbuild'
import { createHash } from 'node:crypto'
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const outdir = path.resolve(process.argv[2] ?? path.join(here, '..', 'collab', 'web', 'dist'))
const pages = { 'index.html': 'picker', 'editor.html': 'editor' }

const result = await esbuild.build({
  absWorkingDir: here,
  entryPoints: Object.values(pages).map((entry) => `src/${entry}.js`),
  bundle: true,
  format: 'esm',
  target: 'es2020',
  minify: true,
  legalComments: 'eof',
  charset: 'utf8',
  sourcemap: false,
  outdir: 'assets', // relative to absWorkingDir; only the names matter since write is false
  entryNames: '[name]-[hash]',
  assetNames: '[name]-[hash]',
  metafile: true,
  write: false,
  logLevel: 'warning'
})

// entry name ("editor") -> { js: "/assets/editor-HASH.js", css: "/assets/editor-HASH.css" }
const urls = {}
const assetUrl = (file) => '/assets/' + path.basename(file)
for (const [file, output] of Object.entries(result.metafile.outputs)) {
  if (!output.entryPoint) continue
  const entry = path.basename(output.entryPoint, '.js')
  urls[entry] = { js: assetUrl(file), css: output.cssBundle ? assetUrl(output.cssBundle) : null }
}

const files = new Map() // path relative to outdir -> contents
for (const out of result.outputFiles) {
  files.set('assets/' + path.basename(out.path), out.contents)
}
for (const [page, entry] of Object.entries(pages)) {
  let html = await readFile(path.join(here, 'src', page), 'utf8')
  html = html.replaceAll(`{{${entry}.js}}`, urls[entry].js)
  html = html.replaceAll(`{{${entry}.css}}`, urls[entry].css)
  if (html.includes('{{')) throw new Error(`${page}: unfilled placeholder`)
  files.set(page, html)
}

const precache = ['/', '/d/', ...[...files.keys()].filter((f) => f.startsWith('assets/')).map((f) => '/' + f)].sort()
const version = createHash('sha256')
for (const name of [...files.keys()].sort()) version.update(name).update('\0').update(files.get(name)).update('\0')
const sw = (await readFile(path.join(here, 'src', 'sw.js'), 'utf8'))
  .replace("'%VERSION%'", JSON.stringify(version.digest('hex').slice(0, 16)))
  .replace("'%PRECACHE%'", JSON.stringify(precache))
files.set('sw.js', sw)

// Replace only what this script owns, so a mistyped argument cannot wipe an unrelated folder.
await rm(path.join(outdir, 'assets'), { recursive: true, force: true })
await mkdir(path.join(outdir, 'assets'), { recursive: true })
for (const [name, contents] of [...files].sort(([a], [b]) => a.localeCompare(b))) {
  await writeFile(path.join(outdir, name), contents)
}
const total = [...files.values()].reduce((n, c) => n + (typeof c === 'string' ? Buffer.byteLength(c) : c.length), 0)
console.log(`collab web: ${files.size} files, ${(total / 1024).toFixed(0)} KiB -> ${path.relative(process.cwd(), outdir) || '.'}`)
