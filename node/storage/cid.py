"""Content identifiers: CIDv1 (and reading CIDv0), sha2-256 multihashes, multibase.

Only what IPFS-compatible content addressing needs here: the raw (0x55) and
dag-pb (0x70) codecs, the sha2-256 multihash, and the multibase prefixes a
user is likely to paste (base32 ``b``, base58btc ``z`` and bare CIDv0 ``Qm``,
base16 ``f``, base36 ``k``). CIDs print as CIDv1 base32, as kubo does with
``--cid-version=1``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
from dataclasses import dataclass

from ..errors import InvalidRequest

RAW = 0x55
DAG_PB = 0x70
SHA2_256 = 0x12
IDENTITY = 0x00

CODEC_NAMES = {RAW: "raw", DAG_PB: "dag-pb"}
# Inline (identity) multihashes longer than this are refused: they would let
# a "CID" carry arbitrary amounts of data.
MAX_IDENTITY_DIGEST = 128


class CIDError(InvalidRequest, ValueError):
    """A string or byte sequence is not a CID this node understands."""


def encode_varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varint must be non-negative")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(buf: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int]:
    """Return (value, position after the varint); raise ValueError on truncation."""
    value = 0
    shift = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise ValueError("truncated varint")
        if shift > 56:
            raise ValueError("varint longer than 9 bytes")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if byte == 0 and shift:
                raise ValueError("varint is not minimally encoded")
            return value, pos
        shift += 7


_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}
_B36_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def _encode_base_n(data: bytes, alphabet: str) -> str:
    base = len(alphabet)
    zeros = len(data) - len(data.lstrip(b"\0"))
    num = int.from_bytes(data, "big")
    digits = []
    while num:
        num, rem = divmod(num, base)
        digits.append(alphabet[rem])
    return alphabet[0] * zeros + "".join(reversed(digits))


def _decode_base_n(text: str, index: dict[str, int], alphabet: str) -> bytes:
    base = len(alphabet)
    num = 0
    for char in text:
        try:
            num = num * base + index[char]
        except KeyError:
            raise CIDError(f"invalid character {char!r}") from None
    zeros = len(text) - len(text.lstrip(alphabet[0]))
    body = num.to_bytes((num.bit_length() + 7) // 8, "big") if num else b""
    return b"\0" * zeros + body


def base58btc_encode(data: bytes) -> str:
    return _encode_base_n(data, _B58_ALPHABET)


def base58btc_decode(text: str) -> bytes:
    return _decode_base_n(text, _B58_INDEX, _B58_ALPHABET)


def _base32_decode(text: str) -> bytes:
    text = text.upper()
    try:
        return base64.b32decode(text + "=" * (-len(text) % 8))
    except (ValueError, binascii.Error) as exc:
        raise CIDError(f"invalid base32: {exc}") from None


def sha256_multihash(data: bytes | memoryview) -> bytes:
    return b"\x12\x20" + hashlib.sha256(data).digest()


@dataclass(frozen=True, slots=True)
class CID:
    """A content identifier. ``multihash`` is the full multihash (code, length, digest)."""

    version: int
    codec: int
    multihash: bytes

    @classmethod
    def for_block(cls, codec: int, data: bytes | memoryview) -> CID:
        return cls(1, codec, sha256_multihash(data))

    @classmethod
    def from_bytes(cls, raw: bytes) -> CID:
        cid, end = cls.read(raw, 0)
        if end != len(raw):
            raise CIDError("trailing bytes after CID")
        return cid

    @classmethod
    def read(cls, buf: bytes | memoryview, pos: int) -> tuple[CID, int]:
        """Decode a binary CID starting at ``pos``; return it and the end position."""
        try:
            if len(buf) - pos >= 2 and buf[pos] == 0x12 and buf[pos + 1] == 0x20:
                if len(buf) - pos < 34:
                    raise CIDError("truncated CIDv0 multihash")
                return cls(0, DAG_PB, bytes(buf[pos : pos + 34])), pos + 34
            version, p = decode_varint(buf, pos)
            if version != 1:
                raise CIDError(f"unsupported CID version {version}")
            codec, p = decode_varint(buf, p)
            mh_start = p
            hash_code, p = decode_varint(buf, p)
            digest_len, p = decode_varint(buf, p)
        except ValueError as exc:
            if isinstance(exc, CIDError):
                raise
            raise CIDError(f"malformed CID bytes: {exc}") from None
        if hash_code == SHA2_256:
            if digest_len != 32:
                raise CIDError("sha2-256 multihash must have a 32-byte digest")
        elif hash_code == IDENTITY:
            if digest_len > MAX_IDENTITY_DIGEST:
                raise CIDError("identity multihash too long")
        else:
            raise CIDError(f"unsupported multihash code 0x{hash_code:x} (only sha2-256)")
        end = p + digest_len
        if end > len(buf):
            raise CIDError("truncated multihash")
        return cls(1, codec, bytes(buf[mh_start:end])), end

    @classmethod
    def parse(cls, text: str) -> CID:
        """Parse a CID as a user or URL gives it; raise CIDError with the reason."""
        text = text.strip()
        if not text:
            raise CIDError("empty CID")
        if len(text) > 512:
            raise CIDError("CID string too long")
        if len(text) == 46 and text.startswith("Qm"):
            cid = cls.from_bytes(base58btc_decode(text))
            if cid.version != 0:
                raise CIDError("not a CIDv0")
            return cid
        prefix, body = text[0], text[1:]
        if prefix in "bB":
            raw = _base32_decode(body)
        elif prefix == "z":
            raw = base58btc_decode(body)
        elif prefix in "fF":
            try:
                raw = bytes.fromhex(body)
            except ValueError:
                raise CIDError("invalid base16") from None
        elif prefix == "k":
            raw = _decode_base_n(body.lower(), {c: i for i, c in enumerate(_B36_ALPHABET)}, _B36_ALPHABET)
        else:
            raise CIDError(f"unsupported multibase prefix {prefix!r}")
        cid = cls.from_bytes(raw)
        if cid.version == 0:
            raise CIDError("a CIDv0 must be written in bare base58btc")
        return cid

    def __bytes__(self) -> bytes:
        if self.version == 0:
            return self.multihash
        return encode_varint(1) + encode_varint(self.codec) + self.multihash

    def __str__(self) -> str:
        return _base32_text(self)

    def __repr__(self) -> str:
        return f"CID({self.encode()})"

    def encode(self, base: str = "base32") -> str:
        if self.version == 0:
            return base58btc_encode(self.multihash)
        raw = bytes(self)
        if base == "base58btc":
            return "z" + base58btc_encode(raw)
        if base != "base32":
            raise ValueError(f"unsupported multibase {base!r}")
        return "b" + base64.b32encode(raw).decode("ascii").rstrip("=").lower()

    def to_v1(self) -> CID:
        return CID(1, self.codec, self.multihash) if self.version == 0 else self

    @property
    def codec_name(self) -> str:
        return CODEC_NAMES.get(self.codec, f"0x{self.codec:x}")

    @property
    def is_identity(self) -> bool:
        return self.multihash[0] == IDENTITY

    def identity_data(self) -> bytes:
        """The bytes an identity CID inlines (its "block")."""
        _, p = decode_varint(self.multihash, 0)
        _, p = decode_varint(self.multihash, p)
        return self.multihash[p:]

    def verifies(self, data: bytes | memoryview) -> bool:
        """True when ``data`` hashes to this CID's multihash."""
        if self.is_identity:
            return bytes(data) == self.identity_data()
        return self.multihash[2:] == hashlib.sha256(data).digest()


@functools.lru_cache(maxsize=4096)
def _base32_text(cid: CID) -> str:
    """A CID's text, kept for the CIDs in use: the gateway writes each into three headers per request."""
    return cid.encode()
