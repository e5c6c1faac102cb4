"""HAMT-sharded UnixFS directories (UnixFS type 5, ``HAMTShard``), as kubo and the JavaScript importer write them.

A directory too large for one dag-pb node is spread over a hash array mapped
trie of shard nodes. Each entry name is hashed; the hash is read a few bits at
a time, one group of bits per trie level, and each group picks one of the
node's ``fanout`` slots. A slot holds either the entry itself or, when two or
more names share the same bits so far, a sub-shard one level down that reads
the next group. The trie's shape therefore depends only on the set of names,
never on the order they were added, and equal directories get equal CIDs.

Goals: the root CID of a directory sharded here equals kubo v0.22's (boxo
v0.11) and ipfs-unixfs-importer 17's for the same entries; a shard from any
peer is validated before it is trusted; reading is a set of pure steps, so a
caller does its own block I/O (synchronously from the store, asynchronously
from peers) and nothing here can loop or recurse without bound on hostile
input. Non-goals: editing a shard in place (we always build from the full
entry list), other hash functions, mode/mtime metadata on shard nodes, and
collapsing a HAMT back to a flat directory.

The rules, as boxo ``ipld/unixfs/hamt`` and js ``hamt-sharding`` +
``ipfs-unixfs-importer/src/dir-sharded`` implement them:

- Hash: murmur3-x64-64 (multicodec ``0x22``), which is the first 64-bit half
  (``h1``) of murmur3 x64 128 with seed 0 over the UTF-8 bytes of the name.
- Bits: read most-significant first from ``h1``; a shard of fanout ``2**b``
  at depth ``d`` (the root is depth 0) uses bits ``[b*d, b*(d+1))`` counted
  from the top. With the default fanout 256 that is byte ``d`` of ``h1``
  written big-endian. When the 64 bits run out (two different names whose
  hashes agree on every bit a level can read) boxo refuses ("sharded
  directory too deep") and so do we; the JS importer would rehash the name
  with a depth byte appended, which no kubo could read back the same way.
  So no valid HAMT has more than ``64 // b`` levels (8 at fanout 256).
- Node: dag-pb with UnixFS Data ``Type=5, Data=bitfield, hashType=0x22,
  fanout=256`` in that field order; no filesize, no blocksizes. The
  bitfield is the integer whose bit ``i`` is set when slot ``i`` is used,
  written big-endian with its leading zero bytes dropped (empty: no Data).
  Fanout is a power of two from 8 to 1024 (boxo: ``Logtwo``, go-bitfield's
  multiple-of-8 rule and ``maximumHamtWidth``; the UnixFS spec agrees).
- Links: one per set bit, in slot order. Names start with the slot index
  in uppercase hex, zero-padded to the width of ``fanout - 1`` (two
  characters at 256); an entry's link continues with the entry name, a
  sub-shard's link is the two characters alone. Tsize is the child's
  cumulative DAG size: an entry's own Tsize, or for a sub-shard its block
  length plus its links' Tsizes.
- When to shard (what ``import_tree`` decides): kubo's estimate is the sum
  over all entries of ``len(utf8 name) + len(CID bytes)``, and kubo v0.22
  shards once that reaches 262144 bytes (``>=``). See ``needs_sharding``.

Errors are ``HAMTError`` (a ``UnixFSError``) whose message names the CID of
the offending block.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeAlias

import mmh3

from .cid import CID, DAG_PB
from .dagpb import DagPBError, PBLink, PBNode, decode_node, encode_node
from .protobuf import ProtobufError, bytes_field, read_fields, varint_field
from .unixfs import Child, NodeType, UnixFSError

HASH_MURMUR3 = 0x22
HASH_BITS = 64
DEFAULT_FANOUT = 256
MIN_FANOUT = 8
MAX_FANOUT = 1024
# kubo's Internal.UnixFSShardingSizeThreshold default (boxo io.HAMTShardingSize).
SHARD_THRESHOLD = 262144

_HEX_DIGITS = frozenset("0123456789ABCDEF")


class HAMTError(UnixFSError):
    """A HAMT shard that is malformed, inconsistent, too deep or loops; the message names its CID."""


# ---------------------------------------------------------------------------
# The hash and the trie's geometry


def name_hash(name: str) -> int:
    """murmur3-x64-64 of a name: the first 64 bits of murmur3 x64 128 (seed 0) over its UTF-8 bytes."""
    h1, _h2 = mmh3.hash64(name.encode("utf-8"), seed=0, x64arch=True, signed=False)
    return int(h1)


def fanout_bits(fanout: int) -> int:
    """log2(fanout); raise ``ValueError`` for a fanout boxo would not accept."""
    if not MIN_FANOUT <= fanout <= MAX_FANOUT or fanout & (fanout - 1):
        raise ValueError(f"fanout must be a power of two from {MIN_FANOUT} to {MAX_FANOUT}, got {fanout}")
    return fanout.bit_length() - 1


def max_levels(fanout: int = DEFAULT_FANOUT) -> int:
    """How many shard levels a HAMT of this fanout can have before the 64 hash bits run out."""
    return HASH_BITS // fanout_bits(fanout)


def slot_index(hash64: int, depth: int, fanout: int = DEFAULT_FANOUT) -> int:
    """The slot a name with this hash takes in a shard at ``depth`` (root = 0)."""
    bits = fanout_bits(fanout)
    if not 0 <= depth < HASH_BITS // bits:
        raise ValueError(f"depth {depth} is past the {HASH_BITS} hash bits of a fanout-{fanout} HAMT")
    return (hash64 >> (HASH_BITS - bits * (depth + 1))) & (fanout - 1)


def _prefix_width(fanout: int) -> int:
    return len(f"{fanout - 1:X}")


def _prefix(index: int, fanout: int) -> str:
    return f"{index:0{_prefix_width(fanout)}X}"


# ---------------------------------------------------------------------------
# When to shard


def estimated_size(entries: Mapping[str, Child]) -> int:
    """kubo's estimate of a flat directory node: sum of UTF-8 name length + CID byte length over all entries."""
    return sum(len(name.encode("utf-8")) + len(bytes(child.cid)) for name, child in entries.items())


