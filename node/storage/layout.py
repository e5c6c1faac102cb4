"""Where a UnixFS file's bytes are: its leaves in order, and plans for reading a range.

Pure logic with no I/O of its own: ``walk_file`` gets blocks through a
callable, and ``plan_reads`` turns the leaves under a byte range plus their
on-disk locations into the fewest reads, joining leaves that lie end to end
in one pack into a single run (the usual case for an imported file, so a
range costs about one ``pread``).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass

from .cid import CID, DAG_PB, RAW
from .unixfs import NodeType, UnixFSError, decode_unixfs


class NotAFileError(ValueError):
    """The CID names a directory, symlink or other non-file node."""


@dataclass(frozen=True, slots=True)
class Leaf:
    offset: int  # where the leaf's bytes start in the file
    size: int
    cid: CID
    embedded: bool  # True: a dag-pb node whose UnixFS Data field holds the bytes


@dataclass(frozen=True, slots=True)
class Location:
    pack: str
    offset: int
    length: int
    compressed: bool


@dataclass(frozen=True, slots=True)
class PackRun:
    """Bytes to read straight from a pack file."""

    pack: str
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class LeafSlice:
    """Part of one leaf that has to be decoded (compressed, embedded) or is not local."""

    leaf: Leaf
    start: int
    end: int


class FileLayout:
    def __init__(self, size: int, leaves: list[Leaf]) -> None:
        self.size = size
        self.leaves = leaves
        self._starts = [leaf.offset for leaf in leaves]

    def leaves_under(self, offset: int, length: int) -> list[tuple[int, int, int]]:
        """(leaf index, start in leaf, end in leaf) for every leaf under [offset, offset+length)."""
        end = min(self.size, offset + length)
        if offset >= end:
            return []
        index = max(0, bisect.bisect_right(self._starts, offset) - 1)
        out = []
        while index < len(self.leaves) and self.leaves[index].offset < end:
            leaf = self.leaves[index]
            start = max(offset, leaf.offset) - leaf.offset
            stop = min(end, leaf.offset + leaf.size) - leaf.offset
            if stop > start:
                out.append((index, start, stop))
            index += 1
        return out


def walk_file(root: CID, get_block: Callable[[CID], bytes]) -> FileLayout:
    """List the leaves of the file at ``root``, depth first, checking sizes as it goes."""
    if root.codec == RAW:
        size = len(get_block(root))
        return FileLayout(size, [Leaf(0, size, root, False)])
    if root.codec != DAG_PB:
        raise NotAFileError(f"{root} has codec {root.codec_name}, not a UnixFS file")
    leaves: list[Leaf] = []
    offset = 0
    # Stack of (cid, expected content size or None); reversed children keep order.
    stack: list[tuple[CID, int | None]] = [(root, None)]
    while stack:
        cid, expected = stack.pop()
        if cid.codec == RAW:
            size = expected if expected is not None else len(get_block(cid))
            leaves.append(Leaf(offset, size, cid, False))
            offset += size
            continue
        node, data = decode_unixfs(get_block(cid))
        if data.type not in (NodeType.FILE, NodeType.RAW):
            kind = data.type.name.lower().replace("_", " ")
            raise NotAFileError(f"{cid} is a {kind}, not a file")
        if len(data.blocksizes) != len(node.links):
            raise UnixFSError(f"{cid}: {len(node.links)} links but {len(data.blocksizes)} blocksizes")
        if expected is not None and data.file_size() != expected:
            raise UnixFSError(f"{cid}: holds {data.file_size()} bytes, its parent says {expected}")
        if data.data:
            leaves.append(Leaf(offset, len(data.data), cid, True))
            offset += len(data.data)
        for link, size in reversed(list(zip(node.links, data.blocksizes, strict=True))):
            stack.append((link.cid, size))
    return FileLayout(offset, leaves)


def children_in_range(cid: CID, block: bytes, start: int, first: int, last: int) -> list[tuple[CID, int]]:
    """Children of the file node ``cid`` (whose content begins at file offset ``start``) that hold
    any byte in [first, last], with the offset each one begins at. A raw leaf has none."""
    if cid.codec != DAG_PB:
        return []
    node, data = decode_unixfs(block)
    if data.type not in (NodeType.FILE, NodeType.RAW):
        return []
    out = []
    position = start + len(data.data or b"")
    for link, size in zip(node.links, data.blocksizes, strict=False):
        if size and position <= last and position + size - 1 >= first:
            out.append((link.cid, position))
        position += size
    return out


def plan_reads(
    layout: FileLayout, offset: int, length: int, locations: list[Location | None]
) -> list[PackRun | LeafSlice]:
    """Reads that produce [offset, offset+length) in order; ``locations`` is indexed like the leaves."""
    plan: list[PackRun | LeafSlice] = []
    for index, start, stop in layout.leaves_under(offset, length):
        leaf = layout.leaves[index]
        where = locations[index]
        if where is None or where.compressed or leaf.embedded:
            plan.append(LeafSlice(leaf, start, stop))
            continue
        run = PackRun(where.pack, where.offset + start, stop - start)
        last = plan[-1] if plan else None
        if isinstance(last, PackRun) and last.pack == run.pack and last.offset + last.length == run.offset:
            plan[-1] = PackRun(last.pack, last.offset, last.length + run.length)
        else:
            plan.append(run)
    return plan
