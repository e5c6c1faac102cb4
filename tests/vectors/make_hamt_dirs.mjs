// make_hamt_dirs.mjs: compute HAMT-sharded UnixFS directory test vectors with the
// reference JavaScript importer (ipfs-unixfs-importer), using the options that
// match `ipfs add -r --cid-version=1 --raw-leaves DIR` in kubo, and resolve
// paths inside them with the reference exporter (ipfs-unixfs-exporter).
//
// How to run (in a scratch directory, NOT in the medianode repo):
//   mkdir -p /tmp/hamt-vectors && cd /tmp/hamt-vectors
//   npm init -y
//   npm install ipfs-unixfs-importer@17.1.1 ipfs-unixfs-exporter@16.2.2 blockstore-core@7.0.1 \
//       ipfs-unixfs@13.1.1 @ipld/dag-pb@4.2.0 multiformats@14.0.5
//   cp /path/to/medianode/tests/vectors/make_hamt_dirs.mjs .
//   node make_hamt_dirs.mjs > hamt-dirs.json
//
// Output is deterministic. File names come from name() and sizes from size()
// below, file contents from gen() (the same generator as make_unixfs_trees.mjs),
// so the JSON describes the trees without carrying their bytes.
//
// Where kubo v0.22 and the JS importer disagree on *whether* to shard (see
// `threshold_rules` in the output), a case records the JS default result as
// `cid_js_default` and, as `cid`, the importer's result with a lowered
// shardSplitThresholdBytes that makes it shard exactly as kubo does; the HAMT
// itself does not depend on when the importer switched to it.

import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'
import { exporter } from 'ipfs-unixfs-exporter'
import { MemoryBlockstore } from 'blockstore-core/memory'
import { CID } from 'multiformats/cid'
import { murmur3128 } from '@multiformats/murmur3'
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
const THRESHOLD = 262144
const CID_BYTES = 36 // CIDv1 + sha2-256, raw leaves and dag-pb directories alike

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

// Path relative to the case directory, e.g. "dir-3/a.txt".
const seedFor = (relPath) => Buffer.from(`${SEED_PREFIX}/${relPath}`, 'utf8')

if (Buffer.from(gen(12, Buffer.from(SEED_PREFIX))).toString('hex') !== '3164c0c199d9515c22047a72') {
  throw new Error('generator self-check failed')
}

// Generated file names: ASCII, Cyrillic, CJK, Latin-1 accents and an emoji, with and without extensions.
const STEMS = ['clip-', 'видео-', '画像_', 'café ', 'naïve-ü-', '🎬 take ']
const EXTS = ['.mp4', '.jpg', '.txt', '']
const name = (prefix, i) => `${prefix}${STEMS[i % STEMS.length]}${i}${EXTS[i % EXTS.length]}`
const size = (i) => (i * 7) % 41

const utf8Length = (s) => Buffer.byteLength(s, 'utf8')
const kuboEstimate = (names) => names.reduce((acc, n) => acc + utf8Length(n) + CID_BYTES, 0)
const generated = (prefix, count) => Array.from({ length: count }, (_, i) => name(prefix, i))

// The largest count whose generated names keep kubo's estimate below `limit`.
function countBelow (prefix, limit, extra = 0) {
  let count = 0
  let acc = extra
  while (acc + utf8Length(name(prefix, count)) + CID_BYTES < limit) {
    acc += utf8Length(name(prefix, count)) + CID_BYTES
    count++
  }
  return count
}

// murmur3-x64-64 as boxo and the importer use it: the first 8 bytes of murmur3 x64 128 (h1, big-endian).
async function hamtHash (s) {
  return Buffer.from((await murmur3128.encode(new TextEncoder().encode(s))).subarray(0, 8))
}

function sharedLeadingBits (a, b) {
  let bits = 0
  for (let i = 0; i < a.length; i++) {
    const x = a[i] ^ b[i]
    if (x === 0) { bits += 8; continue }
    return bits + Math.clz32(x) - 24
  }
  return bits
}

