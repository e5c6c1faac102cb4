"""The few protobuf wire-format primitives our codecs need (dag-pb, Bitswap).

Only varint (wire type 0) and length-delimited (wire type 2) fields: every
message we read or write is made of those. Decoding never reads past the
buffer and reports malformed input as ``ProtobufError``.
"""

from __future__ import annotations

from ..errors import InvalidRequest
from .cid import encode_varint


class ProtobufError(InvalidRequest, ValueError):
    """Bytes that are not a well-formed protobuf message (a block's, like ``DagPBError``: 422)."""

    status = 422


def key(number: int, wire_type: int) -> bytes:
    return encode_varint((number << 3) | wire_type)


def varint_field(number: int, value: int) -> bytes:
    return key(number, 0) + encode_varint(value)


def bytes_field(number: int, payload: bytes | memoryview) -> bytes:
    return key(number, 2) + encode_varint(len(payload)) + bytes(payload)


def decode_pb_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """A protobuf varint: up to 10 bytes (negative int32/int64 take all ten)."""
    value = 0
    for shift in range(0, 70, 7):
        if pos >= len(buf):
            raise ProtobufError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value & 0xFFFFFFFFFFFFFFFF, pos
    raise ProtobufError("varint longer than 10 bytes")


def as_int32(value: int) -> int:
    """A decoded varint read as a signed int32 field (negative numbers arrive as 64-bit two's complement)."""
    value &= 0xFFFFFFFFFFFFFFFF
    if value >= 1 << 63:
        value -= 1 << 64
    if not -(1 << 31) <= value < 1 << 31:
        raise ProtobufError("int32 field out of range")
    return value


def read_fields(buf: bytes | memoryview) -> list[tuple[int, int, int | memoryview]]:
    """Split a message into (field number, wire type, value) triples, in order."""
    view = memoryview(buf)
    pos = 0
    fields: list[tuple[int, int, int | memoryview]] = []
    while pos < len(view):
        tag, pos = decode_pb_varint(view, pos)
        number, wire_type = tag >> 3, tag & 7
        if number == 0:
            raise ProtobufError("field number 0")
        if wire_type == 0:
            value, pos = decode_pb_varint(view, pos)
            fields.append((number, wire_type, value))
        elif wire_type == 2:
            length, pos = decode_pb_varint(view, pos)
            if pos + length > len(view):
                raise ProtobufError("length-delimited field runs past the end")
            fields.append((number, wire_type, view[pos : pos + length]))
            pos += length
        else:
            raise ProtobufError(f"unsupported protobuf wire type {wire_type}")
    return fields
