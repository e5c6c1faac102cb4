"""A file's bytes as spans of pack files (what the gateway sends with ``sendfile``), on a real disk."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from conftest import gen
from node.storage.cid import CID
from node.storage.errors import BlockNotFound
from node.storage.layout import FileNode
from node.storage.reads import READ_WINDOW, PackSpan
from node.storage.store import BlockStore, StoreConfig

MiB = 1024 * 1024


def span_bytes(items: list[bytes | PackSpan]) -> bytes:
    """The bytes the items stand for, each span read from its own descriptor and then closed."""
    out = bytearray()
    for item in items:
        if isinstance(item, PackSpan):
            out += os.pread(item.fd, item.length, item.offset)
            item.close()
        else:
            out += item
    return bytes(out)


def add_bytes(store: BlockStore, tmp_path: Path, data: bytes, name: str) -> CID:
    (tmp_path / name).write_bytes(data)
    return store.add_path(str(tmp_path / name), 262144, pin=True).cid


@pytest.fixture(scope="module")
def big() -> bytes:
    return gen(READ_WINDOW + 3 * MiB + 5)  # more than one read window


def test_spans_hold_exactly_the_ranges_bytes_across_windows(tmp_path: Path, big: bytes) -> None:
    """Tried: ranges at the start, the end, across the window boundary and 40 random ones; every
    item of a plain (incompressible) file is a span of a pack, and together they are the range."""
    store = BlockStore(tmp_path / "s")
    cid = add_bytes(store, tmp_path, big, "f")
    rng = random.Random(3)
    cases = [(0, 1), (0, len(big)), (READ_WINDOW - 10, 20), (READ_WINDOW, MiB), (len(big) - 1, 1)]
    cases += [(rng.randrange(len(big)), rng.randrange(1, 5 * MiB)) for _ in range(40)]
    for offset, length in cases:
        length = min(length, len(big) - offset)
        items = list(store.read_spans(cid, offset, length))
        assert all(isinstance(item, PackSpan) for item in items), (offset, length)
        assert span_bytes(items) == big[offset : offset + length], (offset, length)


def test_a_range_read_before_is_planned_from_memory(tmp_path: Path, big: bytes) -> None:
    """The first range of a window needs the index (``spans_if_ready`` says None); once read, the same
    window's ranges come from memory with the right bytes. A range across two windows says None until both
    were read, then comes from memory too, in one span where the pack runs on across the edge."""
    store = BlockStore(tmp_path / "s")
    cid = add_bytes(store, tmp_path, big, "f")
    fresh = BlockStore(tmp_path / "s")  # a reader that has planned nothing yet
    assert fresh.spans_if_ready(cid, 1000, MiB) is None
    span_bytes(list(fresh.read_spans(cid, 0, 10)))
    ready = fresh.spans_if_ready(cid, 1000, MiB)
    assert ready is not None and span_bytes(list[bytes | PackSpan](ready)) == big[1000 : 1000 + MiB]
    assert fresh.spans_if_ready(cid, READ_WINDOW - 10, 20) is None
    span_bytes(list(fresh.read_spans(cid, READ_WINDOW, 10)))
    across = fresh.spans_if_ready(cid, READ_WINDOW - MiB // 2, MiB)
    assert across is not None and len(across) == 1
    assert span_bytes(list[bytes | PackSpan](across)) == big[READ_WINDOW - MiB // 2 : READ_WINDOW + MiB // 2]


def test_a_store_that_hashes_on_read_never_hands_out_spans(tmp_path: Path, big: bytes) -> None:
    """With hash-on-read every byte must pass through the hash, so the items are verified bytes."""
    store = BlockStore(tmp_path / "s", StoreConfig(hash_on_read=True))
    cid = add_bytes(store, tmp_path, big[: 2 * MiB], "f")
    items = list(store.read_spans(cid, 5, MiB))
    assert all(isinstance(item, bytes) for item in items)
    assert span_bytes(items) == big[5 : 5 + MiB]
    assert store.spans_if_ready(cid, 5, MiB) is None


def test_a_span_taken_before_its_pack_was_compacted_away_still_reads(tmp_path: Path) -> None:
    """Tried: spans taken, then another process's gc rewrites the pack and deletes the old one, and the
    reader's own descriptors are closed. The spans still read the old (identical) bytes, and new reads
    plan from the new pack."""
    reader = BlockStore(tmp_path / "s")
    top = tmp_path / "dir"
    top.mkdir()
    (top / "big").write_bytes(gen(4 * MiB, b"big"))
    small_data = gen(600_000, b"small")
    (top / "small").write_bytes(small_data)
    root = reader.add_path(str(top), 262144).cid
    small = reader.resolve(root, "small")
    taken = list(reader.read_spans(small, 0, len(small_data)))
    other = BlockStore(tmp_path / "s")
    other.pin_add(small)
    other.pin_rm(root)
    assert other.gc().packs_compacted == 1
    reader.packs.close()
    assert span_bytes(taken) == small_data
    assert span_bytes(list(reader.read_spans(small, 1000, 5000))) == small_data[1000:6000]


def test_a_window_with_a_block_still_missing_reads_it_once_it_arrives(tmp_path: Path) -> None:
    """Tried: a file whose middle leaf this store lacks (as while it is fetched from peers). The range
    over it fails with BlockNotFound, then, once the block is stored, the same range reads back exactly:
    the plan made while it was missing is not kept."""
    source = BlockStore(tmp_path / "source")
    data = gen(3 * MiB, b"partial")
    cid = add_bytes(source, tmp_path, data, "f")
    layout, _ = source.layout(cid)
    missing = layout.leaves[5].cid
    partial = BlockStore(tmp_path / "partial")
    for block in [cid, *(leaf.cid for leaf in layout.leaves)]:
        if block != missing:
            partial.put_verified(block, source.get_block(block))
    with pytest.raises(BlockNotFound):
        span_bytes(list(partial.read_spans(cid, 0, len(data))))
    partial.put_verified(missing, source.get_block(missing))
    assert span_bytes(list(partial.read_spans(cid, 0, len(data)))) == data


def test_a_range_needs_only_the_nodes_over_it(tmp_path: Path) -> None:
    """Tried: a file of 400 one-KiB leaves under three internal nodes, copied to a store without the last
    internal node and its leaves (as a seek into a file still arriving from peers leaves it). A range under
    the first node reads back exactly (the window's layout cannot be read whole, so only the range is
    planned); one under the missing node is BlockNotFound, naming what to fetch."""
    source = BlockStore(tmp_path / "source")
    data = gen(400 * 1024, b"nodes")
    cid = add_bytes_chunked(source, tmp_path, data, 1024)
    root = FileNode.decode(cid, source.get_block(cid))
    assert len(root.children) >= 3
    last = root.children[-1]
    last_node = FileNode.decode(last, source.get_block(last))
    skipped = {last, *last_node.children}
    partial = BlockStore(tmp_path / "partial")
    layout, _ = source.layout(cid)
    for block in [cid, *root.children, *(leaf.cid for leaf in layout.leaves)]:
        if block not in skipped:
            partial.put_verified(block, source.get_block(block))
    assert span_bytes(list(partial.read_spans(cid, 1000, 50_000))) == data[1000:51_000]
    with pytest.raises(BlockNotFound) as missing:
        span_bytes(list(partial.read_spans(cid, len(data) - 10, 10)))
    assert missing.value.cid == last


def add_bytes_chunked(store: BlockStore, tmp_path: Path, data: bytes, chunk: int) -> CID:
    (tmp_path / "chunked").write_bytes(data)
    return store.add_path(str(tmp_path / "chunked"), chunk, pin=True).cid
