"""HAMT-sharded directories: our importer gives the reference importer's (and kubo's) CIDs, and shards read back.

The vectors (tests/vectors/hamt-dirs.json, made by make_hamt_dirs.mjs) describe
each directory by a name/size generator; the trees are written to tmp_path and
imported once per session. Bad shards are hand-built dag-pb nodes.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from conftest import TESTS, gen
from node.storage import hamt
from node.storage.cid import CID, DAG_PB, RAW
from node.storage.dagpb import PBLink, PBNode, decode_node, encode_node
from node.storage.hamt import Absent, Descend, Entry, Found, HAMTError
from node.storage.importer import import_tree
from node.storage.protobuf import bytes_field, varint_field
from node.storage.unixfs import Child, NodeType, UnixFSError, decode_unixfs, directory_node

VECTORS = json.loads((TESTS / "vectors" / "hamt-dirs.json").read_text())
CASES: list[dict[str, Any]] = VECTORS["dirs"]


class MemorySink:
    def __init__(self) -> None:
        self.blocks: dict[CID, bytes] = {}

    def put(self, cid: CID, data: bytes) -> None:
        self.blocks[cid] = bytes(data)


def _generated(case: dict[str, Any]) -> list[tuple[str, int]]:
    rule = VECTORS["generator"]["names"]
    stems, exts = rule["stems"], rule["exts"]
    assert rule["rule"] == "prefix + stems[i % 6] + decimal(i) + exts[i % 4]" and len(stems) == 6 and len(exts) == 4
    assert VECTORS["generator"]["sizes"] == "(i * 7) % 41"
    files = [(f"{case['prefix']}{stems[i % 6]}{i}{exts[i % 4]}", (i * 7) % 41) for i in range(case["count"])]
    return files + [(e["path"], e["size"]) for e in case["extra"]]


def _top_names(case: dict[str, Any]) -> set[str]:
    return {path.split("/")[0] for path, _size in _generated(case)}


@pytest.fixture(scope="session")
def imported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Child, MemorySink]]:
    """Every vector directory, written out and imported once."""
    assert gen(12).hex() == VECTORS["generator"]["check"]["hex"]
    base = tmp_path_factory.mktemp("hamt")
    out: dict[str, tuple[Child, MemorySink]] = {}
    for case in CASES:
        top = base / case["name"]
        top.mkdir()
        for path, size in _generated(case):
            target = top / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(gen(size, ("jsanchors-v1/" + path).encode()))
        sink = MemorySink()
        out[case["name"]] = (import_tree(str(top), sink), sink)
    return out


@contextmanager
def deadline(seconds: int = 10) -> Iterator[None]:
    """Fail instead of hanging if the code under test loops."""

    def expire(_signum: int, _frame: object) -> None:
        raise TimeoutError("did not finish: a loop?")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _walk_shards(root: CID, blocks: dict[CID, bytes]) -> tuple[int, int]:
    """(number of shard nodes, deepest shard depth) under a HAMT root."""
    count, deepest = 0, 0
    todo = [(root, 0)]
    while todo:
        cid, depth = todo.pop()
        shard = hamt.decode_shard(cid, blocks[cid])
        count += 1
        deepest = max(deepest, depth)
        todo += [(link.cid, depth + 1) for link in shard.links if link.is_shard]
    return count, deepest


def _resolve(root: CID, path: str, blocks: dict[CID, bytes]) -> CID:
    """Walk a path through HAMT and flat directories alike."""
    cid = root
    for part in path.split("/"):
        node, data = decode_unixfs(blocks[cid])
        if data.type == NodeType.HAMT_SHARD:
            entry = hamt.lookup(cid, part, blocks.__getitem__)
            assert entry is not None, f"{part!r} not found"
            cid = entry.cid
        else:
            assert data.type == NodeType.DIRECTORY
            cid = next(link.cid for link in node.links if link.name == part)
    return cid


# ---------------------------------------------------------------------------
# The reference vectors


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_root_cid_matches_reference(case: dict[str, Any], imported: dict[str, tuple[Child, MemorySink]]) -> None:
    root, sink = imported[case["name"]]
    assert str(root.cid) == case["cid"]
    _node, data = decode_unixfs(sink.blocks[root.cid])
    expected_type = NodeType.HAMT_SHARD if case["root_unixfs_type"] == "hamt-sharded-directory" else NodeType.DIRECTORY
    assert data.type == expected_type
    # The estimate the decision rests on (CIDv1 of raw leaves and of directories: 36 bytes).
    assert sum(len(n.encode()) + 36 for n in _top_names(case)) == case["estimate_kubo"]
    if "cid_js_default" in case:
        # kubo and the JS importer disagree on this one: we follow kubo v0.22.
        assert case["root_unixfs_type_js_default"] == "directory" and str(root.cid) != case["cid_js_default"]
    # Every block we wrote hashes to its CID.
    assert all(cid.verifies(block) for cid, block in sink.blocks.items())


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_paths_resolve_to_reference_cids(case: dict[str, Any], imported: dict[str, tuple[Child, MemorySink]]) -> None:
    root, sink = imported[case["name"]]
    assert case["paths"]
    for path, expected in case["paths"].items():
        assert str(_resolve(root.cid, path, sink.blocks)) == expected, path


@pytest.mark.parametrize(
    "case", [c for c in CASES if c["root_unixfs_type"] == "hamt-sharded-directory"], ids=lambda c: c["name"]
)
def test_iterator_yields_exactly_the_entries(
    case: dict[str, Any], imported: dict[str, tuple[Child, MemorySink]]
) -> None:
    root, sink = imported[case["name"]]
    fetched: list[CID] = []

    def get_block(cid: CID) -> bytes:
        fetched.append(cid)
        return sink.blocks[cid]

    entries = list(hamt.iter_entries(root.cid, get_block))
    names = [e.name for e in entries]
    assert len(names) == len(set(names)) == case["entries"]
    assert set(names) == _top_names(case)
    # Each shard is fetched once, and the shape is the reference's.
    assert len(fetched) == len(set(fetched)) == case["shards"]
    assert _walk_shards(root.cid, sink.blocks) == (case["shards"], case["max_depth"])
    # Entries carry what a listing needs: the child's CID and its Tsize.
    for entry in entries[:50]:
        assert entry.tsize is not None and entry.cid in sink.blocks


def test_flat_and_sharded_sides_of_the_threshold(imported: dict[str, tuple[Child, MemorySink]]) -> None:
    by_name = {c["name"]: c for c in CASES}
    assert (
        by_name["flat-just-below"]["estimate_kubo"] < hamt.SHARD_THRESHOLD < by_name["hamt-just-above"]["estimate_kubo"]
    )
    assert by_name["hamt-at-threshold"]["estimate_kubo"] == hamt.SHARD_THRESHOLD
    # Files alone stay under the threshold; only kubo's counting of sub-directories pushes it over.
    subdirs = by_name["hamt-subdirs"]
    assert subdirs["estimate_js"] < hamt.SHARD_THRESHOLD <= subdirs["estimate_kubo"]
    root, sink = imported["flat-just-below"]
    node, data = decode_unixfs(sink.blocks[root.cid])
    assert data.type == NodeType.DIRECTORY and len(node.links) == by_name["flat-just-below"]["entries"]


def test_shard_bytes_match_reference(imported: dict[str, tuple[Child, MemorySink]]) -> None:
    hexes = VECTORS["blocks_hex"]
    root, sink = imported["hamt-just-above"]
    node = decode_node(sink.blocks[root.cid])
    assert node.data is not None and node.data.hex() == hexes["just_above_root_unixfs_data"]
    parting = hexes["collision_parting_shard"]
    _root, sink = imported["hamt-collision"]
    assert sink.blocks[CID.parse(parting["cid"])].hex() == parting["hex"]


def test_collision_pair_descends_step_by_step(imported: dict[str, tuple[Child, MemorySink]]) -> None:
    """The pair the generator found shares its first bits under our hash too; lookup_step walks down to them."""
    case = next(c for c in CASES if c["name"] == "hamt-collision")
    first, second = case["collision"]["names"]
    shared = case["collision"]["shared_bits"]
    h1, h2 = hamt.name_hash(first), hamt.name_hash(second)
    assert h1 >> (64 - shared) == h2 >> (64 - shared) and (h1 ^ h2) >> (63 - shared) == 1
    root, sink = imported["hamt-collision"]
    for name in (first, second):
        cid, depth, fanout = root.cid, 0, None
        descents = 0
        while True:
            step = hamt.lookup_step(cid, sink.blocks[cid], name, depth, fanout)
            if not isinstance(step, Descend):
                break
            assert step.depth == depth + 1 and step.fanout == 256
            cid, depth, fanout = step.cid, step.depth, step.fanout
            descents += 1
        assert isinstance(step, Found) and str(step.entry.cid) == case["paths"][name]
        assert descents == shared // 8 and str(cid) == VECTORS["blocks_hex"]["collision_parting_shard"]["cid"]
    assert isinstance(hamt.lookup_step(root.cid, sink.blocks[root.cid], "no such entry"), (Absent, Descend))
    assert hamt.lookup(root.cid, "no such entry", sink.blocks.__getitem__) is None


# ---------------------------------------------------------------------------
# The builder on its own


def _entries(n: int, tag: str = "e") -> dict[str, Child]:
    out = {}
    for i in range(n):
        data = f"{tag}{i}".encode()
        out[f"{tag}-{i}-ñ"] = Child(CID.for_block(RAW, data), len(data), len(data))
    return out


@pytest.mark.parametrize("fanout", [8, 16, 256, 1024])
def test_build_then_read_round_trips(fanout: int) -> None:
    entries = _entries(1500)
    blocks: dict[CID, bytes] = {}
    root = hamt.build_shard(entries, blocks.__setitem__, fanout=fanout)
    # Insertion order does not matter.
    again: dict[CID, bytes] = {}
    assert hamt.build_shard(dict(reversed(entries.items())), again.__setitem__, fanout=fanout) == root
    assert again == blocks
    listed = {e.name: e for e in hamt.iter_entries(root.cid, blocks.__getitem__)}
    assert listed == {n: Entry(n, c.cid, c.tsize) for n, c in entries.items()}
    for name in list(entries)[::97]:
        assert hamt.lookup(root.cid, name, blocks.__getitem__) == Entry(name, entries[name].cid, entries[name].tsize)
    assert hamt.lookup(root.cid, "absent", blocks.__getitem__) is None
    # Tsize: every shard block plus every entry's own Tsize.
    assert root.tsize == sum(len(b) for b in blocks.values()) + sum(c.tsize for c in entries.values())
    width = len(f"{fanout - 1:X}")
    top = hamt.decode_shard(root.cid, blocks[root.cid])
    assert top.fanout == fanout and all(len(link.name or "") != width for link in top.links)


def test_build_accepts_a_block_sink_and_a_single_entry() -> None:
    sink = MemorySink()
    entries = _entries(1)
    root = hamt.build_shard(entries, sink.put)
    assert list(sink.blocks) == [root.cid]
    shard = hamt.decode_shard(root.cid, sink.blocks[root.cid])
    (link,) = shard.links
    assert link.name == "e-0-ñ" and link.index == hamt.slot_index(hamt.name_hash("e-0-ñ"), 0)
    assert hamt.is_shard(sink.blocks[root.cid])
    assert not hamt.is_shard(directory_node(entries)[0]) and not hamt.is_shard(b"\xff")


def test_build_refuses_empty_names_and_full_hash_collisions(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UnixFSError, match="non-empty name"):
        hamt.build_shard({"": _entries(1)["e-0-ñ"]}, lambda _c, _b: None)
    with pytest.raises(ValueError, match="fanout"):
        hamt.build_shard(_entries(2), lambda _c, _b: None, fanout=100)
    # Two names with one 64-bit hash: kubo says "sharded directory too deep"; so do we.
    monkeypatch.setattr(hamt, "name_hash", lambda _name: 0x1234)
    with pytest.raises(HAMTError, match="too deep"):
        hamt.build_shard(_entries(2), lambda _c, _b: None)


def test_needs_sharding_is_kubos_rule() -> None:
    entries = _entries(3)
    size = hamt.estimated_size(entries)
    assert size == sum(len(n.encode()) + 36 for n in entries)
    assert hamt.needs_sharding(entries, threshold=size) and not hamt.needs_sharding(entries, threshold=size + 1)


# ---------------------------------------------------------------------------
# Bad shards


def _data(bitfield: bytes | None, fanout: int | None = 256, hash_type: int | None = 0x22, node_type: int = 5) -> bytes:
    out = varint_field(1, node_type)
    if bitfield is not None:
        out += bytes_field(2, bitfield)
    if hash_type is not None:
        out += varint_field(5, hash_type)
    if fanout is not None:
        out += varint_field(6, fanout)
    return out


def _leaf(label: str) -> PBLink:
    return PBLink(CID.for_block(RAW, label.encode()), label, 1)


def _block(links: list[PBLink], data: bytes) -> tuple[CID, bytes]:
    block = encode_node(PBNode(tuple(links), data))
    return CID.for_block(DAG_PB, block), block


def _bits(*slots: int) -> bytes:
    value = sum(1 << s for s in slots)
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def _raises(cid: CID, block: bytes, match: str) -> None:
    for attempt in (
        lambda: hamt.decode_shard(cid, block),
        lambda: hamt.lookup_step(cid, block, "x"),
        lambda: list(hamt.iter_entries(cid, {cid: block}.__getitem__)),
    ):
        with pytest.raises(HAMTError, match=match) as info:
            attempt()
        assert str(cid) in str(info.value)


@pytest.mark.parametrize(
    ("fanout", "match"),
    [
        (255, "power of two"),
        (4, "power of two"),
        (2048, "power of two"),
        (0, "power of two"),
        (None, "without a fanout"),
    ],
)
def test_wrong_fanout_is_refused(fanout: int | None, match: str) -> None:
    cid, block = _block([_leaf("01a")], _data(_bits(1), fanout=fanout))
    _raises(cid, block, match)


@pytest.mark.parametrize(
    ("links", "bitfield", "match"),
    [
        (["01a", "02b"], _bits(1, 2, 3), "3 slots set but the node has 2 links"),
        (["01a", "02b"], _bits(1), "1 slots set but the node has 2 links"),
        (["01a"], b"\x00" * 32 + b"\x02", "too long for fanout"),
    ],
)
def test_bitfield_must_agree_with_links(links: list[str], bitfield: bytes, match: str) -> None:
    cid, block = _block([_leaf(label) for label in links], _data(bitfield))
    _raises(cid, block, match)


@pytest.mark.parametrize(
    ("label", "match"),
    [
        ("0aname", "uppercase hex"),  # lowercase prefix
        ("Z1name", "uppercase hex"),
        ("1", "uppercase hex"),  # shorter than the prefix
        ("", "uppercase hex"),
        ("0Bname", "named for slot 0B but the bitfield puts it in slot A"),
    ],
)
def test_malformed_link_names_are_refused(label: str, match: str) -> None:
    cid, block = _block([_leaf(label)], _data(_bits(10)))
    _raises(cid, block, match)


def test_links_out_of_slot_order_are_refused() -> None:
    cid, block = _block([_leaf("05b"), _leaf("01a")], _data(_bits(1, 5)))
    _raises(cid, block, "named for slot 05 but the bitfield puts it in slot 1")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (_data(_bits(1), hash_type=0x12), "hashType 0x12"),
        (_data(_bits(1), hash_type=None), "hashType missing"),
        (_data(_bits(1), node_type=1), "not a HAMT shard"),
        (b"\xff", "malformed UnixFS data"),
    ],
)
def test_wrong_type_or_hash_is_refused(data: bytes, match: str) -> None:
    cid, block = _block([_leaf("01a")], data)
    _raises(cid, block, match)


def test_sub_shard_link_to_a_raw_block_is_refused() -> None:
    cid, block = _block([PBLink(CID.for_block(RAW, b"x"), "01", 1)], _data(_bits(1)))
    _raises(cid, block, "points at a raw block")
    with pytest.raises(HAMTError, match="dag-pb block"):
        hamt.decode_shard(CID.for_block(RAW, block), block)


def test_shard_that_links_to_itself_is_an_error_not_a_hang() -> None:
    """A sub-shard link whose CID maps back to the same block (a lying store, or a forged DAG)."""
    name = "looping"
    slot = hamt.slot_index(hamt.name_hash(name), 0)
    fake = CID.for_block(DAG_PB, b"not the real hash of the block")
    _cid, block = _block([PBLink(fake, f"{slot:02X}", 1)], _data(_bits(slot)))
    blocks = {fake: block}
    with deadline():
        with pytest.raises(HAMTError, match="loop") as info:
            list(hamt.iter_entries(fake, blocks.__getitem__))
        assert str(fake) in str(info.value)
        with pytest.raises(HAMTError, match="loop"):
            hamt.lookup(fake, name, blocks.__getitem__)


def _chain(name: str, levels: int) -> tuple[CID, dict[CID, bytes]]:
    """Shards nested ``levels`` deep along ``name``'s hash path, honest CIDs, the entry in the last one."""
    h = hamt.name_hash(name)

    def slot(depth: int) -> int:
        return (h >> (64 - 8 * ((depth % 8) + 1))) & 0xFF  # past 64 bits, reuse them: no valid HAMT gets there

    blocks: dict[CID, bytes] = {}
    cid, block = _block([_leaf(f"{slot(levels - 1):02X}{name}")], _data(_bits(slot(levels - 1))))
    blocks[cid] = block
    for depth in range(levels - 2, -1, -1):
        cid, block = _block([PBLink(cid, f"{slot(depth):02X}", 1)], _data(_bits(slot(depth))))
        blocks[cid] = block
    return cid, blocks


