"""The dag-pb codec: PBNode and PBLink, in the canonical byte form of the IPLD spec.

Encoding order is Links (field 2) before Data (field 1), and a link writes
Hash, Name, Tsize in that order; this is what kubo and the JavaScript
importer produce, so equal nodes give equal bytes and equal CIDs.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidRequest
from .cid import CID, DAG_PB, CIDError
from .protobuf import ProtobufError, bytes_field, read_fields, varint_field


class DagPBError(InvalidRequest, ValueError):
    """Bytes that are not a valid dag-pb node: the DAG is wrong, not the request (422, as ``UnixFSError``)."""

    status = 422


@dataclass(frozen=True, slots=True)
class PBLink:
    cid: CID
    name: str | None
    tsize: int | None


@dataclass(frozen=True, slots=True)
class PBNode:
    links: tuple[PBLink, ...]
    data: bytes | None


def encode_link(link: PBLink) -> bytes:
    out = bytes_field(1, bytes(link.cid))
    if link.name is not None:
        out += bytes_field(2, link.name.encode("utf-8"))
    if link.tsize is not None:
        out += varint_field(3, link.tsize)
    return out


def encode_node(node: PBNode) -> bytes:
    parts = [bytes_field(2, encode_link(link)) for link in node.links]
    if node.data is not None:
        parts.append(bytes_field(1, node.data))
    return b"".join(parts)


def _read_fields(buf: bytes | memoryview) -> list[tuple[int, int, int | memoryview]]:
    try:
        return read_fields(buf)
    except ProtobufError as exc:
        raise DagPBError(str(exc)) from None


def decode_node(buf: bytes | memoryview) -> PBNode:
    links: list[PBLink] = []
    data: bytes | None = None
    for number, wire_type, value in _read_fields(buf):
        if number == 2 and isinstance(value, memoryview):
            if data is not None:
                raise DagPBError("links must come before data")
            links.append(_decode_link(value))
        elif number == 1 and isinstance(value, memoryview):
            if data is not None:
                raise DagPBError("duplicate data field")
            data = bytes(value)
        else:
            raise DagPBError(f"unexpected PBNode field {number} (wire type {wire_type})")
    return PBNode(tuple(links), data)


def _decode_link(buf: memoryview) -> PBLink:
    cid: CID | None = None
    name: str | None = None
    tsize: int | None = None
    for number, _wire_type, value in _read_fields(buf):
        if number == 1 and isinstance(value, memoryview):
            try:
                cid = CID.from_bytes(bytes(value))
            except CIDError as exc:
                raise DagPBError(f"bad link hash: {exc}") from None
        elif number == 2 and isinstance(value, memoryview):
            try:
                name = bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                raise DagPBError("link name is not UTF-8") from None
        elif number == 3 and isinstance(value, int):
            tsize = value
        else:
            raise DagPBError(f"unexpected PBLink field {number}")
    if cid is None:
        raise DagPBError("link without a hash")
    return PBLink(cid, name, tsize)


def links_of(cid: CID, block: bytes | memoryview) -> list[CID]:
    """What a block links to, each CID as its link names it: nothing unless the block is dag-pb.
    Raises ``DagPBError`` for a dag-pb block that does not decode."""
    if cid.codec != DAG_PB:
        return []
    return [link.cid for link in decode_node(block).links]
