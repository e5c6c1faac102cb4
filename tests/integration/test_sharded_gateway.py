"""Sharded (HAMT) directories and lying DAGs through the gateway, on a real ``serve``.

A directory past kubo's 256 KiB of links is added as a HAMT; the gateway resolves paths through
it, lists it, and its CARs carry the inner shard nodes a client needs to verify a path. DAGs
that lie (a file whose sizes disagree with its blocks, a HAMT with a bad fanout, a file deeper
than any valid one) answer a 4xx naming the block, never another block's bytes.
"""

from __future__ import annotations

import io
from pathlib import Path

import httpx

from conftest import Served
from dags import file_dag, write_car
from node.storage import directories
from node.storage.car import read_car
from node.storage.cid import CID, DAG_PB, RAW
from node.storage.dagpb import PBLink, PBNode, encode_node
from node.storage.unixfs import NodeType, UnixFSData


def large_directory(root: Path, count: int = 950) -> Path:
    root.mkdir(parents=True)
    for i in range(count):
        (root / f"{i:04d}-{'clip' * 61}.txt").write_bytes(f"clip {i}\n".encode())
    return root


def test_paths_listings_and_cars_through_a_sharded_directory(served: Served, tmp_path: Path) -> None:
    source = large_directory(tmp_path / "many")
    added = served.node.ok("add", "-r", str(source), "--json").json["cid"]
    name = sorted(p.name for p in source.iterdir())[417]
    with httpx.Client(timeout=60) as client:
        inside = client.get(f"{served.url}/ipfs/{added}/{name}")
        assert inside.status_code == 200 and inside.content == (source / name).read_bytes()
        listing = client.get(f"{served.url}/ipfs/{added}/")
        assert listing.status_code == 200 and listing.text.count("<tr>") == 951
        missing = client.get(f"{served.url}/ipfs/{added}/no-such-clip")
        assert missing.status_code == 404
        car = client.get(f"{served.url}/ipfs/{added}/{name}", params={"format": "car", "dag-scope": "block"})
    assert car.status_code == 200
    roots, blocks = read_car(io.BytesIO(car.content))
    found = {}
    for cid, block in blocks:
        assert cid.verifies(block)
        found[cid] = block
    # The CAR alone proves the path: root, the shards on the way, the file.
    resolved = directories.resolve(roots[0], [name], found.__getitem__)
    assert len(resolved.traversed) >= 3 and found[resolved.cids[-1]] == (source / name).read_bytes()


def _import(served: Served, tmp_path: Path, root: CID, blocks: list[tuple[CID, bytes]]) -> None:
    write_car(tmp_path / "lie.car", root, blocks)
    served.node.ok("import", str(tmp_path / "lie.car"))


def test_a_file_that_claims_more_bytes_than_its_leaf_holds_is_refused(served: Served, tmp_path: Path) -> None:
    """Tried: a file node claiming 50,000 bytes for a 10-byte raw leaf, stored next to another block.
    It used to answer 200 with the leaf followed by the other block's bytes."""
    leaf = b"abcdefghij"
    leaf_cid = CID.for_block(RAW, leaf)
    other = b"SECRET" * 1000
    data = UnixFSData(NodeType.FILE, filesize=50_000, blocksizes=(50_000,))
    node = encode_node(PBNode((PBLink(leaf_cid, "", len(leaf)),), data.encode()))
    root = CID.for_block(DAG_PB, node)
    _import(served, tmp_path, root, [(root, node), (leaf_cid, leaf), (CID.for_block(RAW, other), other)])
    with httpx.Client(timeout=30) as client:
        answer = client.get(f"{served.url}/ipfs/{root}")
        assert answer.status_code == 422 and str(leaf_cid) in answer.text
        assert b"SECRET" not in answer.content
    failed = served.node.run("cat", str(root))
    assert failed.code != 0 and b"SECRET" not in failed.stdout and "Traceback" not in failed.stderr


def test_a_hamt_with_a_wrong_fanout_and_an_over_deep_file_are_refused(served: Served, tmp_path: Path) -> None:
    """Tried: a HAMT root with fanout 3 (not a power of two), and a chain of 100 file nodes each with
    one child (no valid UnixFS layout is that deep)."""
    shard = b"\x08\x05" + b"\x12\x01\x01" + b"\x28\x22" + b"\x30\x03"  # Type 5, bitfield, murmur3, fanout 3
    target = CID.for_block(RAW, b"x")
    bad = encode_node(PBNode((PBLink(target, "00x", 1),), shard))
    bad_cid = CID.for_block(DAG_PB, bad)
    _import(served, tmp_path, bad_cid, [(bad_cid, bad), (target, b"x")])
    with httpx.Client(timeout=30) as client:
        for path in (f"{bad_cid}/x", f"{bad_cid}/"):
            answer = client.get(f"{served.url}/ipfs/{path}")
            assert answer.status_code == 422 and "fanout" in answer.text, (path, answer.text)

    leaf = b"deep"
    blocks = [(CID.for_block(RAW, leaf), leaf)]
    for _ in range(100):
        child, _block = blocks[-1]
        data = UnixFSData(NodeType.FILE, filesize=len(leaf), blocksizes=(len(leaf),))
        node = encode_node(PBNode((PBLink(child, "", len(leaf)),), data.encode()))
        blocks.append((CID.for_block(DAG_PB, node), node))
    deep_root = blocks[-1][0]
    _import(served, tmp_path, deep_root, blocks[::-1])
    with httpx.Client(timeout=30) as client:
        answer = client.get(f"{served.url}/ipfs/{deep_root}")
        assert answer.status_code == 422 and "deeper than" in answer.text


def test_a_cidv0_file_through_the_gateway(served: Served, tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000
    root, blocks = file_dag(data, chunk=65536)
    _import(served, tmp_path, root, blocks)
    with httpx.Client(timeout=30) as client:
        whole = client.get(f"{served.url}/ipfs/{root}")
        assert whole.status_code == 200 and whole.content == data
        part = client.get(f"{served.url}/ipfs/{root}", headers={"Range": "bytes=100000-400000"})
        assert part.status_code == 206 and part.content == data[100000:400001]
