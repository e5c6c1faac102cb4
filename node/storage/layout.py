"""Where a UnixFS file's bytes are: its leaves in order, and plans for reading a range.

Pure logic with no I/O of its own: ``walk_file`` and ``leaves_in_range`` get
blocks through a callable, and ``plan_reads`` turns the leaves under a byte
range plus their on-disk locations into the fewest reads, joining leaves that
lie end to end in one pack into a single run (the usual case for an imported
file, so a range costs about one ``pread``).

``leaves_in_range`` descends only into the nodes over the range, using each
node's ``blocksizes``: a seek into a file touches its depth in nodes, never
the rest of the file, whatever its leaves are (raw, or dag-pb as kubo makes
them by default), which is also what a reader fetching from peers needs.
A file is at most ``MAX_FILE_DEPTH`` nodes deep: kubo's balanced and trickle
layouts stay far below it, so a deeper DAG is a lie (or a loop), not a file.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import InvalidRequest
from .cid import CID, DAG_PB, RAW
from .unixfs import NodeType, UnixFSError, decode_unixfs

MAX_FILE_DEPTH = 64
# Blocks in a file's tree with every link followed (a block linked twice counts twice): what
# ``walk_file`` would list. Kubo's balanced DAG has 1 + 1/173 blocks per leaf, so this is ~4.17 M
# leaves: 1 TiB at the default 256 KiB chunks. Beyond it a whole-file layout is refused; ranges
# (``leaves_in_range``) still read any file.
MAX_FILE_BLOCKS = 2**22


class NotAFileError(InvalidRequest, ValueError):
    """The CID names a directory, symlink or other non-file node."""


@dataclass(frozen=True, slots=True)
class Leaf:
    offset: int  # where the leaf's bytes start in the file
    size: int
    cid: CID
    embedded: bool  # True: a dag-pb node whose UnixFS Data field holds the bytes
    inline: bytes | None = None  # an embedded leaf's bytes, when the walk already read them


@dataclass(frozen=True, slots=True)
class Location:
    pack: str
    offset: int
    length: int  # bytes in the pack
    compressed: bool
    size: int = -1  # bytes of the block itself (after decompression); -1: not known


@dataclass(frozen=True, slots=True)
class FileNode:
    """A dag-pb UnixFS file node, decoded and checked: its own bytes, then its children in order."""

    cid: CID
    data: bytes
    children: tuple[CID, ...]
    sizes: tuple[int, ...]  # content bytes under each child, from ``blocksizes``
    size: int  # content bytes under this node

    @classmethod
    def decode(cls, cid: CID, block: bytes) -> FileNode:
        node, data = decode_unixfs(block)
        if data.type not in (NodeType.FILE, NodeType.RAW):
            kind = data.type.name.lower().replace("_", " ")
            raise NotAFileError(f"{cid} is a {kind}, not a file")
        if len(data.blocksizes) != len(node.links):
            raise UnixFSError(f"{cid}: {len(node.links)} links but {len(data.blocksizes)} blocksizes")
        own = data.data or b""
        size = len(own) + sum(data.blocksizes)
        if data.filesize is not None and data.filesize != size:
            raise UnixFSError(f"{cid}: filesize says {data.filesize} bytes, its data and blocksizes {size}")
        return cls(cid, own, tuple(link.cid for link in node.links), data.blocksizes, size)


def leaves_in_range(
    root: CID, offset: int, length: int, node_of: Callable[[CID], FileNode | int]
) -> tuple[int, list[Leaf]]:
    """The file's size and the leaves holding bytes [offset, offset+length), in order.

    ``node_of`` gives a dag-pb block decoded as a ``FileNode``, or for a raw
    block only its size (asked only for a raw root: a raw child's size is what
    its parent says, which the caller checks against the stored block). It may
    raise the store's ``BlockNotFound``: a reader fetching from peers then
    fetches that block and asks again. Each node's size must match what its
    parent says, or the DAG lies and ``UnixFSError`` names the node.
    """
    if root.codec == RAW:
        size = node_of(root)
        assert isinstance(size, int)
        return size, ([Leaf(0, size, root, False)] if offset < size and length > 0 else [])
    if root.codec != DAG_PB:
        raise NotAFileError(f"{root} has codec {root.codec_name}, not a UnixFS file")
    top = node_of(root)
    assert isinstance(top, FileNode)
    end = min(top.size, offset + length)
    leaves: list[Leaf] = []
    # Depth first, children pushed in reverse so leaves come out in file order; a node is read
    # when it is popped, so blocks are asked for in file order too.
    stack: list[tuple[CID, int, int, int]] = [(root, 0, top.size, 1)]  # cid, content start, size, depth
    while stack:
        cid, start, size, depth = stack.pop()
        if cid.codec == RAW:
            leaves.append(Leaf(start, size, cid, False))
            continue
        node = top if cid == root and depth == 1 else node_of(cid)
        if not isinstance(node, FileNode) or node.size != size:
            got = node.size if isinstance(node, FileNode) else node
            raise UnixFSError(f"{cid}: holds {got} bytes, its parent says {size}")
        if node.data and start + len(node.data) > offset:
            leaves.append(Leaf(start, len(node.data), cid, True, node.data))
        position = start + len(node.data)
        below = []
        for child, child_size in zip(node.children, node.sizes, strict=True):
            if position >= end:
                break
            if child_size and position + child_size > offset:
                if depth >= MAX_FILE_DEPTH and child.codec != RAW:
                    raise UnixFSError(f"{child}: deeper than {MAX_FILE_DEPTH} levels, not a valid UnixFS file")
                below.append((child, position, child_size, depth + 1))
            position += child_size
        stack.extend(reversed(below))
    return top.size, leaves


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


@dataclass(frozen=True, slots=True)
class _Shape:
    """What the whole-file walk keeps of a distinct dag-pb node: never its bytes."""

    own: int  # bytes in its UnixFS Data field
    children: tuple[CID, ...]
    sizes: tuple[int, ...]
    size: int


def walk_file(root: CID, get_block: Callable[[CID], bytes]) -> FileLayout:
    """List the leaves of the file at ``root``, depth first, checking sizes as it goes.

    Two iterative passes. The first reads each distinct node once (a CID's content never changes)
    and counts, bottom up, the blocks its expanded tree holds, so a DAG that links one child many
    times over (a few KB claiming a billion leaves) is refused by the node where the count passes
    ``MAX_FILE_BLOCKS`` before any leaf is listed; it also bounds the depth by ``MAX_FILE_DEPTH``.
    The second lays the leaves out from what the first kept, reading nothing.
    """
    if root.codec == RAW:
        size = len(get_block(root))
        return FileLayout(size, [Leaf(0, size, root, False)])
    if root.codec != DAG_PB:
        raise NotAFileError(f"{root} has codec {root.codec_name}, not a UnixFS file")
    shapes: dict[CID, _Shape] = {}
    blocks: dict[CID, int] = {}  # blocks in the expanded tree under each distinct node, itself included
    heights: dict[CID, int] = {}  # nodes on the longest path down from it, itself included
    stack: list[tuple[CID, int, bool]] = [(root, 1, False)]  # cid, depth, children done
    while stack:
        cid, depth, done = stack.pop()
        if done:
            shape = shapes[cid]
            count, height = 1, 1
            for child, size in zip(shape.children, shape.sizes, strict=True):
                if not size:
                    continue  # no bytes below: nothing to list, nothing to check
                if child.codec == RAW:
                    count += 1  # a raw leaf is no level: as in leaves_in_range, depth counts dag-pb nodes
                    continue
                if shapes[child].size != size:
                    raise UnixFSError(f"{child}: holds {shapes[child].size} bytes, its parent {cid} says {size}")
                count += blocks[child]
                height = max(height, heights[child] + 1)
            if count > MAX_FILE_BLOCKS:
                raise UnixFSError(
                    f"{cid}: expands to more than {MAX_FILE_BLOCKS} blocks (of file {root}, claiming "
                    f"{shape.size} bytes), more than any file this node stores"
                )
            if height > MAX_FILE_DEPTH:
                raise UnixFSError(f"{cid}: deeper than {MAX_FILE_DEPTH} levels, not a valid UnixFS file")
            blocks[cid], heights[cid] = count, height
            continue
        if cid in shapes:
            continue  # linked again: already counted
        if depth > MAX_FILE_DEPTH:
            raise UnixFSError(f"{cid}: deeper than {MAX_FILE_DEPTH} levels, not a valid UnixFS file")
        node = FileNode.decode(cid, get_block(cid))
        shapes[cid] = _Shape(len(node.data), node.children, node.sizes, node.size)
        stack.append((cid, depth, True))
        for child, size in zip(reversed(node.children), reversed(node.sizes), strict=True):
            if size and child.codec != RAW and child not in shapes:
                stack.append((child, depth + 1, False))
    leaves: list[Leaf] = []
    offset = 0
    todo: list[tuple[CID, int]] = [(root, shapes[root].size)]
    while todo:
        cid, size = todo.pop()
        if cid.codec == RAW:
            leaves.append(Leaf(offset, size, cid, False))
            offset += size
            continue
        shape = shapes[cid]
        if shape.own:
            leaves.append(Leaf(offset, shape.own, cid, True))
            offset += shape.own
        todo.extend(
            (child, size) for child, size in zip(reversed(shape.children), reversed(shape.sizes), strict=True) if size
        )
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
