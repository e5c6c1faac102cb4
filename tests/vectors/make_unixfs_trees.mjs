// make_unixfs_trees.mjs: compute UnixFS directory/file test vectors with the
// reference JavaScript importer (ipfs-unixfs-importer), using the options that
// match `ipfs add -r --cid-version=1 --raw-leaves --chunker=size-N DIR` in kubo.
//
// How to run (in a scratch directory, NOT in the medianode repo):
//   mkdir -p /tmp/unixfs-vectors && cd /tmp/unixfs-vectors
//   npm init -y
//   npm install ipfs-unixfs-importer@17.1.1 blockstore-core@7.0.1 \
//       ipfs-unixfs@13.1.1 @ipld/dag-pb@4.2.0 multiformats@14.0.5
//   cp /path/to/medianode/tests/vectors/make_unixfs_trees.mjs .
//   node make_unixfs_trees.mjs > unixfs-trees.json
//
// Output is deterministic; the file contents come from gen() below.

import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'
import { MemoryBlockstore } from 'blockstore-core/memory'
import * as dagPb from '@ipld/dag-pb'
import { UnixFS } from 'ipfs-unixfs'

// Helia-era packages may use Promise.withResolvers, which Node 20 lacks.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function () {
    let resolve, reject
    const promise = new Promise((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

const SEED_PREFIX = 'jsanchors-v1'

// First n bytes of SHA256(seed || u64be(0)) || SHA256(seed || u64be(1)) || ...
function gen (n, seed) {
  const out = Buffer.alloc(n)
  let off = 0
  for (let i = 0n; off < n; i++) {
    const ctr = Buffer.alloc(8)
    ctr.writeBigUInt64BE(i)
    const d = createHash('sha256').update(seed).update(ctr).digest()
    off += d.copy(out, off)
  }
  return new Uint8Array(out.buffer, out.byteOffset, n)
}

// Path relative to the case directory, e.g. "sub/inner/deep.bin".
const seedFor = (relPath) => Buffer.from(`${SEED_PREFIX}/${relPath}`, 'utf8')

if (Buffer.from(gen(12, Buffer.from(SEED_PREFIX))).toString('hex') !== '3164c0c199d9515c22047a72') {
  throw new Error('generator self-check failed')
}

function options (chunkSize) {
  return {
    cidVersion: 1,
    rawLeaves: true,
    chunker: fixedSize({ chunkSize }),
    layout: balanced({ maxChildrenPerNode: 174 }),
    reduceSingleLeafToSelf: true,
    wrapWithDirectory: false
    // shardSplitThresholdBytes / shardSplitStrategy / fieldOrder: left at defaults
  }
}

const f = (path, size) => ({ path, type: 'file', size })
const d = (path) => ({ path, type: 'dir' })

// entries: files and empty directories; intermediate directories are implied.
const DIRS = [
  { name: 'flat', chunk_size: 262144, entries: [f('a', 10), f('b', 0), f('c.txt', 262145)] },
  {
    name: 'sorting',
    chunk_size: 262144,
    entries: ['B', 'a', 'a.txt', 'a-b', 'ä'.normalize('NFC'), 'Z10', 'z2'].map(n => f(n, 5))
  },
  {
    name: 'nested',
    chunk_size: 262144,
    entries: [f('sub/inner/deep.bin', 1000), f('sub/x', 1), f('top', 300000), d('emptydir')]
  },
  { name: 'empty', chunk_size: 262144, entries: [] },
  { name: 'bigfile-1m', chunk_size: 1048576, entries: [f('clip.bin', 3 * 1048576 + 7)] }
]

const C = 262144
const FILES = [
  { size: 0, chunk_size: C },
  { size: C, chunk_size: C },
  { size: C + 1, chunk_size: C },
  { size: 10 * C, chunk_size: C },
  { size: 174 * 2 * C, chunk_size: C },
  { size: 349 * C + 5, chunk_size: C }
]

async function last (it) {
  let out
  for await (const x of it) out = x
  return out
}

async function importDir (spec, blockstore) {
  const candidates = spec.entries.map(e => e.type === 'file'
    ? { path: `${spec.name}/${e.path}`, content: gen(e.size, seedFor(e.path)) }
    : { path: `${spec.name}/${e.path}` })
  if (candidates.length === 0) candidates.push({ path: spec.name })
  // `ipfs add -r` prints the root directory last; so does the importer.
  const root = await last(importer(candidates, blockstore, options(spec.chunk_size)))
  if (root.path !== spec.name) throw new Error(`unexpected root ${root.path}`)
  return root
}

// blockstore-core 7 returns a block as an (async) iterable of chunks.
async function getBlock (bs, cid) {
  const chunks = []
  for await (const c of bs.get(cid)) chunks.push(c)
  return new Uint8Array(Buffer.concat(chunks))
}
const blockHex = async (bs, cid) => Buffer.from(await getBlock(bs, cid)).toString('hex')

const pkgVersion = (name) => JSON.parse(readFileSync(`node_modules/${name}/package.json`, 'utf8')).version
const PKGS = ['ipfs-unixfs-importer', 'ipfs-unixfs', '@ipld/dag-pb', 'multiformats', 'blockstore-core']

const out = {
  description: 'UnixFS DAG vectors computed with the reference JS importer, options matching ' +
    '`ipfs add -r --cid-version=1 --raw-leaves --chunker=size-<chunk_size>` (no wrap). ' +
    'dirs[].entries lists files and empty directories (intermediate directories are implied); ' +
    'dirs[].cid is the root directory CID (the last line `ipfs add -r` prints). ' +
    'files[].cid is the CID of a lone file.',
  generator: {
    algorithm: 'first N bytes of SHA256(seed || uint64_be(0)) || SHA256(seed || uint64_be(1)) || ...',
    seed_rule: 'dirs: seed = UTF-8 of "jsanchors-v1/" + path relative to the case directory (e.g. "jsanchors-v1/sub/x"); ' +
      'files: seed given explicitly per entry',
    check: { n: 12, seed: SEED_PREFIX, hex: '3164c0c199d9515c22047a72' }
  },
  importer: {
    packages: Object.fromEntries(PKGS.map(p => [p, pkgVersion(p)])),
    options: {
      cidVersion: 1,
      rawLeaves: true,
      chunker: 'fixedSize(chunk_size)',
      layout: 'balanced({ maxChildrenPerNode: 174 })',
      reduceSingleLeafToSelf: true,
      wrapWithDirectory: false,
      shardSplitThresholdBytes: '262144 (default)',
      shardSplitStrategy: "'links-bytes' (default: sum over links of UTF-8 name length + CID byte length; shard when > threshold)",
      fieldOrder: "'links-first' (default: dag-pb Links (field 2) precede Data (field 1) in the bytes)"
    }
  },
  dirs: [],
  files: [],
  blocks_hex: {}
}

for (const spec of DIRS) {
  const bs = new MemoryBlockstore()
  const root = await importDir(spec, bs)
  const rootBlock = dagPb.decode(await getBlock(bs, root.cid))
  out.dirs.push({
    name: spec.name,
    chunk_size: spec.chunk_size,
    entries: spec.entries,
    cid: root.cid.toString(),
    root_links: rootBlock.Links.map(l => l.Name),
    root_unixfs_type: UnixFS.unmarshal(rootBlock.Data).type
  })
  if (spec.name === 'flat') {
    out.blocks_hex.flat_root_dir = await blockHex(bs, root.cid)
    const c = rootBlock.Links.find(l => l.Name === 'c.txt')
    out.blocks_hex.file_262145_root = await blockHex(bs, c.Hash)
  }
}

for (const spec of FILES) {
  const bs = new MemoryBlockstore()
  const seed = `${SEED_PREFIX}/file-${spec.size}`
  const res = await last(importer([{ content: gen(spec.size, Buffer.from(seed)) }], bs, options(spec.chunk_size)))
  out.files.push({ size: spec.size, chunk_size: spec.chunk_size, seed, cid: res.cid.toString() })
}

process.stdout.write(JSON.stringify(out, null, 2) + '\n')
