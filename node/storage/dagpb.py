"""The dag-pb codec: PBNode and PBLink, in the canonical byte form of the IPLD spec.

Encoding order is Links (field 2) before Data (field 1), and a link writes
Hash, Name, Tsize in that order; this is what kubo and the JavaScript
importer produce, so equal nodes give equal bytes and equal CIDs.
"""

from __future__ import annotations

from dataclasses import dataclass

from .cid import CID, CIDError, decode_varint, encode_varint


class DagPBError(ValueError):
    """Bytes that are not a valid dag-pb node."""


@dataclass(frozen=True, slots=True)
class PBLink:
    cid: CID
    name: str | None
    tsize: int | None


@dataclass(frozen=True, slots=True)
class PBNode:
    links: tuple[PBLink, ...]
    data: bytes | None


def _field(number: int, wire_type: int) -> bytes:
    return encode_varint((number << 3) | wire_type)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _field(number, 2) + encode_varint(len(payload)) + payload


def encode_link(link: PBLink) -> bytes:
    out = _length_delimited(1, bytes(link.cid))
    if link.name is not None:
        out += _length_delimited(2, link.name.encode("utf-8"))
    if link.tsize is not None:
        out += _field(3, 0) + encode_varint(link.tsize)
    return out


def encode_node(node: PBNode) -> bytes:
    parts = [_length_delimited(2, encode_link(link)) for link in node.links]
    if node.data is not None:
        parts.append(_length_delimited(1, node.data))
    return b"".join(parts)


def _read_fields(buf: bytes | memoryview) -> list[tuple[int, int, int | memoryview]]:
    """Split a protobuf message into (field, wire type, value) triples."""
    view = memoryview(buf)
    pos = 0
    fields: list[tuple[int, int, int | memoryview]] = []
    try:
        while pos < len(view):
            key, pos = decode_varint(view, pos)
            number, wire_type = key >> 3, key & 7
            if wire_type == 0:
                value, pos = decode_varint(view, pos)
                fields.append((number, wire_type, value))
            elif wire_type == 2:
                length, pos = decode_varint(view, pos)
                if pos + length > len(view):
                    raise DagPBError("length-delimited field runs past the end")
                fields.append((number, wire_type, view[pos : pos + length]))
                pos += length
            else:
                raise DagPBError(f"unsupported protobuf wire type {wire_type}")
    except ValueError as exc:
        if isinstance(exc, DagPBError):
            raise
        raise DagPBError(str(exc)) from None
    return fields


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
