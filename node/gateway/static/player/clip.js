// A clip's pieces: its UnixFS leaves in file order, learned from the DAG.
// Every block is fetched from the trustless gateway (?format=raw) and checked
// against the CID that links to it, starting from the root CID the viewer
// was given, so neither the gateway nor a peer can slip in a wrong piece.

import { blockMatches, codecs, decodeDagPb, decodeUnixFs, parseCid } from "./codec.js";

const FILE = 2;
const RAW_NODE = 0;
const MAX_PIECE = 2 * 1024 * 1024;

export class ClipError extends Error {}

export async function fetchBlock(gateway, cid, signal) {
  const response = await fetch(`${gateway}/ipfs/${cid.string}?format=raw`, {
    headers: { Accept: "application/vnd.ipld.raw" },
    signal,
  });
  if (!response.ok) throw new ClipError(`gateway answered ${response.status} for ${cid.string}`);
  const bytes = new Uint8Array(await response.arrayBuffer());
  if (!(await blockMatches(cid, bytes))) throw new ClipError(`block ${cid.string} from the gateway does not match`);
  return bytes;
}

// The file bytes a piece's block carries.
export function pieceData(piece, block) {
  if (piece.cid.codec === codecs.RAW) return block;
  const node = decodeUnixFs(decodeDagPb(block).data || new Uint8Array(0));
  return node.data;
}

// {root, size, pieces: [{index, cid, offset, size, blockSize}], fetched}:
// raw leaves are known by their CID and not fetched here; leaves that are
// dag-pb nodes (older CIDv0 files) have to be fetched to be told from inner
// nodes, and `fetched` (index -> block) keeps those.
export async function loadClip(gateway, rootText, signal) {
  const root = parseCid(rootText);
  // The leaves under `cid`, which starts at `offset` of the file and holds `expected` bytes (null: unknown).
  const visit = async (cid, offset, expected) => {
    if (cid.codec === codecs.RAW && expected !== null) {
      return [{ cid, offset, size: expected, blockSize: expected }];
    }
    const block = await fetchBlock(gateway, cid, signal);
    if (cid.codec === codecs.RAW) return [{ cid, offset, size: block.length, blockSize: block.length, block }];
    if (cid.codec !== codecs.DAG_PB) throw new ClipError(`not a UnixFS file: codec 0x${cid.codec.toString(16)}`);
    const node = decodeDagPb(block);
    const fs = decodeUnixFs(node.data || new Uint8Array(0));
    if (fs.type !== FILE && fs.type !== RAW_NODE) throw new ClipError("not a file (a directory or other node)");
    if (!node.links.length) return [{ cid, offset, size: fs.data.length, blockSize: block.length, block }];
    if (fs.data.length) throw new ClipError("file nodes with both data and links are not supported");
    if (fs.blockSizes.length !== node.links.length) throw new ClipError("blocksizes do not match the links");
    // Children of one node are fetched together; their offsets follow from blocksizes.
    let childOffset = offset;
    const starts = fs.blockSizes.map((size) => {
      const start = childOffset;
      childOffset += size;
      return start;
    });
    const children = await Promise.all(node.links.map((link, i) => visit(link.cid, starts[i], fs.blockSizes[i])));
    children.forEach((leaves, i) => {
      const got = leaves.reduce((n, leaf) => n + leaf.size, 0);
      if (got !== fs.blockSizes[i]) {
        throw new ClipError(`${node.links[i].cid.string} holds ${got} bytes, ${fs.blockSizes[i]} expected`);
      }
    });
    return children.flat();
  };
  const pieces = await visit(root, 0, null);
  const fetched = new Map();
  pieces.forEach((piece, index) => {
    piece.index = index;
    if (piece.blockSize > MAX_PIECE) throw new ClipError("pieces over 2 MiB: the viewer swarm is not used");
    if (piece.block) fetched.set(index, piece.block);
    delete piece.block;
  });
  const last = pieces[pieces.length - 1];
  return { root, size: last.offset + last.size, pieces, fetched };
}

// The piece holding byte `offset` (binary search over offsets).
export function pieceAt(pieces, offset) {
  let lo = 0;
  let hi = pieces.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (pieces[mid].offset <= offset) lo = mid;
    else hi = mid - 1;
  }
  return pieces[lo];
}
