// A clip's pieces: its UnixFS leaves in file order, learned from the DAG.
// Every block is fetched from the trustless gateway (?format=raw) and checked
// against the CID that links to it, starting from the root CID the viewer
// was given, so neither the gateway nor a peer can slip in a wrong piece.
// Which file nodes are accepted, how they are cut into pieces and whether the
// clip gets a swarm follow the node's clip model (node/swarm/viewers/clip.py);
// tests/vectors/viewer_clips.json holds both to the same DAGs.

import { blockMatches, codecs, decodeDagPb, decodeUnixFs, parseCid, wire } from "./codec.js";

const FILE = 2;
const RAW_NODE = 0;

export class ClipError extends Error {}

// A block, checked against its CID; `limit` bounds its size (default: a piece's).
export async function fetchBlock(gateway, cid, signal, limit = wire.max_piece_bytes) {
  const response = await fetch(`${gateway}/ipfs/${cid.string}?format=raw`, {
    headers: { Accept: "application/vnd.ipld.raw" },
    signal,
  });
  if (!response.ok) throw new ClipError(`gateway answered ${response.status} for ${cid.string}`);
  const bytes = new Uint8Array(await response.arrayBuffer());
  if (bytes.length > limit) throw new ClipError(`the gateway sent more than ${limit} bytes for block ${cid.string}`);
  if (!(await blockMatches(cid, bytes))) throw new ClipError(`block ${cid.string} from the gateway does not match`);
  return bytes;
}

// The file bytes a piece's block carries.
export function pieceData(piece, block) {
  if (piece.cid.codec === codecs.RAW) return block;
  const node = decodeUnixFs(decodeDagPb(block).data || new Uint8Array(0));
  return node.data;
}

// Why a clip with these pieces gets no swarm, or null when it does.
export function swarmRefusal(pieces) {
  if (!pieces.length) return "an empty file has no pieces to share";
  if (pieces.length > wire.max_pieces) return `more than ${wire.max_pieces} pieces`;
  if (pieces.some((p) => !(p.blockSize > 0 && p.blockSize <= wire.max_piece_bytes))) {
    return `pieces must be 1 to ${wire.max_piece_bytes} bytes: use the gateway`;
  }
  return null;
}

// {root, size, pieces: [{index, cid, offset, size, blockSize}], fetched, refusal}:
// raw leaves are known by their CID and their parent's blocksizes and not
// fetched here; dag-pb nodes are, and `fetched` (index -> block) keeps those
// that are pieces (nodes with bytes of their own). `refusal` is swarmRefusal's.
export async function learnClip(gateway, rootText, signal) {
  const root = parseCid(rootText);
  let nodes = 0;
  // The pieces under `cid`, which starts at `offset` of the file and holds `expected` bytes (null: unknown).
  const visit = async (cid, offset, expected) => {
    if (cid.codec === codecs.RAW && expected !== null) {
      return [{ cid, offset, size: expected, blockSize: expected }];
    }
    if (++nodes > wire.max_pieces) throw new ClipError(`more than ${wire.max_pieces} nodes`);
    const limit = cid.codec === codecs.DAG_PB ? wire.max_dag_node_bytes : wire.max_piece_bytes;
    const block = await fetchBlock(gateway, cid, signal, limit);
    if (cid.codec === codecs.RAW) return [{ cid, offset, size: block.length, blockSize: block.length, block }];
    if (cid.codec !== codecs.DAG_PB) throw new ClipError(`not a UnixFS file: codec 0x${cid.codec.toString(16)}`);
    const node = decodeDagPb(block);
    const fs = decodeUnixFs(node.data || new Uint8Array(0));
    if (fs.type !== FILE && fs.type !== RAW_NODE) throw new ClipError("not a file (a directory or other node)");
    if (fs.blockSizes.length !== node.links.length) throw new ClipError("blocksizes do not match the links");
    const own = fs.data.length;
    const holds = fs.blockSizes.reduce((n, size) => n + size, own);
    if (fs.fileSize !== null && fs.fileSize !== holds) {
      throw new ClipError(`${cid.string}: filesize says ${fs.fileSize} bytes, its data and blocksizes ${holds}`);
    }
    if (expected !== null && holds !== expected) {
      throw new ClipError(`${cid.string} holds ${holds} bytes, ${expected} expected`);
    }
    const pieces = own ? [{ cid, offset, size: own, blockSize: block.length, block }] : [];
    // Children of one node are fetched together; their offsets follow from blocksizes. Empty ones hold no piece.
    let childOffset = offset + own;
    const children = node.links.map((link, i) => {
      const start = childOffset;
      childOffset += fs.blockSizes[i];
      return fs.blockSizes[i] ? visit(link.cid, start, fs.blockSizes[i]) : [];
    });
    return pieces.concat((await Promise.all(children)).flat());
  };
  const pieces = await visit(root, 0, null);
  const fetched = new Map();
  pieces.forEach((piece, index) => {
    piece.index = index;
    if (piece.block) fetched.set(index, piece.block);
    delete piece.block;
  });
  const size = pieces.reduce((n, piece) => n + piece.size, 0);
  return { root, size, pieces, fetched, refusal: swarmRefusal(pieces) };
}

// learnClip's clip, for playing through the swarm: a clip that cannot have one is a ClipError.
export async function loadClip(gateway, rootText, signal) {
  const clip = await learnClip(gateway, rootText, signal);
  if (clip.refusal !== null) throw new ClipError(`the viewer swarm is not used: ${clip.refusal}`);
  return clip;
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
