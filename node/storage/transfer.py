"""Moving whole DAGs in and out of the store as CAR files (plain or zstd-compressed)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from .car import CarWriter, open_car
from .cid import CID
from .dagpb import DagPBError, links_of
from .errors import CorruptBlock, InvalidInput
from .importer import Progress
from .store import BlockStore


@dataclass(frozen=True)
class ImportResult:
    roots: list[CID]
    blocks: int


def walk_dag(store: BlockStore, root: CID) -> Iterator[tuple[CID, bytes]]:
    """Blocks of the DAG under ``root``, depth first, parents before children, each once, each
    under the CID its parent's link names (a CIDv0 DAG's blocks stay CIDv0, so a CAR reader finds
    every link's block). Identity CIDs carry their bytes and are not written; what an identity
    node links to is."""
    seen: set[bytes] = set()
    stack = [root]
    while stack:
        cid = stack.pop()
        key = bytes(cid.to_v1())
        if key in seen:
            continue
        seen.add(key)
        block = store.get_block(cid)
        if not cid.is_identity:
            yield cid, block
        try:
            stack.extend(reversed(links_of(cid, block)))
        except DagPBError as exc:
            raise CorruptBlock(cid, f"not valid dag-pb ({exc})") from None


def export_car(store: BlockStore, root: CID, path: str, progress: Progress | None = None) -> tuple[int, int]:
    """Write the DAG under ``root`` to ``path``; return (blocks, bytes of block data)."""
    count = total = 0
    with CarWriter(path, [root], compress=path.endswith(".zst")) as car:
        for cid, block in walk_dag(store, root):
            car.add(cid, block)
            count += 1
            total += len(block)
            if progress:
                progress(len(block))
    return count, total


def import_car(store: BlockStore, path: str, pin: bool = True, progress: Progress | None = None) -> ImportResult:
    """Verify every block of the CAR at ``path`` and store them all, or nothing."""
    store.check_room(os.path.getsize(path), pin)
    count = 0
    with open_car(path) as (roots, blocks), store.batch() as batch:
        for cid, data in blocks:
            try:
                batch.put_verified(cid, data)
            except CorruptBlock as exc:
                raise InvalidInput(f"{path}: {exc}; nothing was imported") from None
            count += 1
            if progress:
                progress(len(data))
        batch.commit(roots, os.path.basename(path), 0, pin=pin)
    return ImportResult(list(roots), count)
