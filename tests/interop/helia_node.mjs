// A Helia node on 127.0.0.1 for the interoperability tests (Helia 7 / js-libp2p 3 on Node 20).
//   node helia_node.mjs serve FILE...     add each FILE as kubo would, print {"cid" (the first),"cids","peerId","multiaddrs"}, serve until SIGTERM
//   node helia_node.mjs fetch ADDR CID OUT   dial ADDR, fetch CID over Bitswap into OUT, print {"bytes"}
// Only TCP, Noise, Yamux, identify and Bitswap: no DHT, bootstrap, relay or HTTP, so nothing leaves loopback.

// js-libp2p 3 calls Promise.withResolvers, which Node 20 lacks; static imports are hoisted, so the
// polyfill comes first and everything else is imported dynamically after it.
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
const fs = await import('node:fs')

async function startNode () {
  const helia = withBitswap(withLibp2pLight(createHeliaLight({
    blockstore: new MemoryBlockstore(),
    datastore: new MemoryDatastore()
  }), {
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    peerDiscovery: [],
    // Bitswap learns that a peer speaks it from identify.
    services: { identify: identify() }
  }))
  await helia.start()
  return helia
}

// What kubo does for: ipfs add --cid-version=1 --raw-leaves --chunker=size-262144
const KUBO = {
  cidVersion: 1,
  rawLeaves: true,
  chunker: fixedSize({ chunkSize: 262144 }),
  layout: balanced({ maxChildrenPerNode: 174 }),
  reduceSingleLeafToSelf: true
}

const [mode, ...args] = process.argv.slice(2)
if (mode === 'serve') {
  const helia = await startNode()
  const cids = []
  for (const file of args) cids.push((await unixfs(helia).addBytes(fs.readFileSync(file), KUBO)).toString())
  console.log(JSON.stringify({
    cid: cids[0],
    cids,
    peerId: helia.libp2p.peerId.toString(),
    multiaddrs: helia.libp2p.getMultiaddrs().map(String)
  }))
  const stop = async () => { await helia.stop(); process.exit(0) }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
  setTimeout(stop, 120_000) // never outlive a test run
} else if (mode === 'fetch') {
  const [addr, cid, out] = args
  const helia = await startNode()
  const signal = AbortSignal.timeout(60_000)
  await helia.libp2p.dial(multiaddr(addr), { signal })
  const fd = fs.openSync(out, 'w')
  let bytes = 0
  for await (const chunk of unixfs(helia).cat(CID.parse(cid), { signal })) {
    fs.writeSync(fd, chunk)
    bytes += chunk.byteLength
  }
  fs.closeSync(fd)
  console.log(JSON.stringify({ bytes }))
  await helia.stop()
  process.exit(0)
} else {
  console.error('usage: serve FILE... | fetch ADDR CID OUT')
  process.exit(64)
}
