"""UnixFS DAGs built by hand for tests: kubo's default shape (CIDv0, dag-pb leaves), trickle-free
balanced trees of any leaf kind, and CAR files holding them.

``ipfs add`` without flags makes CIDv0 DAGs whose leaves are dag-pb nodes with the bytes in their
UnixFS ``Data``; our importer makes only raw leaves, so tests of reading, exporting and fetching
such content build it here (tests/integration/test_kubo.py checks the same paths against a real kubo).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from node.storage.car import write_block, write_header
from node.storage.cid import CID, DAG_PB, RAW
from node.storage.dagpb import PBLink, PBNode, encode_node
from node.storage.unixfs import NodeType, UnixFSData

LINKS_PER_NODE = 174


def v0(block: bytes) -> CID:
    return CID(0, DAG_PB, b"\x12\x20" + hashlib.sha256(block).digest())


def file_dag(data: bytes, chunk: int = 262144, dag_pb_leaves: bool = True) -> tuple[CID, list[tuple[CID, bytes]]]:
    """A balanced file DAG over ``data``: with ``dag_pb_leaves`` kubo's default (CIDv0 throughout),
    else CIDv1 raw leaves. Returns the root and every block, parents after children."""
    blocks: list[tuple[CID, bytes]] = []
    level: list[tuple[CID, int, int]] = []  # cid, tsize, content size
    for start in range(0, max(len(data), 1), chunk):
        piece = data[start : start + chunk]
        if dag_pb_leaves:
            block = encode_node(PBNode((), UnixFSData(NodeType.FILE, data=piece, filesize=len(piece)).encode()))
            cid = v0(block)
        else:
            block, cid = piece, CID.for_block(RAW, piece)
        blocks.append((cid, block))
        level.append((cid, len(block), len(piece)))
    while len(level) > 1:
        parents = []
        for first in range(0, len(level), LINKS_PER_NODE):
            group = level[first : first + LINKS_PER_NODE]
            unixfs = UnixFSData(NodeType.FILE, filesize=sum(g[2] for g in group), blocksizes=tuple(g[2] for g in group))
            block = encode_node(PBNode(tuple(PBLink(c, "", t) for c, t, _ in group), unixfs.encode()))
            cid = v0(block) if dag_pb_leaves else CID.for_block(DAG_PB, block)
            blocks.append((cid, block))
            parents.append((cid, len(block) + sum(g[1] for g in group), sum(g[2] for g in group)))
        level = parents
    return level[0][0], blocks


def write_car(path: Path, root: CID, blocks: list[tuple[CID, bytes]]) -> None:
    out = io.BytesIO()
    write_header(out, [root])
    for cid, block in blocks:
        write_block(out, cid, block)
    path.write_bytes(out.getvalue())
