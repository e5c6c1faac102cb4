"""Finding and isolating corrupt blocks: rehash everything (``verify``), quarantine what fails.

A quarantined block leaves the index for good (a reader then sees it as
missing, and a node fetches it again from a peer); its bytes are kept under
``quarantine/`` for inspection, when the disk still takes them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import zstandard

from .cid import CID
from .codec import BlockCodec
from .importer import Progress
from .index import Index
from .packs import PackDirectory


@dataclass(frozen=True)
class CorruptReport:
    cid: CID
    reason: str


class Verifier:
    def __init__(self, index: Index, packs: PackDirectory, codec: BlockCodec, directory: Path) -> None:
        self._index = index
        self._packs = packs
        self._codec = codec
        self._directory = directory  # where quarantined blocks' bytes go

    def verify(self, progress: Progress | None = None) -> list[CorruptReport]:
        """Rehash every block; quarantine and report those whose bytes no longer match."""
        with self._index.lock:
            rows = self._index.db.execute(
                "SELECT blocks.cid, packs.name, blocks.offset, blocks.length, blocks.size, blocks.flags "
                "FROM blocks JOIN packs ON packs.id = blocks.pack ORDER BY blocks.pack, blocks.offset"
            ).fetchall()
        bad: list[tuple[CID, bytes, str]] = []
        for key, pack, offset, length, size, flags in rows:
            cid = CID.from_bytes(key)
            try:
                stored = self._packs.pread(pack, offset, length)
            except OSError as exc:
                bad.append((cid, b"", f"unreadable: {exc.strerror or exc}"))
                continue
            try:
                data = self._codec.decode(stored, size, flags)
            except (ValueError, zstandard.ZstdError):
                bad.append((cid, stored, "does not decompress"))
                continue
            if not cid.verifies(data):
                bad.append((cid, data, "hash mismatch"))
            if progress:
                progress(length)
        for cid, data, reason in bad:
            self.quarantine(cid, data, reason)
        return [CorruptReport(cid, reason) for cid, _, reason in bad]

    def quarantine(self, cid: CID, data: bytes, reason: str) -> None:
        """Take a corrupt block out of service for good, keeping its bytes for inspection."""
        path = self._directory / f"{cid}-{int(time.time())}.bin"
        kept: str | None = str(path)
        try:
            path.write_bytes(data)
        except OSError:
            kept = None  # the disk refused the copy; the block still leaves service
        with self._index.transaction() as db:
            db.execute("DELETE FROM blocks WHERE cid = ?", (bytes(cid.to_v1()),))
            db.execute(
                "INSERT INTO quarantine(cid, found, reason, path) VALUES (?, ?, ?, ?)",
                (bytes(cid.to_v1()), time.time(), reason, kept),
            )
            self._index.bump_generation()
