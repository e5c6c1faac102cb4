"""UnixFS v1: the ``Data`` message inside dag-pb nodes that makes them files and directories.

Field order on the wire follows the spec's numbering (Type, Data, filesize,
blocksizes, hashType, fanout, mode, mtime), which is how kubo and the
JavaScript importer write it. ``blocksizes`` is a non-packed repeated field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from ..errors import InvalidRequest
from .cid import CID, decode_varint, encode_varint
from .dagpb import PBLink, PBNode, decode_node, encode_node
from .protobuf import read_fields


class UnixFSError(InvalidRequest, ValueError):
    """A dag-pb node whose UnixFS data is missing or malformed: the DAG itself is wrong, not the request (422)."""

    status = 422


class NodeType(IntEnum):
    RAW = 0
    DIRECTORY = 1
    FILE = 2
    METADATA = 3
    SYMLINK = 4
    HAMT_SHARD = 5


@dataclass(frozen=True, slots=True)
class UnixFSData:
    type: NodeType
    data: bytes | None = None
    filesize: int | None = None
    blocksizes: tuple[int, ...] = field(default=())
    fanout: int | None = None

    def encode(self) -> bytes:
        out = bytearray(b"\x08" + encode_varint(int(self.type)))
        if self.data is not None:
            out += b"\x12" + encode_varint(len(self.data)) + self.data
        if self.filesize is not None:
            out += b"\x18" + encode_varint(self.filesize)
        for size in self.blocksizes:
            out += b"\x20" + encode_varint(size)
        if self.fanout is not None:
            out += b"\x30" + encode_varint(self.fanout)
        return bytes(out)

    @classmethod
    def decode(cls, buf: bytes) -> UnixFSData:
        node_type: int | None = None
        data: bytes | None = None
        filesize: int | None = None
        fanout: int | None = None
        blocksizes: list[int] = []
        try:
            for number, _wire_type, value in read_fields(buf):
                if isinstance(value, int):
                    if number == 1:
                        node_type = value
                    elif number == 3:
                        filesize = value
                    elif number == 4:
                        blocksizes.append(value)
                    elif number == 6:
                        fanout = value
                    # hashType (5) and mode (7) carry nothing we act on.
                elif number == 2:
                    data = bytes(value)
                elif number == 4:  # a packed blocksizes written by a lenient encoder
                    p = 0
                    while p < len(value):
                        size, p = decode_varint(value, p)
                        blocksizes.append(size)
                # mtime (8) is ignored.
        except ValueError as exc:
            raise UnixFSError(str(exc)) from None
        if node_type is None:
            raise UnixFSError("UnixFS data without a Type")
        try:
            kind = NodeType(node_type)
        except ValueError:
            raise UnixFSError(f"unknown UnixFS type {node_type}") from None
        return cls(kind, data, filesize, tuple(blocksizes), fanout)

    def file_size(self) -> int:
        """Bytes of file content this node stands for."""
        if self.filesize is not None:
            return self.filesize
        return len(self.data or b"") + sum(self.blocksizes)


@dataclass(frozen=True, slots=True)
class Child:
    """What a parent needs to know of a child: its CID, total DAG size and content size."""

    cid: CID
    tsize: int
    content_size: int


def file_node(children: list[Child]) -> tuple[bytes, Child]:
    """Encode an internal file node over ``children``; return its bytes and itself as a child."""
    content = sum(c.content_size for c in children)
    data = UnixFSData(NodeType.FILE, filesize=content, blocksizes=tuple(c.content_size for c in children))
    links = tuple(PBLink(c.cid, "", c.tsize) for c in children)
    block = encode_node(PBNode(links, data.encode()))
    cid = CID.for_block(0x70, block)
    return block, Child(cid, len(block) + sum(c.tsize for c in children), content)


def directory_node(entries: dict[str, Child]) -> tuple[bytes, Child]:
    """Encode a flat directory; links are sorted by the UTF-8 bytes of their names."""
    names = sorted(entries, key=lambda n: n.encode("utf-8"))
    links = tuple(PBLink(entries[n].cid, n, entries[n].tsize) for n in names)
    block = encode_node(PBNode(links, UnixFSData(NodeType.DIRECTORY).encode()))
    cid = CID.for_block(0x70, block)
    return block, Child(cid, len(block) + sum(entries[n].tsize for n in names), 0)


def symlink_node(target: str) -> tuple[bytes, Child]:
    block = encode_node(PBNode((), UnixFSData(NodeType.SYMLINK, data=target.encode("utf-8")).encode()))
    cid = CID.for_block(0x70, block)
    return block, Child(cid, len(block), 0)


def decode_unixfs(block: bytes) -> tuple[PBNode, UnixFSData]:
    node = decode_node(block)
    if node.data is None:
        raise UnixFSError("dag-pb node has no UnixFS data")
    return node, UnixFSData.decode(node.data)
