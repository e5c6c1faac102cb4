// A Helia node on 127.0.0.1 driven one JSON command per line on stdin, for tests/vectors/capture_bitswap.py
// (Helia 7 / js-libp2p 3 on Node 20, installed as tests/integration/test_helia.py installs it; run from that directory).
//   node helia_capture.mjs
// prints {"peerId","multiaddrs"} when ready, then answers each command with one JSON line carrying its "id".
// Commands run concurrently (a fetch that waits does not hold up the next command):
//   {"id","op":"add","path","cidVersion":0|1,"rawLeaves":bool,"chunkSize":N}  -> {"cid"}  (balanced, 174 links)
//   {"id","op":"put","hex"}                       -> {"cid"}   a raw (0x55) sha2-256 block of these bytes
//   {"id","op":"dial","addr"}                     -> {"ok":true}
//   {"id","op":"get","cid","timeout"}             -> {"bytes"} | {"error"}   one block (over Bitswap if not held)
//   {"id","op":"cat","cid","timeout"}             -> {"bytes"} | {"error"}   a UnixFS file
//   {"id","op":"stop"}                            -> {"ok":true}, then exit
// Only TCP, Noise, Yamux, identify and Bitswap: no DHT, bootstrap, relay or HTTP, so nothing leaves loopback.
// It exits on its own after 10 minutes.

if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function () {
    let resolve, reject
    const promise = new Promise((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

const { createHeliaLight } = await import('helia')
const { withLibp2pLight } = await import('@helia/libp2p')
const { withBitswap } = await import('@helia/bitswap')
const { unixfs } = await import('@helia/unixfs')
const { tcp } = await import('@libp2p/tcp')
const { noise } = await import('@chainsafe/libp2p-noise')
const { yamux } = await import('@chainsafe/libp2p-yamux')
const { identify } = await import('@libp2p/identify')
const { MemoryBlockstore } = await import('blockstore-core')
const { MemoryDatastore } = await import('datastore-core')
const { fixedSize } = await import('ipfs-unixfs-importer/chunker')
const { balanced } = await import('ipfs-unixfs-importer/layout')
const { multiaddr } = await import('@multiformats/multiaddr')
const { CID } = await import('multiformats/cid')
const { sha256 } = await import('multiformats/hashes/sha2')
const fs = await import('node:fs')
const readline = await import('node:readline')

const helia = withBitswap(withLibp2pLight(createHeliaLight({
  blockstore: new MemoryBlockstore(),
  datastore: new MemoryDatastore()
}), {
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  peerDiscovery: [],
  services: { identify: identify() }
}))
await helia.start()
const fsys = unixfs(helia)

async function drainBytes (source) {
  let bytes = 0
  const got = await source
  if (got instanceof Uint8Array) return got.byteLength
  for await (const chunk of got) bytes += chunk.byteLength
  return bytes
}

const ops = {
  async add ({ path, cidVersion, rawLeaves, chunkSize }) {
    const cid = await fsys.addBytes(fs.readFileSync(path), {
      cidVersion,
      rawLeaves,
      chunker: fixedSize({ chunkSize }),
      layout: balanced({ maxChildrenPerNode: 174 }),
      reduceSingleLeafToSelf: true
    })
    return { cid: cid.toString() }
  },
  async put ({ hex }) {
    const bytes = Uint8Array.from(Buffer.from(hex, 'hex'))
    const cid = CID.createV1(0x55, await sha256.digest(bytes))
    await helia.blockstore.put(cid, bytes)
    return { cid: cid.toString() }
  },
  async dial ({ addr }) {
    await helia.libp2p.dial(multiaddr(addr), { signal: AbortSignal.timeout(20_000) })
    return { ok: true }
  },
  async get ({ cid, timeout }) {
    return { bytes: await drainBytes(helia.blockstore.get(CID.parse(cid), { signal: AbortSignal.timeout(timeout * 1000) })) }
  },
  async cat ({ cid, timeout }) {
    return { bytes: await drainBytes(fsys.cat(CID.parse(cid), { signal: AbortSignal.timeout(timeout * 1000) })) }
  },
  async stop () {
    setTimeout(async () => { await helia.stop(); process.exit(0) }, 10)
    return { ok: true }
  }
}

console.log(JSON.stringify({ peerId: helia.libp2p.peerId.toString(), multiaddrs: helia.libp2p.getMultiaddrs().map(String) }))
setTimeout(async () => { await helia.stop(); process.exit(0) }, 600_000).unref()

for await (const line of readline.createInterface({ input: process.stdin })) {
  if (!line.trim()) continue
  const command = JSON.parse(line)
  const op = ops[command.op]
  Promise.resolve()
    .then(() => op == null ? { error: `unknown op ${command.op}` } : op(command))
    .catch(err => ({ error: String(err?.message ?? err) }))
    .then(answer => console.log(JSON.stringify({ id: command.id, ...answer })))
}
await helia.stop()
process.exit(0)
