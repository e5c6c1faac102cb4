"""The block store on a real disk: range reads, compression, pins, GC, quota, verify, two processes, one store."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import pytest

from conftest import gen
from node.storage.cid import CID, RAW
from node.storage.errors import BlockNotFound, CorruptBlock, QuotaExceeded
from node.storage.layout import PackRun, plan_reads
from node.storage.store import BlockStore, StoreConfig

MiB = 1024 * 1024


def add_bytes(store: BlockStore, tmp_path: Path, data: bytes, name: str, pin: bool = True, chunk: int = 262144) -> CID:
    path = tmp_path / name
    path.write_bytes(data)
    return store.add_path(str(path), chunk, pin=pin).cid


def pack_files(store: BlockStore) -> list[str]:
    return sorted(os.listdir(store.root / "packs"))


def test_random_ranges_read_back_exactly(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "s")
    data = gen(5 * MiB + 12345)
    cid = add_bytes(store, tmp_path, data, "f")
    rng = random.Random(7)
    cases = [(0, 0), (0, 1), (262143, 2), (len(data) - 1, 1), (len(data), 10), (len(data) - 5, 100)]
    cases += [(rng.randrange(len(data)), rng.randrange(3 * MiB)) for _ in range(60)]
    for offset, length in cases:
        assert b"".join(store.read_range(cid, offset, length)) == data[offset : offset + length], (offset, length)


def test_a_range_is_one_read_of_the_pack(tmp_path: Path) -> None:
    """Leaves of an added file are contiguous: a range spanning five leaves plans a single pack read."""
    store = BlockStore(tmp_path / "s")
    cid = add_bytes(store, tmp_path, gen(4 * MiB), "f")
    layout, locations = store.layout(cid)
    plan = plan_reads(layout, 100_000, MiB, locations)
    assert len(plan) == 1 and isinstance(plan[0], PackRun) and plan[0].length == MiB


def test_range_reads_touch_only_blocks_under_the_range(tmp_path: Path) -> None:
    """Corrupting a leaf outside the range (with hash-on-read on) does not disturb a read elsewhere."""
    store = BlockStore(tmp_path / "s", StoreConfig(hash_on_read=True))
    data = gen(3 * MiB)
    cid = add_bytes(store, tmp_path, data, "f")
    layout, locations = store.layout(cid)
    last = locations[-1]
    assert last is not None
    with open(store.root / "packs" / last.pack, "r+b") as f:
        f.seek(last.offset)
        f.write(b"\0" * 16)
    assert b"".join(store.read_range(cid, 0, MiB)) == data[:MiB]
    with pytest.raises(CorruptBlock):
        b"".join(store.read_range(cid, len(data) - 10, 10))
    # Found corrupt once, never served again: the block is gone from the index.
    assert not store.has(layout.leaves[-1].cid)


def test_compressible_blocks_are_stored_compressed(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "s")
    text = b"".join(b"line %d of a log that compresses well\n" % i for i in range(40000))
    cid = add_bytes(store, tmp_path, text, "log.txt")
    assert store.usage() < len(text) // 5
    assert b"".join(store.read_range(cid)) == text
    assert b"".join(store.read_range(cid, 300000, 7)) == text[300000:300007]


def test_incompressible_media_overhead_is_under_one_percent(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "s")
    data = gen(20 * MiB)
    add_bytes(store, tmp_path, data, "clip.mp4")
    on_disk = sum(f.stat().st_size for f in (store.root / "packs").iterdir())
    index_size = sum(f.stat().st_size for f in store.root.glob("index.sqlite*"))
    assert on_disk + index_size < len(data) * 1.01


def test_gc_keeps_what_pins_need_and_drops_the_rest(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "s")
    a = gen(MiB, b"a")
    b = gen(MiB, b"b")
    cid_a = add_bytes(store, tmp_path, a, "a", pin=True)
    cid_b = add_bytes(store, tmp_path, b, "b", pin=False)
    result = store.gc()
    assert result.blocks_removed == 5 and result.packs_removed == 1
    assert b"".join(store.read_range(cid_a)) == a
    assert not store.has(cid_b)
    store.pin_rm(cid_a)
    store.gc()
    assert store.repo_stat().blocks == 0 and pack_files(store) == []


def test_gc_compacts_a_pack_that_is_mostly_dead(tmp_path: Path) -> None:
    """A directory pack where only one small file stays pinned is rewritten to hold just that file."""
    store = BlockStore(tmp_path / "s")
    top = tmp_path / "dir"
    top.mkdir()
    (top / "big").write_bytes(gen(4 * MiB, b"big"))
    (top / "small").write_bytes(gen(300000, b"small"))
    root = store.add_path(str(top), 262144, pin=True).cid
    small = store.resolve(root, "small")
    store.pin_add(small)
    store.pin_rm(root)
    result = store.gc()
    assert result.packs_compacted == 1
    assert store.usage() < 400000
    assert b"".join(store.read_range(small)) == gen(300000, b"small")


def test_pin_over_quota_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "s", StoreConfig(quota=3 * MiB))
    add_bytes(store, tmp_path, gen(2 * MiB, b"one"), "one")
    before = (store.repo_stat(), pack_files(store))
    (tmp_path / "two").write_bytes(gen(2 * MiB, b"two"))
    with pytest.raises(QuotaExceeded, match="quota"):
        store.add_path(str(tmp_path / "two"), 262144, pin=True)
    assert (store.repo_stat(), pack_files(store)) == before


def test_unpinned_cache_is_evicted_least_recently_used_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Use times are wall-clock seconds; a clock that ticks once per reading orders them without waiting.
    ticks = iter(range(1_000_000_000, 2_000_000_000))
    monkeypatch.setattr(time, "time", lambda: float(next(ticks)))
    store = BlockStore(tmp_path / "s", StoreConfig(quota=int(3.5 * MiB)))
    pinned = add_bytes(store, tmp_path, gen(MiB, b"p"), "p", pin=True)
    first = add_bytes(store, tmp_path, gen(MiB, b"1"), "1", pin=False)
    second = add_bytes(store, tmp_path, gen(MiB, b"2"), "2", pin=False)
    store.touch(first)  # first is now more recently used than second
    third = add_bytes(store, tmp_path, gen(MiB, b"3"), "3", pin=False)
    assert store.usage() <= 3.5 * MiB
    assert store.has(pinned) and store.has(first) and store.has(third)
    assert not store.has(second)


def test_verify_quarantines_a_flipped_byte(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "s")
    data = gen(MiB)
    cid = add_bytes(store, tmp_path, data, "f")
    assert store.verify() == []
    layout, locations = store.layout(cid)
    victim = locations[2]
    assert victim is not None
    with open(store.root / "packs" / victim.pack, "r+b") as f:
        f.seek(victim.offset + 1000)
        byte = f.read(1)
        f.seek(victim.offset + 1000)
        f.write(bytes([byte[0] ^ 1]))
    report = store.verify()
    assert [r.cid for r in report] == [layout.leaves[2].cid]
    assert not store.has(layout.leaves[2].cid)
    assert list((store.root / "quarantine").iterdir())
    with pytest.raises(BlockNotFound):
        b"".join(store.read_range(cid))
    # The pin still holds the rest, and a second verify finds nothing new.
    assert store.verify() == []
    assert store.is_pinned(cid)


def test_put_verified_refuses_wrong_bytes(tmp_path: Path) -> None:
    """Bad input: a block whose bytes do not match its CID is never stored."""
    store = BlockStore(tmp_path / "s")
    cid = CID.for_block(RAW, b"right")
    with pytest.raises(CorruptBlock):
        store.put_verified(cid, b"wrong")
    assert not store.has(cid) and pack_files(store) == []
    store.put_verified(cid, b"right")
    assert store.get_block(cid) == b"right"


def test_reads_survive_another_process_compacting_the_pack(tmp_path: Path) -> None:
    """A reader holding a cached layout keeps serving correct bytes after another process's gc
    moved the blocks to a new pack and deleted the old one."""
    reader = BlockStore(tmp_path / "s")
    top = tmp_path / "dir"
    top.mkdir()
    (top / "big").write_bytes(gen(4 * MiB, b"big"))
    (top / "small").write_bytes(gen(600_000, b"small"))
    root = reader.add_path(str(top), 262144).cid
    small = reader.resolve(root, "small")
    assert b"".join(reader.read_range(small, 1000, 5000)) == gen(600_000, b"small")[1000:6000]
    other = BlockStore(tmp_path / "s")
    other.pin_add(small)
    other.pin_rm(root)
    assert other.gc().packs_compacted == 1
    reader.packs.close()  # no open descriptor of the old pack to fall back on
    assert b"".join(reader.read_range(small, 0, 600_000)) == gen(600_000, b"small")


def _pack_writers() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "medianode-pack-writer"]


def test_a_batch_ends_its_writer_thread_on_commit_abort_exception_and_no_commit(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "s")
    block = gen(300_000)
    cid = CID.for_block(RAW, block)
    before = _pack_writers()
    with store.batch() as batch:
        batch.put(cid, block)
        batch.commit([cid], "kept", len(block))
    assert _pack_writers() == before and store.has(cid)

    other = gen(200_000, seed=b"other")
    other_cid = CID.for_block(RAW, other)
    with store.batch() as batch:  # left without a commit: nothing is stored
        batch.put(other_cid, other)
    assert _pack_writers() == before and not store.has(other_cid)

    with pytest.raises(RuntimeError), store.batch() as batch:
        batch.put(other_cid, other)
        raise RuntimeError("the import failed")
    assert _pack_writers() == before and not store.has(other_cid)

    batch = store.new_batch()
    batch.put(other_cid, other)
    batch.abort()
    assert _pack_writers() == before and not store.has(other_cid)
    assert [name for name in pack_files(store) if name.startswith("tmp-")] == []
    assert len(pack_files(store)) == 1


def test_a_read_never_waits_on_another_process_writing_the_index(tmp_path: Path) -> None:
    """Another store on the same directory (another process, as a serving worker and the owner are) holds
    the index's write lock; recording an access for LRU must not wait for it (it runs under the index lock
    every read of its store takes): it gives up, and reads go on."""
    reader = BlockStore(tmp_path / "s")
    cid = add_bytes(reader, tmp_path, gen(300_000, b"t"), "t", pin=False)
    writer = BlockStore(tmp_path / "s")
    done = threading.Event()
    with writer._index.transaction():  # the write lock, as a long commit of a fetch or an add holds it

        def read() -> None:
            reader.touch(cid)
            assert b"".join(reader.read_range(cid, 0, 100)) == gen(300_000, b"t")[:100]
            done.set()

        thread = threading.Thread(target=read)
        thread.start()
        thread.join(timeout=20)  # the index's busy timeout is 30 s: a touch that waited would still be here
        assert done.is_set(), "the touch waited for the other store's write lock"
    reader.close()
    writer.close()
