"""Writes ``viewer_clips.json``: file DAGs and the clip each viewer must build from them (or refuse).

Both clip builders read it, the Python one (``node/swarm/viewers/clip.py``, in
``tests/fast/test_viewer_contract.py``) and the browser's (``static/player/clip.js``,
in ``tests/js/clip.test.mjs``), so they accept the same file nodes and cut the
same pieces. Run it again after changing a case: ``python tests/vectors/make_viewer_clips.py``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from node.storage.cid import CID, DAG_PB, RAW
from node.storage.dagpb import PBLink, PBNode, encode_node
from node.storage.unixfs import NodeType, UnixFSData

OUT = Path(__file__).with_name("viewer_clips.json")


def raw(data: bytes) -> tuple[CID, bytes]:
    return CID.for_block(RAW, data), data


def node(kind: NodeType, data: bytes | None, children: list[tuple[CID, int]], *, v0: bool = False,
         filesize: int | None = None, blocksizes: list[int] | None = None) -> tuple[CID, bytes]:  # fmt: skip
    sizes = [size for _, size in children] if blocksizes is None else blocksizes
    if filesize is None and kind == NodeType.FILE:
        filesize = len(data or b"") + sum(sizes)
    unixfs = UnixFSData(kind, data=data, filesize=filesize, blocksizes=tuple(sizes)).encode()
    block = encode_node(PBNode(tuple(PBLink(cid, None, size) for cid, size in children), unixfs))
    if v0:
        return CID(0, DAG_PB, b"\x12\x20" + hashlib.sha256(block).digest()), block
    return CID.for_block(DAG_PB, block), block


def case(name: str, root: tuple[CID, bytes], *more: tuple[CID, bytes], expect: dict[str, Any]) -> dict[str, Any]:
    blocks = {str(cid): block.hex() for cid, block in (root, *more)}
    return {"name": name, "root": str(root[0]), "blocks": blocks, **expect}


def pieces(*entries: tuple[tuple[CID, bytes], int, int]) -> list[dict[str, Any]]:
    """(block, offset, piece bytes) -> the expected piece."""
    return [{"cid": str(cid), "offset": offset, "block_bytes": size} for (cid, _), offset, size in entries]


def main() -> None:
    cases = []
    single = raw(b"hello")
    cases.append(case("a one-block raw file", single,
                      expect={"size": 5, "pieces": pieces((single, 0, 5)), "swarm": True}))  # fmt: skip
    a, b = raw(b"abc"), raw(b"de")
    root = node(NodeType.FILE, None, [(a[0], 3), (b[0], 2)])
    cases.append(case("raw leaves under a dag-pb root", root, a, b,
                      expect={"size": 5, "pieces": pieces((a, 0, 3), (b, 3, 2)), "swarm": True}))  # fmt: skip
    leaf1 = node(NodeType.FILE, b"abcd", [], v0=True)
    leaf2 = node(NodeType.FILE, b"ef", [], v0=True)
    root = node(NodeType.FILE, None, [(leaf1[0], 4), (leaf2[0], 2)], v0=True)
    cases.append(case("kubo's default: CIDv0 with dag-pb leaves, a piece being the whole leaf block", root, leaf1,
                      leaf2, expect={"size": 6, "pieces": pieces((leaf1, 0, len(leaf1[1])), (leaf2, 4, len(leaf2[1]))),
                                     "swarm": True}))  # fmt: skip
    child = raw(b"cde")
    root = node(NodeType.FILE, b"ab", [(child[0], 3)])
    cases.append(case("a node with bytes of its own and links: its own bytes come first", root, child,
                      expect={"size": 5, "pieces": pieces((root, 0, len(root[1])), (child, 2, 3)),
                              "swarm": True}))  # fmt: skip
    empty_child = raw(b"")
    root = node(NodeType.FILE, None, [(a[0], 3), (empty_child[0], 0)])
    cases.append(case("a child with no bytes is no piece", root, a,
                      expect={"size": 3, "pieces": pieces((a, 0, 3)), "swarm": True}))  # fmt: skip
    big = raw(b"not fetched: the parent says its size")
    root = node(NodeType.FILE, None, [(big[0], 2 * 1024 * 1024 + 1)])
    cases.append(case("a piece over max_piece_bytes: a file, but no swarm", root,
                      expect={"size": 2 * 1024 * 1024 + 1, "pieces": pieces((big, 0, 2 * 1024 * 1024 + 1)),
                              "swarm": False}))  # fmt: skip
    root = node(NodeType.FILE, None, [])
    cases.append(case("an empty file: no pieces, no swarm", root, expect={"size": 0, "pieces": [], "swarm": False}))
    root = node(NodeType.FILE, None, [(a[0], 3)], filesize=4)
    cases.append(case("a filesize that disagrees with the blocksizes", root, a, expect={"refused": True}))
    root = node(NodeType.FILE, None, [(a[0], 3), (b[0], 2)], blocksizes=[5])
    cases.append(case("fewer blocksizes than links", root, a, b, expect={"refused": True}))
    short = node(NodeType.FILE, b"abc", [])
    root = node(NodeType.FILE, None, [(short[0], 4)])
    cases.append(case("a child holding other than its parent says", root, short, expect={"refused": True}))
    root = node(NodeType.DIRECTORY, None, [])
    cases.append(case("a directory", root, expect={"refused": True}))
    OUT.write_text(json.dumps({"about": __doc__.split("\n\n")[0], "cases": cases}, indent=1) + "\n")


if __name__ == "__main__":
    main()
