"""UnixFS as readers query it: what a node is (``stat``), what a directory holds (``ls``,
``iter_links``, flat or HAMT-sharded) and where a path leads (``resolve``).

The one home of these queries for the CLI, the gateway and the swarm
(``BlockStore.stat``, ``ls`` and ``resolve`` call them). Listing and
resolving are pure logic over a ``get_block`` callable: a missing block raises
whatever the callable raises (the store's ``BlockNotFound``), so a reader that
fetches from peers fetches that block and asks again, one level per round.
Resolving a path also names every block it went through (a sharded
directory's inner shard nodes included), which a trustless CAR response must
carry for its client to verify the path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from ..errors import NotFound
from . import hamt
from .cid import CID, DAG_PB, RAW
from .dagpb import DagPBError
from .errors import StoreError
from .unixfs import NodeType, UnixFSError, decode_unixfs

GetBlock = Callable[[CID], bytes]


class PathError(NotFound, LookupError):
    """A path that does not lead anywhere: a name missing from a directory, or a file on the way."""


class DagSource(Protocol):
    """What ``stat`` and ``ls`` ask of a store (``BlockStore`` is one)."""

    def get_block(self, cid: CID) -> bytes: ...

    def has(self, cid: CID) -> bool: ...

    def dag_counts(self, root: CID) -> tuple[int, int, int]: ...

    def is_pinned(self, cid: CID) -> bool: ...


@dataclass(frozen=True)
class DagStat:
    cid: CID
    type: str  # file, directory, symlink, raw
    size: int  # bytes of content (file size) or of the node
    dag_size: int  # bytes of all local blocks of the DAG as stored (compressed where they are)
    blocks: int
    missing: int
    pinned: bool


@dataclass(frozen=True)
class DirEntry:
    name: str
    cid: CID
    type: str
    size: int


@dataclass(frozen=True, slots=True)
class Link:
    name: str
    cid: CID
    tsize: int


@dataclass(frozen=True, slots=True)
class ResolvedPath:
    cids: list[CID]  # the root, then one CID per path segment: the last is the terminal element
    traversed: list[CID]  # every block read on the way, in order, the terminal last

    @property
    def terminal(self) -> CID:
        return self.cids[-1]


_KINDS = {NodeType.DIRECTORY: "directory", NodeType.SYMLINK: "symlink", NodeType.HAMT_SHARD: "directory"}


def stat(source: DagSource, cid: CID) -> DagStat:
    """What the stored node at ``cid`` is, its size, and how much of its DAG is here."""
    block = source.get_block(cid)
    blocks, missing, dag_size = source.dag_counts(cid)
    kind, size = "raw", len(block)
    if cid.codec == DAG_PB:
        try:
            _, data = decode_unixfs(block)
        except (UnixFSError, DagPBError) as exc:
            raise StoreError(f"{cid} is not a UnixFS node: {exc}") from None
        kind = _KINDS.get(data.type, "file")
        size = data.file_size() if kind == "file" else len(block)
    elif cid.codec == RAW:
        kind = "file"
    return DagStat(cid, kind, size, dag_size, blocks, missing, source.is_pinned(cid))


def ls(source: DagSource, cid: CID) -> list[DirEntry]:
    """The entries of a directory, flat or HAMT-sharded, with the type and size of those stored."""
    try:
        links = list(iter_links(cid, source.get_block))
    except PathError as exc:
        raise StoreError(str(exc)) from None
    entries = []
    for link in links:
        kind, size = "unknown", link.tsize
        if source.has(link.cid):
            child = stat(source, link.cid)
            kind, size = child.type, child.size
        entries.append(DirEntry(link.name, link.cid, kind, size))
    return entries


def directory_kind(cid: CID, block: bytes) -> NodeType | None:
    """The UnixFS type of a dag-pb block, or None for a raw block."""
    if cid.codec != DAG_PB:
        return None
    try:
        return decode_unixfs(block)[1].type
    except DagPBError as exc:
        raise UnixFSError(f"{cid}: not valid dag-pb ({exc})") from None


def iter_links(cid: CID, get_block: GetBlock) -> Iterator[Link]:
    """The entries of the directory at ``cid``: a flat node's links in order, a HAMT's in trie order."""
    block = get_block(cid)
    kind = directory_kind(cid, block)
    if kind == NodeType.HAMT_SHARD:
        for entry in hamt.iter_entries(cid, get_block):
            yield Link(entry.name, entry.cid, entry.tsize or 0)
        return
    if kind != NodeType.DIRECTORY:
        what = "file" if kind is None else kind.name.lower().replace("_", " ")
        raise PathError(f"{cid} is a {what}, not a directory")
    node, _ = decode_unixfs(block)
    for link in node.links:
        yield Link(link.name or "", link.cid, link.tsize or 0)


def find(cid: CID, name: str, get_block: GetBlock) -> tuple[CID | None, list[CID]]:
    """The CID ``name`` names in the directory at ``cid`` (None if absent), and the blocks read
    to learn it beyond ``cid`` itself (a HAMT's inner shards)."""
    block = get_block(cid)
    kind = directory_kind(cid, block)
    if kind == NodeType.DIRECTORY:
        node, _ = decode_unixfs(block)
        return next((link.cid for link in node.links if link.name == name), None), []
    if kind != NodeType.HAMT_SHARD:
        what = "file" if kind is None else kind.name.lower().replace("_", " ")
        raise PathError(f"{cid} is a {what}: no {name!r} inside it")
    inner: list[CID] = []
    step = hamt.lookup_step(cid, block, name)
    while isinstance(step, hamt.Descend):
        if step.cid == cid or step.cid in inner:
            raise hamt.HAMTError(f"{step.cid}: HAMT loop: this shard links back to itself or an ancestor")
        inner.append(step.cid)
        step = hamt.lookup_step(step.cid, get_block(step.cid), name, step.depth, step.fanout)
    return (step.entry.cid if isinstance(step, hamt.Found) else None), inner


def resolve(root: CID, segments: list[str], get_block: GetBlock) -> ResolvedPath:
    """Follow ``segments`` from ``root`` through flat and sharded directories."""
    cids = [root]
    traversed = [root]
    current = root
    for index, name in enumerate(segments):
        try:
            found, inner = find(current, name, get_block)
        except PathError:
            where = "/".join(segments[:index]) or str(current)
            raise PathError(f"{where} is not a directory: no {name!r} inside it") from None
        if found is None:
            raise PathError(f"no {name!r} in directory {'/'.join([str(root), *segments[:index]])}")
        traversed += [*inner, found]
        cids.append(found)
        current = found
    return ResolvedPath(cids, traversed)
