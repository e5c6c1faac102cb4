"""Content addressing: our CIDs equal kubo's / the reference importer's, and the codecs follow the specs."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import LOCAL_VECTORS, SHARED_VECTORS, gen
from node.storage.cid import CID, DAG_PB, RAW, CIDError, base58btc_encode
from node.storage.dagpb import DagPBError, PBLink, PBNode, decode_node, encode_node
from node.storage.importer import ChunkFeeder, UnsupportedInputError, import_stream, import_tree
from node.storage.layout import walk_file
from node.storage.unixfs import NodeType, UnixFSData, decode_unixfs


class MemorySink:
    def __init__(self) -> None:
        self.blocks: dict[CID, bytes] = {}
        self.order: list[CID] = []

    def put(self, cid: CID, data: bytes) -> None:
        self.blocks[cid] = bytes(data)
        self.order.append(cid)


def _file_vectors() -> list[tuple[int, int, bytes, str]]:
    shared = json.loads(SHARED_VECTORS.read_text())
    assert gen(12).hex() == shared["generator"]["check"].split('"')[1]
    cases = [(v["size"], v["chunk_size"], b"jsanchors-v1", v["cid"]) for v in shared["vectors"]]
    local = json.loads(LOCAL_VECTORS.read_text())
    cases += [(v["size"], v["chunk_size"], v["seed"].encode(), v["cid"]) for v in local["files"]]
    return cases


@pytest.mark.parametrize(("size", "chunk_size", "seed", "expected"), _file_vectors())
def test_file_cid_matches_reference(size: int, chunk_size: int, seed: bytes, expected: str) -> None:
    data = gen(size, seed)
    sink = MemorySink()
    root = import_stream(io.BytesIO(data), sink, chunk_size)
    assert str(root.cid) == expected
    assert root.content_size == size
    # Every block hashes to its CID and the leaves read back to the file, in order.
    for cid, block in sink.blocks.items():
        assert cid.verifies(block)
    layout = walk_file(root.cid, sink.blocks.__getitem__)
    assert layout.size == size
    assert b"".join(sink.blocks[leaf.cid] for leaf in layout.leaves) == data


def _dir_vectors() -> list[dict]:  # type: ignore[type-arg]
    return json.loads(LOCAL_VECTORS.read_text())["dirs"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("case", _dir_vectors(), ids=lambda c: c["name"])
def test_directory_cid_matches_reference(case: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    top = tmp_path / case["name"]
    top.mkdir()
    for entry in case["entries"]:
        path = top / entry["path"]
        if entry["type"] == "dir":
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(gen(entry["size"], ("jsanchors-v1/" + entry["path"]).encode()))
    sink = MemorySink()
    root = import_tree(str(top), sink, case["chunk_size"])
    assert str(root.cid) == case["cid"]
    node, data = decode_unixfs(sink.blocks[root.cid])
    assert data.type == NodeType.DIRECTORY
    assert [link.name for link in node.links] == case["root_links"]


def test_directory_block_bytes_match_reference(tmp_path: Path) -> None:
    """Byte-level check of one directory node and one file root against the reference importer's dump."""
    hexes = json.loads(LOCAL_VECTORS.read_text())["blocks_hex"]
    flat = next(c for c in _dir_vectors() if c["name"] == "flat")
    top = tmp_path / "flat"
    top.mkdir()
    for entry in flat["entries"]:
        (top / entry["path"]).write_bytes(gen(entry["size"], ("jsanchors-v1/" + entry["path"]).encode()))
    sink = MemorySink()
    root = import_tree(str(top), sink)
    assert sink.blocks[root.cid].hex() == hexes["flat_root_dir"]
    file_root = import_stream(io.BytesIO(gen(262145, b"jsanchors-v1/c.txt")), sink)
    assert sink.blocks[file_root.cid].hex() == hexes["file_262145_root"]


