"""Privatising reaches every process of a store at once: serve's workers answer ``/ipfs/`` with stores of
their own, and a key made private there must be off their public path when the owner's call returns."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import gen
from node.storage.changes import ChangeCounter
from node.storage.cid import CID
from node.storage.errors import QuotaExceeded
from node.storage.store import BlockStore, StoreConfig


def add_unpinned(store: BlockStore, tmp_path: Path, data: bytes) -> CID:
    (tmp_path / "clip.bin").write_bytes(data)
    return store.add_path(str(tmp_path / "clip.bin"), 262144, pin=False).cid


def test_a_hold_made_private_in_one_store_is_withheld_in_another_at_once(tmp_path: Path) -> None:
    """Tried: a second BlockStore on the same directory (as a worker has) asks, caches "nothing withheld",
    then the first makes the only hold private, public again, and releases it: each answer in the second
    changes right after the first's call returns, with no wait (a reader used to trust its answer 0.5 s)."""
    owner = BlockStore(tmp_path / "s")
    worker = BlockStore(tmp_path / "s")
    try:
        cid = add_unpinned(owner, tmp_path, gen(600_000, b"private clip"))
        owner.hold("s3:media/clip.mp4", cid, public=True)
        assert not worker.is_withheld(cid) and not worker.any_withheld()  # looked once, then known lock-free
        for _ in range(3):  # the cached answer, lock-free, many times over
            assert not worker.is_withheld(cid)
        owner.hold("s3:media/clip.mp4", cid, public=False)
        assert worker.any_withheld() and worker.is_withheld(cid)
        owner.hold("s3:media/clip.mp4", cid, public=True)
        assert not worker.is_withheld(cid) and not worker.any_withheld()
        owner.hold("s3:media/clip.mp4", cid, public=False)
        assert worker.is_withheld(cid)
        owner.release("s3:media/clip.mp4")
        assert not worker.is_withheld(cid)
    finally:
        worker.close()
        owner.close()


def test_a_change_rolled_back_is_not_announced(tmp_path: Path) -> None:
    """Tried: a private hold past the quota is refused (rolled back): the counter other processes read stays."""
    cid = add_unpinned(BlockStore(tmp_path / "s"), tmp_path, gen(600_000, b"too big"))
    owner = BlockStore(tmp_path / "s", StoreConfig(quota=1000))
    try:
        before = owner._index.withheld_changes.value()
        with pytest.raises(QuotaExceeded):
            owner.hold("s3:media/big.mp4", cid, public=False)
        assert owner._index.withheld_changes.value() == before
        assert not owner.is_withheld(cid)
    finally:
        owner.close()


def test_without_its_file_the_counter_changes_with_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tried: the counter's file cannot be made (its directory is not there, as on a full disk it cannot be
    written): readers then re-read what they cache each ``fallback_every`` seconds, as before the counter."""
    import time

    counter = ChangeCounter(tmp_path / "missing" / "index-withheld", fallback_every=0.5)
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    first = counter.value()
    counter.changed()  # nothing to write to: no error
    now[0] += 0.1
    assert counter.value() == first
    now[0] += 0.5
    assert counter.value() != first
    assert not os.path.exists(tmp_path / "missing")
