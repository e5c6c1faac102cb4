"""Holds (pins kept by S3 object keys) and withheld content, in the store and on every public path.

A CID stays pinned while any hold or pin names it; when only private holds keep it, its blocks
are withheld: the public gateway answers 410, Bitswap peers get DONT_HAVE, the viewer hub refuses
a swarm, and it is not announced. A public hold, a pin, or another public DAG sharing it makes it
public again; releasing the last hold leaves it to gc.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from conftest import Served, gen
from node.storage.cid import CID
from node.storage.errors import QuotaExceeded
from node.storage.store import BlockStore, StoreConfig

MiB = 1024 * 1024


def added(store: BlockStore, tmp_path: Path, data: bytes, name: str = "clip") -> CID:
    (tmp_path / name).write_bytes(data)
    return store.add_path(str(tmp_path / name), 262144, pin=False).cid


def test_holds_pin_and_private_holds_withhold(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "s")
    cid = added(store, tmp_path, gen(3 * MiB))
    leaf = store.range_layout(cid, 0, 1)[0].leaves[0].cid
    store.hold("s3:a/one", cid, public=False)
    assert store.is_pinned(cid) and store.is_withheld(cid) and store.is_withheld(leaf)
    assert cid not in store.root_cids()
    store.hold("s3:b/two", cid, public=True)  # another tenant's public key for the same bytes
    assert not store.is_withheld(cid) and cid in store.root_cids()
    store.hold("s3:b/two", cid, public=False)  # that one made private too (PutObjectAcl)
    assert store.is_withheld(leaf)
    store.pin_add(cid)
    assert not store.is_withheld(cid)
    store.pin_rm(cid)
    assert store.is_withheld(cid)
    assert store.release("s3:a/one") == cid and store.is_pinned(cid)
    assert store.release("s3:b/two") == cid and not store.is_pinned(cid) and not store.is_withheld(cid)
    assert store.gc().blocks_removed == 13


def test_a_private_file_inside_a_public_directory_stays_public(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "s")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "clip").write_bytes(gen(MiB, b"shared"))
    directory = store.add_path(str(tmp_path / "dir"), 262144, pin=True).cid
    inner = store.resolve(directory, "clip")
    store.hold("s3:a/clip", inner, public=False)
    assert not store.is_withheld(inner)


def test_a_hold_over_the_quota_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    """Tried: committing 3 MiB with a hold (as an S3 PUT does) into a store with a 2 MiB quota."""
    from node.storage.importer import ChunkFeeder

    store = BlockStore(tmp_path / "s", StoreConfig(quota=2 * MiB))
    batch = store.new_batch()
    feeder = ChunkFeeder(batch, 262144, content_hash="md5")
    feeder.feed(gen(3 * MiB, b"big"))
    root, _ = feeder.finish()
    with pytest.raises(QuotaExceeded):
        batch.commit([root.cid], "big", feeder.size, hold=("s3:a/big", True))
    batch.abort()
    assert not store.has(root.cid) and store.holders(root.cid) == [] and store.repo_stat().blocks == 0


def test_withheld_content_is_not_served_publicly(tmp_path: Path) -> None:
    """The gateway answers 410 for a withheld CID and its blocks, and the viewer hub refuses it;
    a node that asks over Bitswap gets nothing."""
    data = gen(2 * MiB + 1, b"private")
    a = Served(tmp_path / "a")
    b: Served | None = None
    try:
        (tmp_path / "clip").write_bytes(data)
        cid = a.node.ok("add", str(tmp_path / "clip"), "--no-pin", "--json").json["cid"]
        store = BlockStore(tmp_path / "a" / "store")  # a second process's view of the same store, as S3 writes it
        store.hold("s3:tenant/clip", CID.parse(cid), public=False)
        leaf = store.range_layout(CID.parse(cid), 0, 1)[0].leaves[0].cid
        store.close()
        with httpx.Client(timeout=30) as client:
            assert client.get(f"{a.url}/ipfs/{cid}").status_code == 410
            assert client.get(f"{a.url}/ipfs/{leaf}?format=raw").status_code == 410
            assert client.get(f"{a.url}/api/v1/attachment/{cid}").status_code == 410
        b = Served(tmp_path / "b", bootstrap=(a.swarm_addrs[0],))
        with httpx.Client(timeout=60) as client:
            assert client.get(f"{b.url}/ipfs/{cid}").status_code == 504
    finally:
        assert a.stop() == 0
        if b is not None:
            assert b.stop() == 0