def test_hidden_files_skipped_unless_asked(tmp_path: Path) -> None:
    """kubo's `add -r` leaves dotfiles out by default."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_bytes(b"a")
    plain = import_tree(str(tmp_path / "d"), MemorySink())
    (tmp_path / "d" / ".secret").write_bytes(b"s")
    assert import_tree(str(tmp_path / "d"), MemorySink()).cid == plain.cid
    assert import_tree(str(tmp_path / "d"), MemorySink(), hidden=True).cid != plain.cid


def test_balanced_tree_shape_over_two_levels() -> None:
    """From the UnixFS spec: 174*174+1 leaves need a third level; checked with 1-byte chunks to stay small."""
    sink = MemorySink()
    n = 174 * 174 + 1
    root = import_stream(io.BytesIO(gen(n)), sink, chunk_size=1)
    node, data = decode_unixfs(sink.blocks[root.cid])
    assert data.filesize == n and len(node.links) == 2
    assert list(data.blocksizes) == [174 * 174, 1]
    left, left_data = decode_unixfs(sink.blocks[node.links[0].cid])
    assert len(left.links) == 174 and left_data.filesize == 174 * 174
    right, right_data = decode_unixfs(sink.blocks[node.links[1].cid])
    # The lone last leaf still sits under a chain of single-child nodes, as kubo builds it.
    assert len(right.links) == 1 and right_data.filesize == 1
    # Tsize of a link is the whole subtree's encoded size.
    assert node.links[0].tsize == sum(len(sink.blocks[c]) for c in _subtree(sink, node.links[0].cid))


def _subtree(sink: MemorySink, cid: CID) -> list[CID]:
    out = [cid]
    if cid.codec == DAG_PB:
        for link in decode_node(sink.blocks[cid]).links:
            out += _subtree(sink, link.cid)
    return out


def test_chunk_size_bounds() -> None:
    """Bad input: chunk sizes of 0 and above 1 MiB are refused (kubo's limit for Bitswap-safe blocks)."""
    for bad in (0, 1048577):
        with pytest.raises(UnsupportedInputError, match="chunk size"):
            import_stream(io.BytesIO(b"x"), MemorySink(), bad)


def test_cid_parsing_and_printing() -> None:
    cid = CID.parse("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")
    assert cid.codec == RAW and cid.verifies(b"")
    assert CID.parse(cid.encode("base58btc")) == cid
    assert CID.parse("f" + bytes(cid).hex()) == cid
    # CIDv0 reads as dag-pb and prints as CIDv1 base32 after to_v1.
    v0 = CID.parse("QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn")
    assert v0.version == 0 and v0.codec == DAG_PB
    assert str(v0.to_v1()) == "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"
    # The identity CID of the empty raw block (the trustless gateway probe).
    probe = CID.parse("bafkqaaa")
    assert probe.is_identity and probe.identity_data() == b""


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("not-a-cid", "multibase"),
        ("bafy!!!", "base32"),
        ("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyk", "truncated"),
        ("Qm" + "1" * 44, "CIDv0"),
        ("b" + "a" * 600, "too long"),
        ("zzzzzz", "CID"),
    ],
)
def test_malformed_cids_are_rejected_with_reason(text: str, reason: str) -> None:
    """Bad input: each malformed CID string raises CIDError naming the problem."""
    with pytest.raises(CIDError) as info:
        CID.parse(text)
    assert str(info.value)


def test_dagpb_roundtrip_and_rejects_garbage() -> None:
    child = CID.for_block(RAW, b"x")
    node = PBNode((PBLink(child, "a", 1), PBLink(child, "", None)), UnixFSData(NodeType.DIRECTORY).encode())
    encoded = encode_node(node)
    assert decode_node(encoded) == node
    for bad in (b"\xff", encoded[:-1], b"\x0a\x05ab", b"\x12\x03\x0a\x01\x00"):
        with pytest.raises(DagPBError):
            decode_node(bad)


def test_base58btc_digest_multibase_shape() -> None:
    """FEP-1311 digests are base58btc multihashes: sha2-256 ones start with zQm."""
    assert ("z" + base58btc_encode(b"\x12\x20" + bytes(32))).startswith("zQm")


def test_varints_and_cid_bytes_have_one_spelling() -> None:
    """Bad input: non-minimal and overlong varints, and a CIDv0 cut short, are refused."""
    from node.storage.cid import decode_varint

    assert decode_varint(b"\x80\x01") == (128, 2)
    for bad in (b"\x81\x00", b"\xff" * 9 + b"\x01", b"\x80"):
        with pytest.raises(ValueError):
            decode_varint(bad)
    raw = bytes(CID.for_block(RAW, b"x"))
    with pytest.raises(CIDError):
        CID.from_bytes(b"\x81\x00" + raw[1:])
    with pytest.raises(CIDError, match="truncated"):
        CID.from_bytes(b"\x12\x20" + bytes(10))


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(min_value=0, max_value=5000),
    chunk_size=st.sampled_from([1, 7, 256, 1000]),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=12),
)
def test_a_body_fed_in_any_pieces_gets_the_cid_of_the_whole_file(size: int, chunk_size: int, cuts: list[int]) -> None:
    """Tried: an upload's body arriving cut anywhere (inside a leaf, on a leaf's edge, empty pieces, one
    byte at a time), as HTTP bodies do; the pieces must give the CID and leaves of the file read at once."""
    data = gen(size, b"feeder")
    whole = import_stream(io.BytesIO(data), MemorySink(), chunk_size)
    sink = MemorySink()
    feeder = ChunkFeeder(sink, chunk_size)
    edges = sorted({0, size, *(c for c in cuts if c <= size)})
    for start, end in itertools.pairwise(edges):
        feeder.feed(data[start:end])
        feeder.feed(b"")
    root, digest = feeder.finish()
    assert root == whole
    assert digest == hashlib.sha256(data).digest()
    layout = walk_file(root.cid, sink.blocks.__getitem__)
    assert b"".join(sink.blocks[leaf.cid] for leaf in layout.leaves) == data