def needs_sharding(entries: Mapping[str, Child], threshold: int = SHARD_THRESHOLD) -> bool:
    """True when kubo v0.22 would make this directory a HAMT (estimate ``>=`` threshold).

    The JS importer 17 shards only when the estimate is ``>`` the threshold and
    counts no sub-directory entries (they have no CID yet when it checks), so
    it keeps some directories flat that kubo shards.
    """
    return estimated_size(entries) >= threshold


# ---------------------------------------------------------------------------
# Building


def shard_data(bitfield: int, fanout: int = DEFAULT_FANOUT) -> bytes:
    """The UnixFS Data of a shard node: Type, Data (bitfield), hashType, fanout, in that order."""
    out = varint_field(1, int(NodeType.HAMT_SHARD))
    if bitfield:
        out += bytes_field(2, bitfield.to_bytes((bitfield.bit_length() + 7) // 8, "big"))
    return out + varint_field(5, HASH_MURMUR3) + varint_field(6, fanout)


def build_shard(
    entries: Mapping[str, Child],
    put: Callable[[CID, bytes], None],
    fanout: int = DEFAULT_FANOUT,
) -> Child:
    """Write every shard node of a HAMT over ``entries`` with ``put(cid, block)`` (children first, as a
    ``BlockSink``'s ``put`` takes them); return the root. Raises ``UnixFSError`` for an empty
    entry name (its link would read as a sub-shard) and ``HAMTError`` for two
    names whose hashes cannot be told apart within 64 bits.
    """
    bits = fanout_bits(fanout)
    levels = HASH_BITS // bits
    for name in entries:
        if not name:
            raise UnixFSError("a HAMT entry needs a non-empty name")
    # Sorted by hash, the names under any slot path form one contiguous run, in slot order.
    ordered = sorted((name_hash(name), name) for name in entries)

    def build(lo: int, hi: int, depth: int) -> Child:
        shift = HASH_BITS - bits * (depth + 1)
        links: list[PBLink] = []
        bitfield = 0
        children_size = 0
        start = lo
        while start < hi:
            index = (ordered[start][0] >> shift) & (fanout - 1)
            end = start + 1
            while end < hi and (ordered[end][0] >> shift) & (fanout - 1) == index:
                end += 1
            bitfield |= 1 << index
            if end - start == 1:
                name = ordered[start][1]
                child = entries[name]
                links.append(PBLink(child.cid, _prefix(index, fanout) + name, child.tsize))
            else:
                if depth + 1 >= levels:
                    clash = ", ".join(repr(ordered[i][1]) for i in range(start, end))
                    raise HAMTError(f"names {clash} share all {HASH_BITS} hash bits: sharded directory too deep")
                child = build(start, end, depth + 1)
                links.append(PBLink(child.cid, _prefix(index, fanout), child.tsize))
            children_size += child.tsize
            start = end
        block = encode_node(PBNode(tuple(links), shard_data(bitfield, fanout)))
        cid = CID.for_block(DAG_PB, block)
        put(cid, block)
        return Child(cid, len(block) + children_size, 0)

    return build(0, len(ordered), 0)


# ---------------------------------------------------------------------------
# Reading: one node


@dataclass(frozen=True, slots=True)
class ShardLink:
    """One used slot of a shard: an entry (``name`` set) or a sub-shard (``name`` is None)."""

    index: int
    name: str | None
    cid: CID
    tsize: int | None

    @property
    def is_shard(self) -> bool:
        return self.name is None


@dataclass(frozen=True, slots=True)
class Shard:
    """A decoded, validated shard node. ``links`` are in slot order, one per set bit of ``bitfield``."""

    cid: CID
    fanout: int
    bitfield: int
    links: tuple[ShardLink, ...]

    def at(self, index: int) -> ShardLink | None:
        """The link in slot ``index``, or None when that slot is empty."""
        if not 0 <= index < self.fanout or not self.bitfield >> index & 1:
            return None
        return self.links[(self.bitfield & ((1 << index) - 1)).bit_count()]


@dataclass(frozen=True, slots=True)
class Entry:
    """A directory entry found in a HAMT."""

    name: str
    cid: CID
    tsize: int | None


def _shard_fields(cid: CID, data: bytes) -> tuple[int | None, bytes, int | None, int | None]:
    """(Type, bitfield bytes, hashType, fanout) from a UnixFS Data message."""
    node_type: int | None = None
    bitfield = b""
    hash_type: int | None = None
    fanout: int | None = None
    try:
        fields = read_fields(data)
    except ProtobufError as exc:
        raise HAMTError(f"{cid}: malformed UnixFS data: {exc}") from None
    for number, _wire_type, value in fields:
        if number in (1, 5, 6):
            if not isinstance(value, int):
                raise HAMTError(f"{cid}: UnixFS field {number} must be a varint")
            if number == 1:
                node_type = value
            elif number == 5:
                hash_type = value
            else:
                fanout = value
        elif number == 2:
            if isinstance(value, int):
                raise HAMTError(f"{cid}: UnixFS Data field must be bytes")
            bitfield = bytes(value)
    return node_type, bitfield, hash_type, fanout


def decode_shard(cid: CID, block: bytes | memoryview, fanout: int | None = None) -> Shard:
    """Decode and validate one shard node; ``fanout`` (the root's), when given, must match.

    Checks: dag-pb with UnixFS type 5, hashType 0x22, a fanout boxo accepts,
    a bitfield no longer than ``fanout / 8`` bytes whose popcount equals the
    number of links, and link names that start with the uppercase hex of the
    set bits in order (sub-shards: the prefix alone, pointing at a dag-pb CID).
    """
    if cid.codec != DAG_PB:
        raise HAMTError(f"{cid}: a HAMT shard must be a dag-pb block, not {cid.codec_name}")
    try:
        node = decode_node(block)
    except DagPBError as exc:
        raise HAMTError(f"{cid}: not a dag-pb node: {exc}") from None
    if node.data is None:
        raise HAMTError(f"{cid}: dag-pb node has no UnixFS data")
    node_type, bitfield_bytes, hash_type, node_fanout = _shard_fields(cid, node.data)
    if node_type != NodeType.HAMT_SHARD:
        kind = "no Type" if node_type is None else f"UnixFS type {node_type}"
        raise HAMTError(f"{cid}: not a HAMT shard ({kind})")
    if hash_type != HASH_MURMUR3:
        shown = "missing" if hash_type is None else f"0x{hash_type:x}"
        raise HAMTError(f"{cid}: unsupported HAMT hashType {shown} (only murmur3-x64-64, 0x22)")
    if node_fanout is None:
        raise HAMTError(f"{cid}: HAMT shard without a fanout")
    try:
        fanout_bits(node_fanout)
    except ValueError as exc:
        raise HAMTError(f"{cid}: {exc}") from None
    if fanout is not None and node_fanout != fanout:
        raise HAMTError(f"{cid}: sub-shard fanout {node_fanout} differs from the HAMT root's {fanout}")
    if len(bitfield_bytes) > node_fanout // 8:
        raise HAMTError(f"{cid}: bitfield of {len(bitfield_bytes)} bytes is too long for fanout {node_fanout}")
    bitfield = int.from_bytes(bitfield_bytes, "big")
    if bitfield.bit_count() != len(node.links):
        raise HAMTError(
            f"{cid}: bitfield has {bitfield.bit_count()} slots set but the node has {len(node.links)} links"
        )
    width = _prefix_width(node_fanout)
    links: list[ShardLink] = []
    rest = bitfield
    for position, link in enumerate(node.links):
        index = (rest & -rest).bit_length() - 1
        rest &= rest - 1
        label = link.name or ""
        head = label[:width]
        if len(head) < width or not _HEX_DIGITS.issuperset(head):
            raise HAMTError(f"{cid}: link {position} name {label!r} does not start with {width} uppercase hex digits")
        if int(head, 16) != index:
            raise HAMTError(
                f"{cid}: link {position} is named for slot {head} but the bitfield puts it in slot {index:X}"
            )
        if len(label) == width:
            if link.cid.codec != DAG_PB:
                raise HAMTError(f"{cid}: sub-shard link {head} points at a {link.cid.codec_name} block")
            links.append(ShardLink(index, None, link.cid, link.tsize))
        else:
            links.append(ShardLink(index, label[width:], link.cid, link.tsize))
    return Shard(cid, node_fanout, bitfield, tuple(links))


def sub_shards(cid: CID, block: bytes | memoryview) -> list[CID]:
    """The sub-shards a directory node links to: none for a flat directory or another node."""
    if cid.codec != DAG_PB or not is_shard(block):
        return []
    return [link.cid for link in decode_shard(cid, block).links if link.is_shard]


def is_shard(block: bytes | memoryview) -> bool:
    """True when a dag-pb block's UnixFS type is HAMTShard (no other validation)."""
    try:
        node = decode_node(block)
        if node.data is None:
            return False
        for number, _wire_type, value in read_fields(node.data):
            if number == 1:
                return value == NodeType.HAMT_SHARD
    except (DagPBError, ProtobufError):
        return False
    return False


# ---------------------------------------------------------------------------
# Reading: lookups, one step at a time


@dataclass(frozen=True, slots=True)
class Found:
    entry: Entry


@dataclass(frozen=True, slots=True)
class Descend:
    """Fetch ``cid`` and call ``lookup_step`` on it with this ``depth`` and ``fanout``."""

    cid: CID
    depth: int
    fanout: int


@dataclass(frozen=True, slots=True)
class Absent:
    pass


LookupStep: TypeAlias = Found | Descend | Absent


def _check_depth(cid: CID, depth: int, fanout: int) -> None:
    levels = HASH_BITS // fanout_bits(fanout)
    if not 0 <= depth < levels:
        raise HAMTError(
            f"{cid}: shard at depth {depth} is deeper than any valid fanout-{fanout} HAMT ({levels} levels)"
        )


def lookup_step(
    cid: CID, block: bytes | memoryview, name: str, depth: int = 0, fanout: int | None = None
) -> LookupStep:
    """Look ``name`` up in one shard node at ``depth`` (root: 0, fanout None).

    Returns ``Found`` (the entry), ``Descend`` (the sub-shard to fetch next,
    with the depth and fanout to pass back in) or ``Absent``.
    """
    shard = decode_shard(cid, block, fanout)
    _check_depth(cid, depth, shard.fanout)
    link = shard.at(slot_index(name_hash(name), depth, shard.fanout))
    if link is None:
        return Absent()
    if link.name is None:
        _check_depth(cid, depth + 1, shard.fanout)
        return Descend(link.cid, depth + 1, shard.fanout)
    if link.name == name:
        return Found(Entry(name, link.cid, link.tsize))
    return Absent()


def lookup(root: CID, name: str, get_block: Callable[[CID], bytes]) -> Entry | None:
    """Find ``name`` in the HAMT rooted at ``root``, fetching shard blocks with ``get_block``."""
    step = lookup_step(root, get_block(root), name)
    seen = {root}
    while isinstance(step, Descend):
        if step.cid in seen:
            raise HAMTError(f"{step.cid}: HAMT loop: this shard links back to itself or an ancestor")
        seen.add(step.cid)
        step = lookup_step(step.cid, get_block(step.cid), name, step.depth, step.fanout)
    return step.entry if isinstance(step, Found) else None


# ---------------------------------------------------------------------------
# Reading: every entry


def iter_entries(root: CID, get_block: Callable[[CID], bytes]) -> Iterator[Entry]:
    """Yield every entry of the HAMT rooted at ``root``, in trie order, fetching blocks lazily.

    Walks depth-first without recursion and keeps only the shards on the
    current path. A sub-shard past the last level a valid HAMT can have, a
    link back to a shard on the path, and an entry whose name does not hash
    to the slots it sits in are all ``HAMTError``. ``get_block`` must return
    blocks already verified against their CIDs (the store does).
    """
    top = decode_shard(root, get_block(root))
    fanout = top.fanout
    bits = fanout_bits(fanout)
    levels = HASH_BITS // bits
    # Each frame: a shard on the current path, the next link to visit, and the slot path leading to it.
    path: list[tuple[Shard, int, int]] = [(top, 0, 0)]
    while path:
        shard, position, slots = path[-1]
        if position == len(shard.links):
            path.pop()
            continue
        path[-1] = (shard, position + 1, slots)
        link = shard.links[position]
        depth = len(path) - 1
        here = (slots << bits) | link.index
        if link.name is None:
            if depth + 1 >= levels:
                raise HAMTError(
                    f"{shard.cid}: sub-shard {link.cid} would sit at depth {depth + 1}, deeper than any valid "
                    f"fanout-{fanout} HAMT ({levels} levels)"
                )
            if any(frame[0].cid == link.cid for frame in path):
                raise HAMTError(f"{link.cid}: HAMT loop: this shard links back to itself or an ancestor")
            path.append((decode_shard(link.cid, get_block(link.cid), fanout), 0, here))
        else:
            if name_hash(link.name) >> (HASH_BITS - bits * (depth + 1)) != here:
                raise HAMTError(f"{shard.cid}: entry {link.name!r} is not in the slot its name hashes to")
            yield Entry(link.name, link.cid, link.tsize)