// The first two names `${prefix}collide-${i}` whose hashes agree on their first `bits` bits.
async function findCollision (prefix, bits) {
  const seen = new Map()
  for (let i = 0; ; i++) {
    const n = `${prefix}collide-${i}`
    const h = await hamtHash(n)
    const key = h.readUInt32BE(0) >>> (32 - bits)
    if (seen.has(key)) {
      const other = seen.get(key)
      return { names: [other.n, n], shared_bits: sharedLeadingBits(other.h, h) }
    }
    seen.set(key, { n, h })
  }
}

function options (shardSplitThresholdBytes) {
  const opts = {
    cidVersion: 1,
    rawLeaves: true,
    chunker: fixedSize({ chunkSize: 262144 }),
    layout: balanced({ maxChildrenPerNode: 174 }),
    reduceSingleLeafToSelf: true,
    wrapWithDirectory: false
    // shardSplitStrategy / shardFanoutBits / fieldOrder: left at defaults
  }
  if (shardSplitThresholdBytes !== undefined) opts.shardSplitThresholdBytes = shardSplitThresholdBytes
  return opts
}

async function last (it) {
  let out
  for await (const x of it) out = x
  return out
}

// blockstore-core 7 returns a block as an (async) iterable of chunks.
async function getBlock (bs, cid) {
  const chunks = []
  for await (const c of bs.get(cid)) chunks.push(c)
  return new Uint8Array(Buffer.concat(chunks))
}

async function importDir (caseName, files, blockstore, threshold) {
  const candidates = files.map(f => ({ path: `${caseName}/${f.path}`, content: gen(f.size, seedFor(f.path)) }))
  const root = await last(importer(candidates, blockstore, options(threshold)))
  if (root.path !== caseName) throw new Error(`unexpected root ${root.path}`)
  return root
}

// Shard nodes below a HAMT root: how many, how deep (root = depth 0), and each one's path of slot prefixes.
async function shardStats (bs, rootCid) {
  let shards = 0
  let maxDepth = 0
  const paths = new Map()
  const queue = [{ cid: rootCid, depth: 0, path: '' }]
  while (queue.length > 0) {
    const { cid, depth, path } = queue.shift()
    const node = dagPb.decode(await getBlock(bs, cid))
    if (UnixFS.unmarshal(node.Data).type !== 'hamt-sharded-directory') continue
    shards++
    maxDepth = Math.max(maxDepth, depth)
    paths.set(cid.toString(), path)
    for (const l of node.Links) {
      if (l.Name.length === 2) queue.push({ cid: l.Hash, depth: depth + 1, path: path + l.Name })
    }
  }
  return { shards, max_depth: maxDepth, paths }
}

const pkgVersion = (n) => JSON.parse(readFileSync(`node_modules/${n}/package.json`, 'utf8')).version
const PKGS = ['ipfs-unixfs-importer', 'ipfs-unixfs-exporter', 'ipfs-unixfs', '@ipld/dag-pb', 'multiformats',
  'blockstore-core', 'hamt-sharding', '@multiformats/murmur3']

const fileEntry = (path, i) => ({ path, type: 'file', size: size(i) })

// --- the cases -------------------------------------------------------------
// Each: generated names prefix + count (files name(prefix, i) of size(i), i < count), plus `extra` entries.

const P = 'fediverse-media-archive-item-'
const below = countBelow(P, THRESHOLD)
const gap = THRESHOLD - kuboEstimate(generated(P, below))
if (gap < CID_BYTES + 5) throw new Error('pick another prefix: no room for the padding name')
const padName = 'pad-' + 'x'.repeat(gap - CID_BYTES - 4)

const SUBDIRS = Array.from({ length: 8 }, (_, i) => `dir-${i}`)
const subdirEntries = SUBDIRS.flatMap((d, i) => [
  { path: `${d}/a.txt`, type: 'file', size: 3 + i },
  { path: `${d}/b.bin`, type: 'file', size: 30 + i }
])
const subdirEstimate = kuboEstimate(SUBDIRS)
// Files alone stay under the threshold; files + the sub-directory entries reach it.
const withDirsCount = countBelow(P, THRESHOLD, subdirEstimate) + 1

