"""Content as kubo makes it by default (CIDv0, dag-pb leaves) and identity CIDs, through the store and the CLI.

tests/test_kubo.py trades such content with a real kubo; these build it by hand (tests/dags.py)
so every read path is checked on it without a network: ranges read only the nodes over them,
export keeps every CID as its parent names it, identity CIDs answer from the CID itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import Node, gen
from dags import file_dag, write_car
from node.storage.car import read_car
from node.storage.cid import CID, DAG_PB
from node.storage.dagpb import decode_node
from node.storage.errors import BlockNotFound
from node.storage.store import BlockStore

MiB = 1024 * 1024


def stored(tmp_path: Path, data: bytes, **kwargs: object) -> tuple[BlockStore, CID, list[tuple[CID, bytes]]]:
    root, blocks = file_dag(data, **kwargs)  # type: ignore[arg-type]
    store = BlockStore(tmp_path / "store")
    with store.batch() as batch:
        for cid, block in blocks:
            batch.put_verified(cid, block)
        batch.commit([root], "v0", 0, pin=True)
    return store, root, blocks


def test_cidv0_file_reads_whole_and_in_ranges(tmp_path: Path) -> None:
    data = gen(3 * MiB + 77, b"v0")
    store, root, _ = stored(tmp_path, data)
    assert str(root).startswith("Qm")
    assert store.file_size(root) == len(data)
    assert b"".join(store.read_range(root)) == data
    for offset, length in ((0, 1), (262143, 2), (MiB + 5, MiB), (len(data) - 10, 10)):
        assert b"".join(store.read_range(root, offset, length)) == data[offset : offset + length]


def test_a_range_reads_only_the_nodes_over_it(tmp_path: Path) -> None:
    """Tried: a range in the middle of a dag-pb-leaves file whose other leaves are not stored (as
    when it is still arriving from a peer). Only the root and the leaves under the range are read."""
    data = gen(4 * MiB, b"sparse")
    root, blocks = file_dag(data)
    leaves = [(cid, block) for cid, block in blocks if cid != root]
    store = BlockStore(tmp_path / "store")
    keep = {leaves[5][0], leaves[6][0], root}
    with store.batch() as batch:
        for cid, block in blocks:
            if cid in keep:
                batch.put_verified(cid, block)
        batch.commit([], None, 0)
    offset = 5 * 262144 + 1000
    assert b"".join(store.read_range(root, offset, 300000)) == data[offset : offset + 300000]
    with pytest.raises(BlockNotFound):
        b"".join(store.read_range(root, 0, 10))


def test_export_keeps_cidv0_links_as_named(node: Node, tmp_path: Path) -> None:
    """`export` used to write every non-root block under its CIDv1: the CAR's CIDs then matched
    none of the links inside their parents, and kubo could not use it."""
    data = gen(2 * MiB + 3, b"export-v0")
    root, blocks = file_dag(data)
    write_car(tmp_path / "in.car", root, blocks)
    assert node.ok("import", str(tmp_path / "in.car"), "--json").json["roots"] == [str(root)]
    node.ok("export", str(root), "-o", str(tmp_path / "out.car"))
    with open(tmp_path / "out.car", "rb") as f:
        roots, exported = read_car(f)
        written = list(exported)
    assert roots == [root]
    names = {cid for cid, _ in written}
    assert all(cid.version == 0 for cid in names)
    for cid, block in written:
        if cid.codec == DAG_PB:
            assert {link.cid for link in decode_node(block).links} <= names
    assert node.ok("cat", str(root)).stdout == data


def test_identity_cids_answer_from_the_cid(node: Node) -> None:
    """bafkqaaa (the empty identity block, the gateway probe) and an inlined "hello world" read
    back with no block stored; an identity CID whose bytes are not UnixFS is a one-line error."""
    assert node.ok("cat", "bafkqaaa").stdout == b""
    assert node.ok("stat", "bafkqaaa", "--json").json["size"] == 0
    hello = CID.parse("bafkqac3imvwgy3zao5xxe3de")
    assert node.ok("cat", str(hello)).stdout == b"hello world"
    failed = node.run("cat", "bafyaaaqaae")
    assert failed.code != 0 and "Traceback" not in failed.stderr and len(failed.stderr.strip().splitlines()) == 1
    long = "bafkqa" + "a" * 400  # an identity multihash far over the cap
    failed = node.run("cat", long)
    assert failed.code != 0 and "Traceback" not in failed.stderr
