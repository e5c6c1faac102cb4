"""The block store: verified blocks in pack files, an SQLite index, pins, GC, quota, verify.

``BlockStore`` is the one object callers hold; it composes the parts, each
in a module of its own:

- ``batch``: ``ImportBatch``, every way in, and the thread that writes a pack;
- ``reads``: blocks, file layouts (cached) and byte ranges;
- ``pins``: pins, holds and what is withheld;
- ``gc``: garbage collection, the quota's eviction and compaction;
- ``verify``: rehashing and quarantine;
- ``directories``: the UnixFS queries (stat, ls, path resolution);
- ``index``: the shared index, its lock and its DAG queries.

Nothing here does network I/O; the store is synchronous and thread-safe, so
trio code calls it through ``trio.to_thread`` where a call may be slow.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import directories
from .batch import ImportBatch
from .cid import CID
from .codec import BlockCodec
from .directories import DagStat, DirEntry, PathError
from .errors import BlockNotFound, CorruptBlock
from .gc import Collector, GCResult
from .importer import Progress, import_tree, tree_size
from .index import Index
from .packs import PackDirectory
from .pins import Pins
from .reads import BlockReader, Layout, PackSpan
from .unixfs import Child
from .verify import CorruptReport, Verifier

__all__ = ["BlockStore", "CorruptReport", "DagStat", "DirEntry", "GCResult", "ImportBatch", "RepoStat", "StoreConfig"]


@dataclass(frozen=True)
class StoreConfig:
    # Bytes on disk; 0 means no limit. A bare store has none: the node's quota is [storage] quota in
    # config.toml (node/config.py's SETTINGS), the one place its default is written.
    quota: int = 0
    hash_on_read: bool = False


@dataclass(frozen=True)
class RepoStat:
    size: int  # bytes of pack files on disk
    quota: int
    blocks: int
    pinned: int
    pinned_bytes: int
    packs: int


class BlockStore:
    def __init__(self, root: Path, config: StoreConfig | None = None) -> None:
        self.root = root
        self.config = config or StoreConfig()
        self.codec = BlockCodec()
        (root / "packs").mkdir(parents=True, exist_ok=True)
        (root / "quarantine").mkdir(exist_ok=True)
        self._index = Index(root / "index.sqlite")
        self.packs = PackDirectory(root / "packs")
        self._pins = Pins(self._index, self.config.quota)
        self._collector = Collector(self._index, self.packs, self.config.quota)
        self._verifier = Verifier(self._index, self.packs, self.codec, root / "quarantine")
        self._reader = BlockReader(
            self._index, self.packs, self.codec, self.config.hash_on_read, self._verifier.quarantine
        )
        self.recover()

    # -- housekeeping ---------------------------------------------------------------

    def recover(self) -> list[str]:
        """Delete packs left by writers that died before their index commit."""
        return self.packs.remove_orphans(self._index.pack_names())

    def close(self) -> None:
        self.packs.close()
        self._index.close()

    def repo_stat(self) -> RepoStat:
        index = self._index
        with index.lock:
            blocks = index.db.execute("SELECT count(*) FROM blocks").fetchone()[0]
            pins = index.db.execute("SELECT count(*) FROM pins").fetchone()[0]
            packs = index.db.execute("SELECT count(*) FROM packs").fetchone()[0]
        return RepoStat(self.usage(), self.config.quota, int(blocks), int(pins), self.pinned_bytes(), int(packs))

    # -- writing ----------------------------------------------------------------------

    def new_batch(self) -> ImportBatch:
        """A batch the caller must ``commit`` or ``abort`` (``batch`` is the context-managed form)."""
        return ImportBatch(self._index, self.packs, self.codec, self._pins, self._collector)

    @contextmanager
    def batch(self) -> Iterator[ImportBatch]:
        """An ``ImportBatch`` that is aborted if the block raises or never commits."""
        with self.new_batch() as batch:
            yield batch

    def put_verified(self, cid: CID, data: bytes | memoryview) -> None:
        """Store one block from outside (a peer, an upload) after checking it against its CID."""
        if not cid.verifies(data):
            raise CorruptBlock(cid)
        if self.has(cid):
            return
        with self.batch() as batch:
            batch.put(cid, data)
            batch.commit()

    def add_path(
        self,
        path: str,
        chunk_size: int,
        pin: bool = True,
        hidden: bool = False,
        name: str | None = None,
        progress: Progress | None = None,
    ) -> Child:
        size = tree_size(path, hidden)
        self.check_room(size, pin)
        with self.batch() as batch:
            root = import_tree(path, batch, chunk_size, hidden, progress)
            batch.commit([root.cid], name or os.path.basename(os.path.normpath(path)), root.content_size or size, pin)
        return root

    def check_room(self, nbytes: int, pin: bool) -> None:
        self._pins.check_room(nbytes, pin)

    # -- reading ----------------------------------------------------------------------

    def has(self, cid: CID) -> bool:
        return self._index.has(cid)

    def get_block(self, cid: CID) -> bytes:
        return self._reader.get_block(cid)

    def layout(self, root: CID) -> Layout:
        return self._reader.layout(root)

    def file_size(self, root: CID) -> int:
        return self._reader.file_size(root)

    def range_layout(self, root: CID, offset: int, length: int) -> Layout:
        return self._reader.range_layout(root, offset, length)

    def read_range(
        self, root: CID, offset: int = 0, length: int | None = None, piece_size: int = 4 * 1024 * 1024
    ) -> Iterator[bytes]:
        return self._reader.read_range(root, offset, length, piece_size)

    def read_spans(self, root: CID, offset: int, length: int) -> Iterator[bytes | PackSpan]:
        return self._reader.read_spans(root, offset, length)

    def spans_if_ready(self, root: CID, offset: int, length: int) -> list[PackSpan] | None:
        return self._reader.spans_if_ready(root, offset, length)

    def copy_to_fd(self, root: CID, out_fd: int, progress: Progress | None = None) -> int:
        return self._reader.copy_to_fd(root, out_fd, progress)

    def touch(self, cid: CID) -> None:
        self._collector.touch(cid)

    def touch_due(self, cid: CID) -> bool:
        return self._collector.touch_due(cid)

    # -- DAG inspection and UnixFS queries ----------------------------------------------------

    def dag_counts(self, root: CID) -> tuple[int, int, int]:
        return self._index.dag_counts(root)

    def missing_in_dag(self, root: CID) -> list[CID]:
        return self._index.missing_in_dag(root)

    def stat(self, cid: CID) -> DagStat:
        return directories.stat(self, cid)

    def ls(self, cid: CID) -> list[DirEntry]:
        return directories.ls(self, cid)

    def resolve(self, root: CID, path: str) -> CID:
        """Follow ``a/b/c`` through UnixFS directories (flat or sharded) from ``root``."""
        try:
            return directories.resolve(root, [p for p in path.split("/") if p], self.get_block).terminal
        except PathError as exc:
            raise BlockNotFound(f"{root}/{path}: {exc}") from None

    # -- pins and holds -----------------------------------------------------------------

    def is_pinned(self, cid: CID) -> bool:
        return self._pins.is_pinned(cid)

    def root_cids(self) -> list[CID]:
        return self._pins.root_cids()

    def pins(self) -> list[tuple[CID, str | None, float]]:
        return self._pins.listed()

    def pinned_bytes(self) -> int:
        return self._pins.pinned_bytes()

    def pin_add(self, cid: CID, name: str | None = None) -> None:
        self._pins.pin_add(cid, name)

    def pin_rm(self, cid: CID) -> None:
        self._pins.pin_rm(cid)

    def hold(self, holder: str, cid: CID, public: bool) -> None:
        self._pins.hold(holder, cid, public)

    def release(self, holder: str) -> CID | None:
        return self._pins.release(holder)

    def holds_under(self, prefix: str) -> list[tuple[str, CID]]:
        return self._pins.holds_under(prefix)

    def holders(self, cid: CID) -> list[tuple[str, bool]]:
        return self._pins.holders(cid)

    def any_withheld(self) -> bool:
        return self._pins.any_withheld()

    def is_withheld(self, cid: CID) -> bool:
        return self._pins.is_withheld(cid)

    # -- quota and gc ---------------------------------------------------------------------

    def usage(self) -> int:
        return self._index.usage()

    def gc(self) -> GCResult:
        return self._collector.gc()

    def enforce_quota(self, protect: Sequence[CID] = ()) -> int:
        return self._collector.enforce_quota(protect)

    # -- verify and quarantine -------------------------------------------------------------

    def verify(self, progress: Progress | None = None) -> list[CorruptReport]:
        return self._verifier.verify(progress)

    def quarantine(self, cid: CID, data: bytes, reason: str) -> None:
        self._verifier.quarantine(cid, data, reason)