const collision = await findCollision('deep-', 24)

const CASES = [
  {
    name: 'flat-just-below',
    about: 'estimate one entry short of the threshold: a flat directory for kubo and JS',
    prefix: P, count: below, extra: []
  },
  {
    name: 'hamt-just-above',
    about: 'one more entry than flat-just-below: past the threshold for kubo and JS',
    prefix: P, count: below + 1, extra: []
  },
  {
    name: 'hamt-at-threshold',
    about: 'estimate exactly 262144: kubo v0.22 shards (>=), the JS importer keeps it flat (>)',
    prefix: P, count: below, extra: [{ path: padName, type: 'file', size: 3 }],
    kubo_js_threshold: THRESHOLD - 1
  },
  {
    name: 'hamt-subdirs',
    about: 'files alone under the threshold, files + sub-directories at or over it: kubo counts ' +
      'sub-directory links and shards, the JS importer (sub-directories have no CID yet) keeps it flat',
    prefix: P, count: withDirsCount, extra: subdirEntries,
    kubo_js_threshold: kuboEstimate(generated(P, withDirsCount)) - 1
  },
  {
    name: 'hamt-large',
    about: '5000 entries: sub-shards on every root slot and deeper levels below some',
    prefix: 'm-', count: 5000, extra: []
  },
  {
    name: 'hamt-collision',
    about: `two names whose hashes share their first ${collision.shared_bits} bits, among enough others ` +
      'to shard: a chain of single-slot sub-shards down to where they part',
    prefix: P, count: below + 1,
    extra: collision.names.map((n, i) => ({ path: n, type: 'file', size: 11 + i })),
    collision
  }
]

const out = {
  description: 'HAMT-sharded UnixFS directory vectors computed with the reference JS importer, options matching ' +
    '`ipfs add -r --cid-version=1 --raw-leaves` (256 KiB chunks, no wrap). dirs[] are directories of small files: ' +
    'name(prefix, i) with size(i) bytes for i < count, plus extra[] entries (paths relative to the case directory; ' +
    'intermediate directories are implied). dirs[].cid is the root CID kubo v0.22 gives; dirs[].paths maps paths ' +
    'inside it to CIDs, resolved with ipfs-unixfs-exporter.',
  generator: {
    algorithm: 'first N bytes of SHA256(seed || uint64_be(0)) || SHA256(seed || uint64_be(1)) || ...',
    seed_rule: 'seed = UTF-8 of "jsanchors-v1/" + path relative to the case directory',
    check: { n: 12, seed: SEED_PREFIX, hex: '3164c0c199d9515c22047a72' },
    names: { stems: STEMS, exts: EXTS, rule: 'prefix + stems[i % 6] + decimal(i) + exts[i % 4]' },
    sizes: '(i * 7) % 41'
  },
  importer: {
    packages: Object.fromEntries(PKGS.map(p => [p, pkgVersion(p)])),
    options: {
      cidVersion: 1,
      rawLeaves: true,
      chunker: 'fixedSize(262144)',
      layout: 'balanced({ maxChildrenPerNode: 174 })',
      reduceSingleLeafToSelf: true,
      wrapWithDirectory: false,
      shardSplitThresholdBytes: '262144 (default), except dirs[].kubo_js_threshold where given',
      shardSplitStrategy: "'links-bytes' (default)",
      shardFanoutBits: '8 (default: fanout 256)'
    }
  },
  threshold_rules: {
    estimate: 'sum over the directory\'s links of UTF-8 name length + CID byte length',
    kubo: 'boxo v0.11 io.BasicDirectory.needsToSwitchToHAMTDir: shard when estimate >= 262144; every link counts, ' +
      'sub-directories included',
    js: 'ipfs-unixfs-importer 17.1.1 flat-to-shard: shard when estimate > 262144; only children that already have ' +
      'a CID count, so sub-directories (flushed later) count 0'
  },
  dirs: [],
  blocks_hex: {}
}

