"""Streaming CARv1 reader and writer, optionally zstd-compressed (``.car.zst``).

A CARv1 file (https://ipld.io/specs/transport/car/carv1/) is::

    varint(len(H)) H    varint(len(C1) + len(D1)) C1 D1    varint(...) C2 D2 ...

where ``H`` is a DAG-CBOR map ``{"roots": [CID, ...], "version": 1}`` and every
following section is one block: its binary CID ``Cn`` immediately followed by
its bytes ``Dn``. Varints are multiformats unsigned varints (LEB128, at most 9
bytes, minimally encoded).

Nothing here holds more than one block (plus the header) in memory, so CARs of
any size stream through. Malformed input of any kind raises :class:`CarError`
naming the problem and the byte offset (in the uncompressed CAR stream) where
it was found. Reading does not check block hashes; :func:`iter_verified` does.

The DAG-CBOR codec below is deliberately minimal: it encodes exactly the CAR
header and decodes the subset of DAG-CBOR a header can reasonably contain.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from types import TracebackType
from typing import IO, BinaryIO, Protocol, cast

import zstandard

from ..errors import InvalidRequest
from .cid import CID, MAX_IDENTITY_DIGEST, CIDError, encode_varint
from .files import fsync_dir

__all__ = [
    "DEFAULT_MAX_BLOCK_SIZE",
    "DEFAULT_MAX_HEADER_SIZE",
    "ZSTD_MAGIC",
    "ByteSource",
    "CarError",
    "CarWriter",
    "encode_header",
    "iter_verified",
    "open_car",
    "read_car",
    "write_block",
    "write_header",
]

DEFAULT_MAX_BLOCK_SIZE = 2 * 1024 * 1024
# A one-root header is 59 bytes; this bounds what a hostile length prefix can
# make us allocate while still allowing tens of thousands of roots.
DEFAULT_MAX_HEADER_SIZE = 1024 * 1024
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

# Longest binary CID cid.py accepts: version varint (1) + codec varint (<= 9)
# + multihash code (1) + digest-length varint (<= 2) + identity digest.
_MAX_CID_BYTES = 1 + 9 + 1 + 2 + MAX_IDENTITY_DIGEST
_MAX_VARINT_BYTES = 9
_CBOR_MAX_DEPTH = 32
_CID_TAG = 42
# A CARv2 file starts with an 11-byte pragma, varint(10) + {"version": 2},
# which parses as a CARv1 header of version 2: that is how it is recognised.
_CARV2_HINT = (
    "CARv2 is not supported; convert it to CARv1 first "
    "(e.g. go-car's `car get-dag --version 1`, or `ipfs dag import` then `ipfs dag export`)"
)


class CarError(InvalidRequest, ValueError):
    """A CAR stream is malformed, truncated, over a size limit or corrupt."""


class ByteSource(Protocol):
    """Anything with a blocking ``read(n)`` returning at most ``n`` bytes (``b""`` at EOF)."""

    def read(self, size: int, /) -> bytes: ...


# --------------------------------------------------------------------------
# Minimal DAG-CBOR for the header
# --------------------------------------------------------------------------


def _cbor_head(major: int, value: int) -> bytes:
    """The shortest CBOR initial byte(s) for ``major`` with argument ``value``."""
    if value < 24:
        return bytes([(major << 5) | value])
    if value < 1 << 8:
        return bytes([(major << 5) | 24, value])
    if value < 1 << 16:
        return bytes([(major << 5) | 25]) + value.to_bytes(2, "big")
    if value < 1 << 32:
        return bytes([(major << 5) | 26]) + value.to_bytes(4, "big")
    return bytes([(major << 5) | 27]) + value.to_bytes(8, "big")


def _cbor_text(text: str) -> bytes:
    raw = text.encode("utf-8")
    return _cbor_head(3, len(raw)) + raw


def _cbor_cid(cid: CID) -> bytes:
    # DAG-CBOR link: tag 42 over a byte string of 0x00 (identity multibase) + binary CID.
    payload = b"\x00" + bytes(cid)
    return _cbor_head(6, _CID_TAG) + _cbor_head(2, len(payload)) + payload


def encode_header(roots: list[CID]) -> bytes:
    """The DAG-CBOR header block (without its length prefix) for ``roots``.

    Keys are in DAG-CBOR order (shorter key first, then bytewise), so
    "roots" precedes "version", as go-car and @ipld/car write it.
    """
    parts = [_cbor_head(5, 2), _cbor_text("roots"), _cbor_head(4, len(roots))]
    parts.extend(_cbor_cid(cid) for cid in roots)
    parts += [_cbor_text("version"), _cbor_head(0, 1)]
    return b"".join(parts)


class _CborDecoder:
    """Decode one DAG-CBOR item from ``buf``; offsets in errors are absolute (``base`` + pos)."""

    def __init__(self, buf: bytes, base: int) -> None:
        self.buf = buf
        self.base = base
        self.pos = 0

    def fail(self, what: str, at: int | None = None) -> CarError:
        where = self.base + (self.pos if at is None else at)
        return CarError(f"bad CAR header: {what} at byte {where}")

    def _take(self, n: int) -> bytes:
        if n > len(self.buf) - self.pos:
            raise self.fail(f"CBOR item needs {n} more bytes but the header ends")
        chunk = self.buf[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def _argument(self, info: int, start: int) -> int:
        if info < 24:
            return info
        if info > 27:
            # 28-30 are reserved; 31 is indefinite length, which DAG-CBOR forbids.
            raise self.fail(f"unsupported CBOR additional info {info}", start)
        size = 1 << (info - 24)
        value = int.from_bytes(self._take(size), "big")
        if value < (24 if size == 1 else 1 << (4 * size)):
            raise self.fail("non-minimal CBOR integer encoding", start)
        return value

    def decode(self, depth: int = 0) -> object:
        if depth > _CBOR_MAX_DEPTH:
            raise self.fail("CBOR nested too deeply")
        start = self.pos
        initial = self._take(1)[0]
        major, info = initial >> 5, initial & 0x1F
        if major == 7:
            return self._simple(info, start)
        value = self._argument(info, start)
        if major == 0:
            return value
        if major == 1:
            return -1 - value
        if major == 2:
            return self._take(value)
        if major == 3:
            try:
                return self._take(value).decode("utf-8")
            except UnicodeDecodeError:
                raise self.fail("CBOR text string is not UTF-8", start) from None
        if major == 4:
            # Every item takes at least one byte: refuse counts the header cannot hold.
            if value > len(self.buf) - self.pos:
                raise self.fail(f"CBOR array of {value} items is longer than the header", start)
            return [self.decode(depth + 1) for _ in range(value)]
        if major == 5:
            if value > (len(self.buf) - self.pos) // 2:
                raise self.fail(f"CBOR map of {value} entries is longer than the header", start)
            result: dict[str, object] = {}
            for _ in range(value):
                key_at = self.pos
                key = self.decode(depth + 1)
                if not isinstance(key, str):
                    raise self.fail("CBOR map key is not a text string", key_at)
                if key in result:
                    raise self.fail(f"duplicate CBOR map key {key!r}", key_at)
                result[key] = self.decode(depth + 1)
            return result
        # major == 6: tags. DAG-CBOR allows only tag 42 (a CID).
        if value != _CID_TAG:
            raise self.fail(f"CBOR tag {value} is not allowed in DAG-CBOR (only 42)", start)
        payload_at = self.pos
        payload = self.decode(depth + 1)
        if not isinstance(payload, bytes) or not payload.startswith(b"\x00"):
            raise self.fail("CID (tag 42) is not a byte string starting with 0x00", payload_at)
        try:
            cid = CID.from_bytes(payload[1:])
        except CIDError as exc:
            raise self.fail(f"invalid CID ({exc})", payload_at) from None
        if bytes(cid) != payload[1:]:
            raise self.fail("CID is not canonically encoded", payload_at)
        return cid

    def _simple(self, info: int, start: int) -> object:
        if info == 20:
            return False
        if info == 21:
            return True
        if info == 22:
            return None
        if info == 27:
            return struct.unpack(">d", self._take(8))[0]
        raise self.fail(f"CBOR simple/float value {info} is not allowed in DAG-CBOR", start)


def _decode_header(body: bytes, base: int) -> list[CID]:
    decoder = _CborDecoder(body, base)
    header = decoder.decode()
    if decoder.pos != len(body):
        raise decoder.fail(f"{len(body) - decoder.pos} trailing bytes after the CBOR map")
    if not isinstance(header, dict):
        raise CarError(f"bad CAR header: not a CBOR map at byte {base}")
    version = header.get("version")
    if version is None:
        raise CarError(f"bad CAR header: no version at byte {base}")
    if type(version) is not int:
        raise CarError(f"bad CAR header: version {version!r} is not an integer at byte {base}")
    if version == 2:
        raise CarError(_CARV2_HINT)
    if version != 1:
        raise CarError(f"unsupported CAR version {version} in header at byte {base}")
    roots = header.get("roots", [])
    if not isinstance(roots, list):
        raise CarError(f"bad CAR header: roots is not a list at byte {base}")
    for i, root in enumerate(roots):
        if not isinstance(root, CID):
            raise CarError(f"bad CAR header: root {i} is not a CID at byte {base}")
    return roots


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------


def _write_all(out: BinaryIO, data: bytes | memoryview) -> None:
    """Write all of ``data``, continuing after short writes (raw, unbuffered streams)."""
    view = memoryview(data).cast("B")
    while view:
        written = out.write(view)
        if written is None:  # a non-blocking raw stream that would block
            raise BlockingIOError("CAR output stream would block")
        if written >= len(view):
            return
        view = view[written:]


def write_header(out: BinaryIO, roots: list[CID]) -> int:
    """Write the length-prefixed CARv1 header for ``roots``; return bytes written."""
    body = encode_header(roots)
    blob = encode_varint(len(body)) + body
    _write_all(out, blob)
    return len(blob)


def write_block(out: BinaryIO, cid: CID, data: bytes | memoryview) -> int:
    """Write one block section (varint length, CID, data); return bytes written.

    The data is not hashed or copied; callers vouch that it matches ``cid``.
    """
    raw_cid = bytes(cid)
    size = memoryview(data).nbytes
    prefix = encode_varint(len(raw_cid) + size) + raw_cid
    _write_all(out, prefix)
    if size:
        _write_all(out, data)
    return len(prefix) + size


class CarWriter:
    """Write a CARv1, optionally zstd-compressed, as a context manager.

    Given a path, the CAR is written to ``PATH.tmp`` and only renamed over
    ``PATH`` (after fsync) when the writer closes without an exception; on an
    exception, or :meth:`abort`, the temp file is removed and ``PATH`` is left
    untouched. Compression is used when ``compress`` is true or, when it is
    left as ``None``, when the path ends in ``.zst``.

    Given a binary stream, the CAR is written to it directly (compressed only
    if ``compress=True``) and the stream is flushed but never closed; no
    atomicity is possible there, so an aborted write leaves a partial CAR.
    """

    def __init__(
        self,
        target: str | os.PathLike[str] | BinaryIO,
        roots: list[CID],
        *,
        compress: bool | None = None,
        level: int = 3,
    ) -> None:
        self.path: str | None = None
        self.blocks = 0
        self.bytes_written = 0  # uncompressed CAR bytes
        self._closed = False
        self._file: BinaryIO | None = None  # our temp file, when writing to a path
        self._zstd: zstandard.ZstdCompressionWriter | None = None
        if isinstance(target, (str, os.PathLike)):
            self.path = os.fspath(target)
            self._tmp_path = self.path + ".tmp"
            use_zstd = self.path.endswith(".zst") if compress is None else compress
            self._file = open(self._tmp_path, "wb")  # noqa: SIM115 - closed by close()/abort()
            sink: BinaryIO = self._file
        else:
            use_zstd = bool(compress)
            sink = target
        self._sink = sink
        try:
            if use_zstd:
                self._zstd = zstandard.ZstdCompressor(level=level, write_checksum=True).stream_writer(
                    sink, closefd=False
                )
            self.bytes_written += write_header(self._out, roots)
        except BaseException:
            self.abort()
            raise

    @property
    def _out(self) -> BinaryIO:
        return self._zstd if self._zstd is not None else self._sink

    def add(self, cid: CID, data: bytes | memoryview) -> int:
        """Append one block; return the (uncompressed) bytes its section took."""
        if self._closed:
            raise ValueError("CarWriter is closed")
        written = write_block(self._out, cid, data)
        self.blocks += 1
        self.bytes_written += written
        return written

    def close(self) -> None:
        """Finish the CAR: end the zstd frame, flush, and (for a path) fsync and rename."""
        if self._closed:
            return
        try:
            if self._zstd is not None:
                # Ends the frame. (close() would too, but after an explicit
                # flush it appends a second, empty frame.)
                self._zstd.flush(zstandard.FLUSH_FRAME)
            flush = getattr(self._sink, "flush", None)
            if flush is not None:
                flush()
            if self._file is not None and self.path is not None:
                os.fsync(self._file.fileno())
                self._file.close()
                os.replace(self._tmp_path, self.path)
                with suppress(OSError):  # best effort: some file systems cannot open or fsync a directory
                    fsync_dir(os.path.dirname(os.path.abspath(self.path)))
        except BaseException:
            self.abort()
            raise
        self._closed = True

    def abort(self) -> None:
        """Give up: close and delete the temp file (path mode). Safe to call repeatedly."""
        if self._closed:
            return
        self._closed = True
        if self._file is not None:
            try:
                self._file.close()
            finally:
                with suppress(FileNotFoundError):
                    os.unlink(self._tmp_path)

    def __enter__(self) -> CarWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------


class _Source:
    """A byte stream with an offset counter and exact-read helpers."""

    def __init__(self, stream: ByteSource) -> None:
        self._stream = stream
        self.offset = 0

    def read_upto(self, n: int) -> bytes:
        """Read ``n`` bytes, or fewer only at end of stream."""
        chunk = self._stream.read(n)
        if chunk is None:
            raise CarError(f"CAR stream is non-blocking and has no data at byte {self.offset}")
        if len(chunk) >= n or not chunk:
            self.offset += len(chunk)
            return bytes(chunk)
        parts = bytearray(chunk)
        while len(parts) < n:
            chunk = self._stream.read(n - len(parts))
            if not chunk:
                break
            parts += chunk
        self.offset += len(parts)
        return bytes(parts)

    def read_varint(self, what: str) -> int | None:
        """Read an unsigned varint; ``None`` if the stream ends cleanly before it."""
        start = self.offset
        value = 0
        for i in range(_MAX_VARINT_BYTES):
            byte = self.read_upto(1)
            if not byte:
                if i == 0:
                    return None
                raise CarError(f"truncated CAR: {what} varint at byte {start} is cut off")
            b = byte[0]
            value |= (b & 0x7F) << (7 * i)
            if b < 0x80:
                if b == 0 and i > 0:
                    raise CarError(f"bad CAR: {what} varint at byte {start} is not minimally encoded")
                return value
        raise CarError(f"bad CAR: {what} varint at byte {start} is longer than 9 bytes")


def read_car(
    stream: ByteSource,
    max_block_size: int = DEFAULT_MAX_BLOCK_SIZE,
    *,
    max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
) -> tuple[list[CID], Iterator[tuple[CID, bytes]]]:
    """Parse a CARv1 header now; return its roots and a lazy iterator of blocks.

    The iterator yields ``(cid, data)`` per section, reading one section at a
    time; it raises :class:`CarError` on a malformed or truncated section or a
    block larger than ``max_block_size``. Hashes are not checked here (see
    :func:`iter_verified`). The stream must stay open while iterating.
    """
    src = _Source(stream)
    length = src.read_varint("header length")
    if length is None:
        raise CarError("truncated CAR: the stream is empty (no header) at byte 0")
    if length == 0:
        raise CarError("bad CAR: header length is 0 at byte 0")
    if length > max_header_size:
        raise CarError(f"bad CAR: header length {length} exceeds the {max_header_size}-byte limit at byte 0")
    body_at = src.offset
    body = src.read_upto(length)
    if len(body) < length:
        raise CarError(f"truncated CAR: header of {length} bytes starting at byte {body_at} ends at byte {src.offset}")
    roots = _decode_header(body, body_at)
    return roots, _iter_sections(src, max_block_size)


def _iter_sections(src: _Source, max_block_size: int) -> Iterator[tuple[CID, bytes]]:
    max_section = max_block_size + _MAX_CID_BYTES
    while True:
        start = src.offset
        length = src.read_varint("section length")
        if length is None:
            return
        if length == 0:
            raise CarError(f"bad CAR: section at byte {start} has length 0 (no CID)")
        if length > max_section:
            raise CarError(
                f"bad CAR: section at byte {start} claims {length} bytes, over the limit of "
                f"{max_section} (max block size {max_block_size} + CID)"
            )
        cid_at = src.offset
        # Read just enough to hold any CID, parse it, then check the block size
        # exactly before reading the rest of the section.
        want = min(length, _MAX_CID_BYTES)
        head = src.read_upto(want)
        try:
            cid, cid_end = CID.read(head, 0)
        except CIDError as exc:
            if len(head) < want:
                raise CarError(
                    f"truncated CAR: section at byte {start} ends inside its CID at byte {src.offset}"
                ) from None
            raise CarError(f"bad CAR: invalid CID at byte {cid_at} ({exc})") from None
        if bytes(cid) != head[:cid_end]:
            # cid.py accepts non-minimal varints; the same CID must not have two spellings.
            raise CarError(f"bad CAR: CID at byte {cid_at} is not canonically encoded")
        data_len = length - cid_end
        if data_len > max_block_size:
            raise CarError(
                f"bad CAR: block {cid} at byte {start} is {data_len} bytes, over the {max_block_size}-byte limit"
            )
        rest = src.read_upto(length - len(head)) if length > len(head) else b""
        if len(head) + len(rest) < length:
            raise CarError(f"truncated CAR: block section at byte {start} ends inside a block at byte {src.offset}")
        data = head[cid_end:] + rest if cid_end < len(head) else rest
        yield cid, data


def iter_verified(blocks: Iterable[tuple[CID, bytes]]) -> Iterator[tuple[CID, bytes]]:
    """Pass blocks through, raising CarError at the first whose bytes don't hash to its CID.

    Blocks are numbered from 0 in the order they appear in the CAR.
    """
    for n, (cid, data) in enumerate(blocks):
        if not cid.verifies(data):
            raise CarError(f"block {n} (cid {cid}) does not match its CID")
        yield cid, data


# --------------------------------------------------------------------------
# Files and zstd
# --------------------------------------------------------------------------


class _Prefixed:
    """Bytes already read from a stream (``prefix``) followed by the rest of it."""

    def __init__(self, prefix: bytes, stream: ByteSource) -> None:
        self._prefix = prefix
        self._stream = stream

    def read(self, size: int, /) -> bytes:
        if size < 0:
            chunk, self._prefix = self._prefix, b""
            return chunk + self._stream.read(size)
        if self._prefix:
            chunk, self._prefix = self._prefix[:size], self._prefix[size:]
            return chunk
        return self._stream.read(size)


class _ZstdFrameWalker:
    """Follow zstd frame structure (RFC 8878) in the compressed bytes as they pass.

    python-zstandard's stream reader reports a truncated stream as a clean
    end of data, which could pass a cut-off ``.car.zst`` as a shorter valid
    CAR. Tracking frame and block headers (cheap: one 3-byte header per up to
    128 KiB block) tells us at the end whether the last frame was complete.
    """

    _MAGIC, _SKIP_SIZE, _FHD, _FH_REST, _BLOCK = range(5)

    def __init__(self) -> None:
        self.offset = 0  # compressed bytes seen
        self.error: str | None = None
        self._state = self._MAGIC
        self._need = 4  # header bytes the current state waits for
        self._buf = bytearray()
        self._skip = 0  # payload bytes to pass over before the next header
        self._checksum = False

    def feed(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end and self.error is None:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            take = min(self._need - len(self._buf), end - pos)
            self._buf += data[pos : pos + take]
            pos += take
            if len(self._buf) == self._need:
                at = self.offset + pos - self._need
                header, self._buf = bytes(self._buf), bytearray()
                self._advance(header, at)
        self.offset += end

    def _advance(self, header: bytes, at: int) -> None:
        state = self._state
        if state == self._MAGIC:
            if header == ZSTD_MAGIC:
                self._state, self._need = self._FHD, 1
            elif header[1:] == b"\x2a\x4d\x18" and 0x50 <= header[0] <= 0x5F:
                self._state, self._need = self._SKIP_SIZE, 4
            else:
                self.error = f"not a zstd frame at compressed byte {at}"
        elif state == self._SKIP_SIZE:
            self._skip = int.from_bytes(header, "little")
            self._state, self._need = self._MAGIC, 4
        elif state == self._FHD:
            fhd = header[0]
            if fhd & 0x08:
                self.error = f"reserved bit set in zstd frame header at compressed byte {at}"
                return
            single_segment = bool(fhd & 0x20)
            self._checksum = bool(fhd & 0x04)
            fcs_flag = fhd >> 6
            fcs_size = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
            did_size = (0, 1, 2, 4)[fhd & 0x03]
            rest = (0 if single_segment else 1) + did_size + fcs_size
            if rest:
                self._state, self._need = self._FH_REST, rest
            else:
                self._state, self._need = self._BLOCK, 3
        elif state == self._FH_REST:
            self._state, self._need = self._BLOCK, 3
        elif state == self._BLOCK:
            bh = int.from_bytes(header, "little")
            last, block_type, size = bh & 1, (bh >> 1) & 3, bh >> 3
            if block_type == 3:
                self.error = f"reserved zstd block type at compressed byte {at}"
                return
            self._skip = 1 if block_type == 1 else size  # RLE blocks carry one byte
            if last:
                self._skip += 4 if self._checksum else 0
                self._state, self._need = self._MAGIC, 4

    def finish_problem(self) -> str | None:
        """Why the stream seen so far is not a complete zstd stream, or None."""
        if self.error is not None:
            return self.error
        if self._state != self._MAGIC or self._buf or self._skip:
            return f"zstd stream is truncated (ends inside a frame at compressed byte {self.offset})"
        return None


class _Tee:
    """Read from ``stream`` and show every byte to a frame walker."""

    def __init__(self, stream: ByteSource, walker: _ZstdFrameWalker) -> None:
        self._stream = stream
        self._walker = walker

    def read(self, size: int = -1, /) -> bytes:
        chunk = self._stream.read(size)
        if chunk:
            self._walker.feed(chunk)
        return chunk


class _ZstdSource:
    """Decompressed bytes of a zstd stream; corruption and truncation raise CarError."""

    def __init__(self, compressed: ByteSource) -> None:
        self._walker = _ZstdFrameWalker()
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            cast("IO[bytes]", _Tee(compressed, self._walker)), read_across_frames=True, closefd=False
        )
        self._produced = 0

    def read(self, size: int, /) -> bytes:
        try:
            chunk = self._reader.read(size)
        except zstandard.ZstdError as exc:
            raise CarError(f"corrupt zstd stream after {self._produced} decompressed bytes: {exc}") from None
        if chunk:
            self._produced += len(chunk)
        else:
            problem = self._walker.finish_problem()
            if problem is not None:
                raise CarError(f"{problem}, after {self._produced} decompressed bytes")
        return chunk


@contextmanager
def open_car(
    path: str | os.PathLike[str],
    max_block_size: int = DEFAULT_MAX_BLOCK_SIZE,
    *,
    max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
) -> Iterator[tuple[list[CID], Iterator[tuple[CID, bytes]]]]:
    """Open a CAR file, plain or zstd-compressed (detected by magic bytes, not name).

    Yields ``(roots, blocks)`` as :func:`read_car` returns them; iterate the
    blocks inside the ``with`` block, while the file is open.
    """
    with open(path, "rb") as fh:
        prefix = b""
        while len(prefix) < len(ZSTD_MAGIC):
            chunk = fh.read(len(ZSTD_MAGIC) - len(prefix))
            if not chunk:
                break
            prefix += chunk
        source: ByteSource = _Prefixed(prefix, fh)
        if prefix == ZSTD_MAGIC:
            source = _ZstdSource(source)
        yield read_car(source, max_block_size, max_header_size=max_header_size)
