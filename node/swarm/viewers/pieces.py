"""Where a viewer's pieces live: read to serve them, written once verified.

``FilePieces`` is a file being written at the pieces' offsets (``medianode
watch``); ``StorePieces`` is the node's BlockStore (the seeder). Both take
only pieces already checked against their CIDs.
"""

from __future__ import annotations

import os
from typing import Protocol

from ...storage.store import BlockStore
from .clip import Clip


class PieceSource(Protocol):
    def held(self) -> set[int]:
        """Pieces it can serve now."""
        ...

    def read(self, index: int) -> bytes:
        """A held piece's bytes (the leaf block)."""
        ...

    def write(self, index: int, data: bytes) -> None:
        """Keep a verified piece."""
        ...


class FilePieces:
    """Pieces in a file being written at their offsets (for ``watch``).

    The file holds only the file bytes of a dag-pb leaf, so such pieces are
    kept whole in memory to be served; fetching the DAG brought them into
    memory anyway, and kubo-style raw-leaf clips have none.
    """

    def __init__(self, fd: int, clip: Clip) -> None:
        self.fd = fd
        self.clip = clip
        self._held: set[int] = set()
        self._embedded: dict[int, bytes] = {}

    def held(self) -> set[int]:
        return set(self._held)

    def read(self, index: int) -> bytes:
        if index in self._embedded:
            return self._embedded[index]
        piece = self.clip.pieces[index]
        data = os.pread(self.fd, piece.size, piece.offset)
        if len(data) != piece.size:
            raise OSError(f"short read of piece {index}")
        return data

    def write(self, index: int, data: bytes) -> None:
        piece = self.clip.pieces[index]
        view = memoryview(self.clip.file_bytes(index, data))
        offset = piece.offset
        while view:
            written = os.pwrite(self.fd, view, offset)
            view, offset = view[written:], offset + written
        if piece.embedded:
            self._embedded[index] = data
        self._held.add(index)


class StorePieces:
    """Pieces as blocks of the node's store (for the seeder)."""

    def __init__(self, store: BlockStore, clip: Clip) -> None:
        self.store = store
        self.clip = clip

    def held(self) -> set[int]:
        return {i for i, piece in enumerate(self.clip.pieces) if self.store.has(piece.cid)}

    def read(self, index: int) -> bytes:
        return self.store.get_block(self.clip.pieces[index].cid)

    def write(self, index: int, data: bytes) -> None:
        self.store.put_verified(self.clip.pieces[index].cid, data)