for (const spec of CASES) {
  const files = [...generated(spec.prefix, spec.count).map((n, i) => fileEntry(n, i)), ...spec.extra]
  const topNames = [...new Set(files.map(f => f.path.split('/')[0]))]
  const jsEstimate = kuboEstimate(files.filter(f => !f.path.includes('/')).map(f => f.path))
  const bs = new MemoryBlockstore()
  const root = await importDir(spec.name, files, bs, spec.kubo_js_threshold)
  const rootNode = dagPb.decode(await getBlock(bs, root.cid))
  const rootType = UnixFS.unmarshal(rootNode.Data).type
  const entry = {
    name: spec.name,
    about: spec.about,
    prefix: spec.prefix,
    count: spec.count,
    extra: spec.extra,
    entries: topNames.length,
    estimate_kubo: kuboEstimate(topNames),
    estimate_js: jsEstimate,
    root_unixfs_type: rootType,
    cid: root.cid.toString()
  }
  if (spec.kubo_js_threshold !== undefined) {
    const plainStore = new MemoryBlockstore()
    const plain = await importDir(spec.name, files, plainStore, undefined)
    entry.kubo_js_threshold = spec.kubo_js_threshold
    entry.cid_js_default = plain.cid.toString()
    entry.root_unixfs_type_js_default = UnixFS.unmarshal(dagPb.decode(await getBlock(plainStore, plain.cid)).Data).type
  }
  if (spec.collision !== undefined) entry.collision = spec.collision
  let stats = null
  if (rootType === 'hamt-sharded-directory') {
    stats = await shardStats(bs, root.cid)
    entry.shards = stats.shards
    entry.max_depth = stats.max_depth
  }
  // A few paths to resolve: first and last generated names, each kind of stem, the extras.
  const picks = new Set([0, 1, 2, 3, 4, 5, spec.count - 1].filter(i => i >= 0 && i < spec.count).map(i => name(spec.prefix, i)))
  for (const e of spec.extra) picks.add(e.path)
  entry.paths = {}
  for (const p of picks) {
    const found = await exporter(`${root.cid}/${p}`, bs)
    entry.paths[p] = found.cid.toString()
  }
  for (const d of SUBDIRS) {
    if (spec.extra.some(e => e.path.startsWith(`${d}/`))) {
      entry.paths[d] = (await exporter(`${root.cid}/${d}`, bs)).cid.toString()
    }
  }
  // The exporter lists the same names the case describes.
  const listed = []
  for await (const child of (await exporter(root.cid, bs)).entries()) listed.push(child.name)
  if (listed.length !== topNames.length || !topNames.every(n => listed.includes(n))) {
    throw new Error(`${spec.name}: exporter lists ${listed.length} entries, expected ${topNames.length}`)
  }
  out.dirs.push(entry)

  if (spec.name === 'hamt-just-above') {
    out.blocks_hex.just_above_root_unixfs_data = Buffer.from(rootNode.Data).toString('hex')
  }
  if (spec.name === 'hamt-collision') {
    // The shard where the pair parts: the one at depth shared_bits / 8 on their common slot path.
    const pairHash = await hamtHash(spec.collision.names[0])
    const partAt = Math.floor(spec.collision.shared_bits / 8)
    const slotPath = pairHash.subarray(0, partAt).toString('hex').toUpperCase()
    const [shardCid] = [...stats.paths].find(([, path]) => path === slotPath)
    const block = await getBlock(bs, CID.parse(shardCid))
    out.blocks_hex.collision_parting_shard = {
      slot_path: slotPath,
      cid: shardCid,
      hex: Buffer.from(block).toString('hex')
    }
  }
}

process.stdout.write(JSON.stringify(out, null, 2) + '\n')
