"""Content as kubo makes it by default (CIDv0, dag-pb leaves) and identity CIDs, through the store and the CLI.

tests/integration/test_kubo.py trades such content with a real kubo; these build it by hand (tests/dags.py)
so every read path is checked on it without a network: ranges read only the nodes over them,
export keeps every CID as its parent names it, identity CIDs answer from the CID itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import Node, Served, gen
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


def _file_node(children: list[tuple[CID, int, int]], data: bytes = b"") -> tuple[CID, bytes]:
    """A file node over (cid, tsize, content size) children, with ``data`` of its own first."""
    from node.storage.dagpb import PBLink, PBNode, encode_node
    from node.storage.unixfs import NodeType, UnixFSData

    unixfs = UnixFSData(
        NodeType.FILE, data=data or None, filesize=len(data) + sum(c[2] for c in children),
        blocksizes=tuple(c[2] for c in children),
    )  # fmt: skip
    block = encode_node(PBNode(tuple(PBLink(c, "", t) for c, t, _ in children), unixfs.encode()))
    return CID.for_block(DAG_PB, block), block


def test_uneven_dags_trickle_shaped_with_identity_leaves_read_in_ranges(tmp_path: Path) -> None:
    """A trickle-shaped file: a root with bytes of its own, leaves beside subtrees of different
    depths, an identity-inlined leaf and a dag-pb leaf. Every range reads right."""
    from node.storage.cid import RAW, encode_varint

    a, b, c = gen(1000, b"a"), gen(3000, b"b"), gen(500, b"c")
    inline = b"inline bytes"
    identity = CID(1, RAW, encode_varint(0) + encode_varint(len(inline)) + inline)
    leaf_a, leaf_b, leaf_c = (CID.for_block(RAW, x) for x in (a, b, c))
    dagpb_leaf, dagpb_leaf_block = _file_node([], data=b"dag-pb leaf bytes")
    deep, deep_block = _file_node([(leaf_c, len(c), len(c)), (dagpb_leaf, len(dagpb_leaf_block), 17)])
    mid, mid_block = _file_node([(leaf_b, len(b), len(b)), (deep, len(deep_block), len(c) + 17)])
    root, root_block = _file_node(
        [(leaf_a, len(a), len(a)), (identity, 0, len(inline)), (mid, len(mid_block), len(b) + len(c) + 17)],
        data=b"root's own",
    )
    whole = b"root's own" + a + inline + b + c + b"dag-pb leaf bytes"
    store = BlockStore(tmp_path / "store")
    with store.batch() as batch:
        for cid, block in ((root, root_block), (mid, mid_block), (deep, deep_block), (dagpb_leaf, dagpb_leaf_block),
                           (leaf_a, a), (leaf_b, b), (leaf_c, c)):  # fmt: skip
            batch.put_verified(cid, block)
        batch.commit([root], "uneven", 0, pin=True)
    assert store.file_size(root) == len(whole)
    assert b"".join(store.read_range(root)) == whole
    for offset in range(0, len(whole), 97):
        for length in (1, 50, 1200, len(whole)):
            assert b"".join(store.read_range(root, offset, length)) == whole[offset : offset + length]


def test_a_dag_whose_sizes_lie_is_refused_naming_the_node(tmp_path: Path) -> None:
    """Tried: an inner node whose blocksizes claim more than its child node holds."""
    from node.storage.cid import RAW
    from node.storage.unixfs import UnixFSError

    leaf = gen(1000, b"leaf")
    leaf_cid = CID.for_block(RAW, leaf)
    inner, inner_block = _file_node([(leaf_cid, len(leaf), len(leaf))])
    root, root_block = _file_node([(inner, len(inner_block), 5000)])
    store = BlockStore(tmp_path / "store")
    with store.batch() as batch:
        for cid, block in ((root, root_block), (inner, inner_block), (leaf_cid, leaf)):
            batch.put_verified(cid, block)
        batch.commit([root], "lie", 0)
    with pytest.raises(UnixFSError, match=str(inner)):
        b"".join(store.read_range(root))


def test_identity_cid_over_the_cap_is_a_400(served: Served) -> None:
    import httpx

    too_long = CID.parse("bafkqac3imvwgy3zao5xxe3de").encode()[:6] + "a" * 400
    answer = httpx.get(f"{served.url}/ipfs/{too_long}", timeout=30)
    assert answer.status_code == 400
    probe = httpx.get(f"{served.url}/ipfs/bafkqaaa", timeout=30)
    assert probe.status_code == 200 and probe.content == b""