def test_deeper_than_any_valid_hamt_is_refused() -> None:
    name = "deep"
    root, blocks = _chain(name, 8)  # 8 levels: the most fanout 256 allows, still valid
    assert [e.name for e in hamt.iter_entries(root, blocks.__getitem__)] == [name]
    assert hamt.lookup(root, name, blocks.__getitem__) is not None
    root, blocks = _chain(name, 9)
    with deadline():
        with pytest.raises(HAMTError, match="deeper than any valid fanout-256 HAMT"):
            list(hamt.iter_entries(root, blocks.__getitem__))
        with pytest.raises(HAMTError, match="deeper than any valid"):
            hamt.lookup(root, name, blocks.__getitem__)
    with pytest.raises(HAMTError, match="depth 8 is deeper"):
        hamt.lookup_step(root, blocks[root], name, depth=8, fanout=256)


def test_entry_outside_its_hash_slot_is_refused() -> None:
    """A listing must not show what a lookup can never find."""
    name = "misplaced"
    slot = (hamt.slot_index(hamt.name_hash(name), 0) + 1) % 256
    cid, block = _block([_leaf(f"{slot:02X}{name}")], _data(_bits(slot)))
    with pytest.raises(HAMTError, match="not in the slot its name hashes to"):
        list(hamt.iter_entries(cid, {cid: block}.__getitem__))
    assert isinstance(hamt.lookup_step(cid, block, name), Absent)


