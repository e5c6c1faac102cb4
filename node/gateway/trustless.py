"""Which blocks a trustless gateway CAR response carries (ipfs/specs trustless-gateway.md).

Pure traversal over a ``get_block`` callable, in depth-first order with no
duplicates (``order=dfs; dups=n``):

- the blocks of the path from the requested root down to the terminal
  element (so a client can verify the path), then
- ``dag-scope=block``: the terminal block alone;
  ``dag-scope=entity``: what is needed for the terminal entity: a whole file
  (or with ``entity-bytes=from:to`` only the nodes and leaves under that byte
  range), a directory's own node, or a raw block;
  ``dag-scope=all`` (the default): the whole DAG under the terminal element.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..storage.cid import CID, DAG_PB
from ..storage.dagpb import decode_node
from ..storage.layout import MAX_FILE_DEPTH, children_in_range
from ..storage.unixfs import NodeType, UnixFSError, decode_unixfs

GetBlock = Callable[[CID], bytes]
SCOPES = ("block", "entity", "all")


class TrustlessParamError(ValueError):
    """A dag-scope or entity-bytes parameter the spec does not allow."""


@dataclass(frozen=True)
class EntityBytes:
    start: int  # negative: from the end
    end: int | None  # inclusive; negative: from the end; None: to the end ("*")

    @classmethod
    def parse(cls, text: str) -> EntityBytes:
        start_text, sep, end_text = text.partition(":")
        if not sep:
            raise TrustlessParamError("entity-bytes must be FROM:TO")
        try:
            start = int(start_text)
            end = None if end_text == "*" else int(end_text)
        except ValueError:
            raise TrustlessParamError(f"entity-bytes {text!r} is not FROM:TO with integers or *") from None
        if not _ascii_int(start_text) or (end_text != "*" and not _ascii_int(end_text)):
            raise TrustlessParamError(f"entity-bytes {text!r} is not FROM:TO with integers or *")
        if end is not None and start >= 0 and end >= 0 and end < start:
            raise TrustlessParamError("entity-bytes TO must not be before FROM")
        return cls(start, end)

    def resolve(self, size: int) -> tuple[int, int]:
        """Absolute [first, last] byte indexes for a file of ``size`` bytes (may be empty: last < first)."""
        first = self.start if self.start >= 0 else max(0, size + self.start)
        if self.end is None:
            last = size - 1
        elif self.end >= 0:
            last = min(self.end, size - 1)
        else:
            last = size + self.end
        return first, last


def car_blocks(
    get_block: GetBlock, path_cids: list[CID], scope: str, entity_bytes: EntityBytes | None
) -> Iterator[tuple[CID, bytes]]:
    """Blocks for a CAR response; ``path_cids`` runs from the requested root to the terminal element.

    Parameters are checked here, before any block is read, so a bad one is an error up front.
    """
    if scope not in SCOPES:
        raise TrustlessParamError(f"dag-scope must be one of {', '.join(SCOPES)}")
    return _car_blocks(get_block, path_cids, scope, entity_bytes)


def _car_blocks(
    get_block: GetBlock, path_cids: list[CID], scope: str, entity_bytes: EntityBytes | None
) -> Iterator[tuple[CID, bytes]]:
    seen: set[CID] = set()

    def once(cid: CID, block: bytes) -> Iterator[tuple[CID, bytes]]:
        v1 = cid.to_v1()
        if v1 not in seen:
            seen.add(v1)
            yield cid, block

    for cid in path_cids[:-1]:
        yield from once(cid, get_block(cid))
    terminal = path_cids[-1]
    block = get_block(terminal)
    if scope == "block":
        yield from once(terminal, block)
    elif scope == "all":
        yield from _whole_dag(get_block, terminal, block, seen)
    else:
        for cid, data in _entity(get_block, terminal, block, entity_bytes, seen):
            yield from once(cid, data)


def _whole_dag(get_block: GetBlock, root: CID, root_block: bytes, seen: set[CID]) -> Iterator[tuple[CID, bytes]]:
    """Every block under ``root`` once, depth first, with no recursion: a CID already sent is not
    descended again (its DAG was sent whole, right after it), so a DAG that links one child many
    times costs its distinct blocks, not its expansion. Adds what it sends to ``seen``."""
    stack: list[tuple[CID, bytes | None]] = [(root, root_block)]
    while stack:
        cid, block = stack.pop()
        v1 = cid.to_v1()
        if v1 in seen:
            continue
        seen.add(v1)
        if block is None:
            block = get_block(cid)
        yield cid, block
        if cid.codec == DAG_PB:
            stack.extend(
                (link.cid, None) for link in reversed(decode_node(block).links) if link.cid.to_v1() not in seen
            )


def _entity(
    get_block: GetBlock, cid: CID, block: bytes, entity_bytes: EntityBytes | None, seen: set[CID]
) -> Iterator[tuple[CID, bytes]]:
    if cid.codec != DAG_PB:
        yield cid, block
        return
    _node, data = decode_unixfs(block)
    if data.type != NodeType.FILE and data.type != NodeType.RAW:
        # A directory (or symlink) entity is its own node; a HAMT shard would need its shard blocks too.
        if data.type == NodeType.HAMT_SHARD:
            for child_cid, child in _whole_dag(get_block, cid, block, set(seen)):
                if child_cid.codec == DAG_PB and decode_unixfs(child)[1].type == NodeType.HAMT_SHARD:
                    yield child_cid, child
            return
        yield cid, block
        return
    size = data.file_size()
    first, last = (0, size - 1) if entity_bytes is None else entity_bytes.resolve(size)
    yield from _file_range(get_block, cid, block, first, last)


def _first_descent(get_block: GetBlock, cid: CID, block: bytes, first: int, last: int) -> None:
    """Follow the first child over the range from ``cid`` down to a leaf: a DAG too deep there is
    refused (``UnixFSError``) before a response starts, not part way through its body."""
    offset, depth = 0, 1
    while True:
        below = children_in_range(cid, block, offset, first, last)
        if not below:
            return
        cid, offset = below[0]
        if cid.codec != DAG_PB:
            return
        if depth >= MAX_FILE_DEPTH:
            raise UnixFSError(f"{cid}: deeper than {MAX_FILE_DEPTH} levels, not a valid UnixFS file")
        block = get_block(cid)
        depth += 1


def _file_range(
    get_block: GetBlock, root: CID, root_block: bytes, first: int, last: int
) -> Iterator[tuple[CID, bytes]]:
    """The file node ``root`` and, below it, every block holding bytes in [first, last], depth first
    with no recursion and at most ``MAX_FILE_DEPTH`` levels. A child that lies wholly inside the range
    and was sent already is not descended again: everything under it was sent with it."""
    _first_descent(get_block, root, root_block, first, last)
    whole: set[CID] = set()  # nodes sent with everything under them
    # cid, block, offset, depth, whether the range holds all of it
    stack: list[tuple[CID, bytes | None, int, int, bool]] = [(root, root_block, 0, 1, False)]
    while stack:
        cid, block, offset, depth, inside = stack.pop()
        key = cid.to_v1()
        if inside and key in whole:
            continue  # sent already, with everything under it, right after it
        if inside:
            whole.add(key)
        if block is None:
            block = get_block(cid)
        yield cid, block
        below = children_in_range(cid, block, offset, first, last)
        if depth >= MAX_FILE_DEPTH:
            deep = next((child for child, _ in below if child.codec == DAG_PB), None)
            if deep is not None:
                raise UnixFSError(f"{deep}: deeper than {MAX_FILE_DEPTH} levels, not a valid UnixFS file")
        sizes = _child_sizes(cid, block) if below else {}
        todo = []
        for child, start in below:
            contained = first <= start and start + sizes.get(child, 0) - 1 <= last
            if not (contained and child.to_v1() in whole):
                todo.append((child, None, start, depth + 1, contained))
        stack.extend(reversed(todo))


def _child_sizes(cid: CID, block: bytes) -> dict[CID, int]:
    """Content bytes under each child of a file node (a child linked twice has one size, or the DAG lies)."""
    if cid.codec != DAG_PB:
        return {}
    node, data = decode_unixfs(block)
    return {link.cid: size for link, size in zip(node.links, data.blocksizes, strict=False)}


def _ascii_int(text: str) -> bool:
    """An integer written in ASCII digits with an optional minus (``int()`` also takes other scripts' digits)."""
    digits = text.removeprefix("-")
    return digits.isascii() and digits.isdigit()