def test_sub_shard_with_another_fanout_is_refused() -> None:
    inner_cid, inner = _block([_leaf("1a")], _data(_bits(1), fanout=16))
    outer_cid, outer = _block([PBLink(inner_cid, "05", 1)], _data(_bits(5)))
    blocks = {inner_cid: inner, outer_cid: outer}
    with pytest.raises(HAMTError, match="differs from the HAMT root's 256"):
        list(hamt.iter_entries(outer_cid, blocks.__getitem__))


def test_lookup_steps_report_absent_and_found() -> None:
    entries = _entries(1)
    blocks: dict[CID, bytes] = {}
    root = hamt.build_shard(entries, blocks.__setitem__)
    step = hamt.lookup_step(root.cid, blocks[root.cid], "e-0-ñ")
    assert isinstance(step, Found) and step.entry.cid == entries["e-0-ñ"].cid
    assert isinstance(hamt.lookup_step(root.cid, blocks[root.cid], "other"), Absent)


def test_get_block_errors_propagate() -> None:
    """A missing block is the caller's error (KeyError here), not swallowed."""
    root, blocks = _chain("x", 3)
    child = next(link.cid for link in decode_node(blocks[root]).links)
    del blocks[child]
    get: Callable[[CID], bytes] = blocks.__getitem__
    with pytest.raises(KeyError):
        list(hamt.iter_entries(root, get))
