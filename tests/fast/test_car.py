"""Tests for node.storage.car: CARv1 round trips, exact bytes, and malformed input."""

from __future__ import annotations

import io
import os
import random
import tracemalloc
from pathlib import Path

import pytest
import zstandard

from node.storage.car import (
    CarError,
    CarWriter,
    encode_header,
    iter_verified,
    open_car,
    read_car,
    write_block,
    write_header,
)
from node.storage.cid import CID, encode_varint, sha256_multihash

MiB = 1024 * 1024


def sample_blocks() -> list[tuple[CID, bytes]]:
    """The same few small blocks on every call."""
    rng = random.Random(7)
    raw = [b"", b"hello", b"\x00" * 1000, rng.randbytes(300)]
    pb = [b"\x0a\x02\x08\x01", rng.randbytes(5000)]
    identity = CID(1, 0x55, b"\x00\x03abc")  # an inline block: its bytes are in the CID
    v0_data = b"\x0a\x04\x08\x02\x18\x00"
    v0 = CID(0, 0x70, sha256_multihash(v0_data))  # CIDv0: the bare multihash
    return (
        [(CID.for_block(0x55, d), d) for d in raw]
        + [(CID.for_block(0x70, d), d) for d in pb]
        + [(identity, b"abc"), (v0, v0_data)]
    )


def car_bytes(roots: list[CID], blocks: list[tuple[CID, bytes]]) -> bytes:
    out = io.BytesIO()
    write_header(out, roots)
    for cid, data in blocks:
        write_block(out, cid, data)
    return out.getvalue()


def read_all(data: bytes, **kwargs: int) -> tuple[list[CID], list[tuple[CID, bytes]]]:
    roots, blocks = read_car(io.BytesIO(data), **kwargs)
    return roots, list(blocks)


def read_file(path: Path) -> tuple[list[CID], list[tuple[CID, bytes]]]:
    with open_car(str(path)) as (roots, blocks):
        return roots, list(iter_verified(blocks))


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    ("name", "compress", "zstd_expected"),
    [
        ("out.car", None, False),
        ("out.car.zst", None, True),
        ("misnamed.car", True, True),  # compressed despite the name: detected by magic
    ],
)
def test_round_trip_files(tmp_path: Path, name: str, compress: bool | None, zstd_expected: bool) -> None:
    """Write raw, dag-pb, empty and identity blocks (plus one of exactly 2 MiB) and read them back."""
    blocks = [*sample_blocks(), (CID.for_block(0x55, big := os.urandom(2 * MiB)), big)]
    roots = [blocks[5][0], blocks[7][0], blocks[1][0]]  # dag-pb v1, v0, raw
    path = tmp_path / name
    with CarWriter(path, roots, compress=compress) as writer:
        for cid, data in blocks:
            writer.add(cid, memoryview(data))
    assert writer.blocks == len(blocks)
    assert (path.read_bytes()[:4] == b"\x28\xb5\x2f\xfd") is zstd_expected
    assert not (tmp_path / (name + ".tmp")).exists()
    assert read_file(path) == (roots, blocks)
    if not zstd_expected:
        assert writer.bytes_written == path.stat().st_size == len(car_bytes(roots, blocks))


def test_round_trip_stream_with_empty_roots() -> None:
    """A CarWriter over a caller's stream, with no roots; the stream is left open."""
    buf = io.BytesIO()
    with CarWriter(buf, []) as writer:
        for cid, data in sample_blocks():
            writer.add(cid, data)
    assert not buf.closed
    assert read_all(buf.getvalue()) == ([], sample_blocks())


def test_compressed_stream_round_trip() -> None:
    """compress=True over a stream yields one complete zstd frame that open_car's path would accept."""
    buf = io.BytesIO()
    with CarWriter(buf, [sample_blocks()[1][0]], compress=True) as writer:
        for cid, data in sample_blocks():
            writer.add(cid, data)
    plain = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(buf.getvalue())).read()
    assert plain == car_bytes([sample_blocks()[1][0]], sample_blocks())


def test_header_without_roots_key_is_allowed() -> None:
    """A header map with only {"version": 1} (no roots key) reads as an empty root list."""
    body = bytes.fromhex("a1") + b"\x67version" + b"\x01"
    assert read_all(encode_varint(len(body)) + body) == ([], [])


# ---------------------------------------------------------------- exact bytes


def test_header_bytes_hand_derived() -> None:
    """The header for one root, compared with bytes derived by hand from the CARv1 and DAG-CBOR specs.

    Root: CIDv1 raw (0x55) of the empty block; sha2-256("") is the well-known
    e3b0c442...7852b855, so the binary CID is 01 55 12 20 <digest> (36 bytes).
    DAG-CBOR body:
      a2                      map, 2 entries
      65 726f6f7473           text(5) "roots"   (5 bytes: sorts before "version")
      81                      array, 1 item
      d8 2a                   tag 42 (CID)
      58 25                   bytes(37): 0x00 multibase prefix + 36-byte CID
      00 01 55 12 20 <digest>
      67 76657273696f6e       text(7) "version"
      01                      unsigned 1
    Length: 1 + 6 + 1 + 2 + 2 + 37 + 8 + 1 = 58 = 0x3a, the varint prefix.
    """
    digest = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    expected = bytes.fromhex(
        "3a" + "a2" + "65726f6f7473" + "81" + "d82a" + "5825" + "0001551220" + digest + "6776657273696f6e" + "01"
    )
    root = CID.for_block(0x55, b"")
    out = io.BytesIO()
    assert write_header(out, [root]) == len(expected) == 59
    assert out.getvalue() == expected
    assert read_all(expected) == ([root], [])


# The header and first section of the CARv1 spec's two-root fixture (the same
# bytes js @ipld/car and go-car test against): an interop check beside the
# hand derivation above.
SPEC_FIXTURE_PREFIX = bytes.fromhex(
    "63a265726f6f747382d82a58250001711220f88bc853804cf294fe417e4fa83028689fcdb1b159"
    "2c5102e1474dbc200fab8bd82a5825000171122069ea0740f9807a28f4d932c62e7c1c83be055e"
    "55072c90266ab3e79df63a365b6776657273696f6e01"
    "280155122061be55a8e2f6b4e172338bddf184d6dbee29c98853e0a0485ecee7f27b9af0b461616161"
)


def test_spec_fixture_header_and_first_block() -> None:
    """Our reader parses the spec fixture and our writer reproduces it byte for byte."""
    roots, blocks = read_all(SPEC_FIXTURE_PREFIX)
    assert [r.codec for r in roots] == [0x71, 0x71]
    assert blocks == [(CID.for_block(0x55, b"aaaa"), b"aaaa")]
    assert list(iter_verified(blocks)) == blocks
    assert car_bytes(roots, blocks) == SPEC_FIXTURE_PREFIX
    assert encode_varint(len(encode_header(roots))) + encode_header(roots) == SPEC_FIXTURE_PREFIX[:100]


# ---------------------------------------------------------------- truncation


def _layout() -> tuple[bytes, dict[str, int]]:
    """A CAR whose header and first section both have 2-byte length varints, and where they start."""
    roots = [CID.for_block(0x55, bytes([i])) for i in range(3)]  # header body 140 bytes > 127
    data = os.urandom(500)  # section length 536 > 127
    blocks = [(CID.for_block(0x55, data), data), (CID.for_block(0x70, b"x"), b"x")]
    car = car_bytes(roots, blocks)
    header_len = len(encode_header(roots))
    section = 2 + header_len
    return car, {
        "header_length_varint": 1,
        "header_body": 2 + header_len // 2,
        "section_length_varint": section + 1,
        "cid": section + 2 + 10,
        "block_data": section + 2 + 36 + 250,
        "second_section_data": len(car) - 1,
    }


@pytest.mark.parametrize("where", list(_layout()[1]))
def test_truncated_at_named_points(where: str) -> None:
    """Cut a CAR inside the header length, header, a section length, a CID and block data."""
    car, cuts = _layout()
    with pytest.raises(CarError, match=r"truncated CAR: .* at byte \d+"):
        read_all(car[: cuts[where]])


def test_empty_stream() -> None:
    """Zero bytes of input: no header at all."""
    with pytest.raises(CarError, match="empty"):
        read_all(b"")


def test_every_cut_point_is_caught_or_is_a_section_boundary() -> None:
    """Cut a small CAR at every byte offset: only section boundaries may parse, as a prefix of the blocks."""
    blocks = sample_blocks()[:4]
    car = car_bytes([blocks[0][0]], blocks)
    boundaries = {len(car_bytes([blocks[0][0]], blocks[:n])): n for n in range(len(blocks) + 1)}
    for cut in range(len(car) + 1):
        if cut in boundaries:
            assert read_all(car[:cut])[1] == blocks[: boundaries[cut]]
        else:
            with pytest.raises(CarError):
                read_all(car[:cut])


def test_every_cut_of_a_zst_file_is_caught(tmp_path: Path) -> None:
    """Cut a small .car.zst at every byte offset: every strict prefix must raise CarError."""
    blocks = sample_blocks()[:4]
    full = zstandard.ZstdCompressor(write_checksum=True).compress(car_bytes([blocks[1][0]], blocks))
    path = tmp_path / "cut.car.zst"
    for cut in range(len(full)):
        path.write_bytes(full[:cut])
        with pytest.raises(CarError), open_car(str(path)) as (_roots, it):
            list(it)
    path.write_bytes(full)
    assert read_file(path) == ([blocks[1][0]], blocks)


def test_truncated_zst_file_mid_block(tmp_path: Path) -> None:
    """A .car.zst cut in half (an interrupted download)."""
    path = tmp_path / "a.car.zst"
    with CarWriter(path, []) as writer:
        for _ in range(4):
            data = os.urandom(200_000)
            writer.add(CID.for_block(0x55, data), data)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CarError), open_car(str(path)) as (_roots, blocks):
        list(blocks)


def test_truncated_zstd_frame_at_a_section_boundary(tmp_path: Path) -> None:
    """A second zstd frame cut short where the CAR itself still ends cleanly.

    The first frame holds the header and one block; the second frame (another
    block) is cut mid-frame, so the decompressor yields nothing from it and
    the CAR alone would look complete. The zstd layer must notice.
    """
    car = car_bytes([], sample_blocks()[:2])
    split = len(car_bytes([], sample_blocks()[:1]))
    compressor = zstandard.ZstdCompressor()
    second = compressor.compress(car[split:])
    path = tmp_path / "cut.car.zst"
    path.write_bytes(compressor.compress(car[:split]) + second[: len(second) - 3])
    with pytest.raises(CarError, match="zstd stream is truncated"), open_car(str(path)) as (_roots, blocks):
        list(blocks)


# ---------------------------------------------------------------- size limits


def test_absurd_section_length_is_refused_without_allocating() -> None:
    """A section claiming 1 GiB: refused from the length alone, with no large allocation."""
    car = car_bytes([], []) + encode_varint(1 << 30) + b"\x01\x55\x12\x20" + b"\x00" * 64
    tracemalloc.start()
    try:
        with pytest.raises(CarError, match=r"section at byte 18 claims 1073741824 bytes, over the limit"):
            read_all(car)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MiB


def test_block_over_max_block_size() -> None:
    """A 1001-byte block with max_block_size=1000 (the section itself is within the CID slack)."""
    data = b"z" * 1001
    car = car_bytes([], [(CID.for_block(0x55, data), data)])
    with pytest.raises(CarError, match="1001 bytes, over the 1000-byte limit"):
        read_all(car, max_block_size=1000)
    assert read_all(car, max_block_size=1001)[1] == [(CID.for_block(0x55, data), data)]


def test_absurd_header_length() -> None:
    """A header length prefix of 2**40 bytes."""
    with pytest.raises(CarError, match="header length 1099511627776 exceeds"):
        read_all(encode_varint(1 << 40) + b"\xa2")


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        (b"\x00", "section at byte 18 has length 0"),
        (b"\x80\x00", "not minimally encoded"),
        (b"\xff" * 10, "longer than 9 bytes"),
        (b"\x0a" + b"\x01\x55\x12\x20" + b"\x00" * 6, "invalid CID at byte 19"),
        (b"\x26" + b"\x01\x55\x13\x20" + b"\x00" * 34, "invalid CID"),
        (b"\x27" + b"\x81\x00\x55\x12\x20" + b"\x00" * 34, "invalid CID at byte 19.*not minimally encoded"),
    ],
    ids=[
        "zero-length",
        "non-minimal-varint",
        "ten-byte-varint",
        "section-shorter-than-cid",
        "unknown-hash",
        "non-canonical-cid",
    ],
)
def test_bad_sections(tail: bytes, message: str) -> None:
    """Sections with length 0, a non-minimal or overlong length varint, a length too short for
    its CID, a CID with an unsupported multihash (sha2-512 code with a 32-byte digest), and a CID
    whose version varint is spelled non-minimally (81 00 for 1)."""
    with pytest.raises(CarError, match=message):
        read_all(car_bytes([], []) + tail)


# ---------------------------------------------------------------- headers


def test_carv2_file_is_refused_clearly(tmp_path: Path) -> None:
    """A CARv2 file: the 11-byte pragma (varint 10 + {"version": 2}) then a v2 header."""
    path = tmp_path / "v2.car"
    path.write_bytes(bytes.fromhex("0aa16776657273696f6e02") + bytes(40))
    with pytest.raises(CarError, match=r"CARv2 is not supported; convert"), open_car(str(path)):
        pass


def _header(body_hex: str) -> bytes:
    body = bytes.fromhex(body_hex)
    return encode_varint(len(body)) + body


ROOTS_EMPTY = "65726f6f747380"  # "roots": []
VERSION_KEY = "6776657273696f6e"  # "version"


@pytest.mark.parametrize(
    ("body_hex", "message"),
    [
        ("a2" + ROOTS_EMPTY + VERSION_KEY + "03", "unsupported CAR version 3"),
        ("a2" + ROOTS_EMPTY + VERSION_KEY + "6131", "version '1' is not an integer"),
        ("a2" + ROOTS_EMPTY + VERSION_KEY + "f5", "version True is not an integer"),
        ("a1" + ROOTS_EMPTY, "no version"),
        ("82" + "01" + "01", "not a CBOR map"),
        ("a2" + "65726f6f747301" + VERSION_KEY + "01", "roots is not a list"),
        ("a2" + "65726f6f74738101" + VERSION_KEY + "01", "root 0 is not a CID"),
        ("a2" + "65726f6f747381d82b4100" + VERSION_KEY + "01", "tag 43 is not allowed"),
        ("a2" + "65726f6f747381d82a4101" + VERSION_KEY + "01", "starting with 0x00"),
        ("a2" + "65726f6f747381d82a420001" + VERSION_KEY + "01", "invalid CID"),
        ("a2" + "65726f6f747381d82a5826008100551220" + "00" * 32 + VERSION_KEY + "01", "not minimally encoded"),
        ("a2" + ROOTS_EMPTY + VERSION_KEY + "1801", "non-minimal CBOR integer"),
        ("bf" + ROOTS_EMPTY + VERSION_KEY + "01ff", "additional info 31"),
        ("a2" + ROOTS_EMPTY + VERSION_KEY + "0100", "1 trailing bytes"),
        ("a2" + ROOTS_EMPTY + ROOTS_EMPTY, "duplicate CBOR map key 'roots'"),
        ("a2" + ROOTS_EMPTY + VERSION_KEY, "header ends"),
        ("a2" + ROOTS_EMPTY + "99ffff", "array of 65535 items is longer than the header"),
        ("81" * 40 + "00", "nested too deeply"),
        ("a2" + ROOTS_EMPTY + VERSION_KEY + "f93c00", "simple/float value 25"),
    ],
    ids=[
        "version-3",
        "version-text",
        "version-bool",
        "no-version",
        "array-not-map",
        "roots-int",
        "root-int",
        "wrong-tag",
        "cid-without-00",
        "cid-garbage",
        "cid-non-minimal-version",
        "non-minimal-int",
        "indefinite-map",
        "trailing-byte",
        "duplicate-key",
        "cut-inside-cbor",
        "huge-array-count",
        "deep-nesting",
        "half-float",
    ],
)
def test_bad_headers(body_hex: str, message: str) -> None:
    """Headers with a wrong, missing or mistyped version, non-map, non-list roots, non-CID roots,
    a non-42 tag, a CID without its 0x00 prefix or with a non-minimal version varint,
    non-canonical or indefinite CBOR, trailing or missing bytes, duplicate keys, an impossible
    array count, deep nesting and a half float."""
    with pytest.raises(CarError, match=message):
        read_all(_header(body_hex))


# ---------------------------------------------------------------- zstd corruption


def test_garbage_after_zstd_magic(tmp_path: Path) -> None:
    """A file starting with the zstd magic bytes followed by random garbage."""
    path = tmp_path / "junk.car.zst"
    path.write_bytes(b"\x28\xb5\x2f\xfd" + bytes(range(256)) * 4)
    with pytest.raises(CarError, match="zstd"), open_car(str(path)) as (_roots, blocks):
        list(blocks)


def test_corrupted_zstd_payload(tmp_path: Path) -> None:
    """A valid .car.zst (with frame checksum) with bytes in the middle overwritten."""
    path = tmp_path / "flip.car.zst"
    with CarWriter(path, []) as writer:
        for i in range(20):
            data = bytes([i]) * 50_000 + os.urandom(1000)
            writer.add(CID.for_block(0x55, data), data)
    raw = bytearray(path.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 16] = bytes(b ^ 0xFF for b in raw[mid : mid + 16])
    path.write_bytes(bytes(raw))
    with pytest.raises(CarError), open_car(str(path)) as (_roots, blocks):
        list(iter_verified(blocks))


def test_trailing_garbage_after_zstd_frame(tmp_path: Path) -> None:
    """A complete .car.zst followed by two stray bytes."""
    car = car_bytes([], sample_blocks())
    path = tmp_path / "tail.car.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(car) + b"\x01\x02")
    with pytest.raises(CarError), open_car(str(path)) as (_roots, blocks):
        list(blocks)


def test_plain_file_shorter_than_magic(tmp_path: Path) -> None:
    """A 2-byte file (too short to hold the zstd magic) is read as a plain, truncated CAR."""
    path = tmp_path / "tiny.car"
    path.write_bytes(b"\x3a\xa2")
    with pytest.raises(CarError, match="truncated CAR: header"), open_car(str(path)):
        pass


# ---------------------------------------------------------------- hashes


def test_flipped_block_bytes_caught_by_iter_verified(tmp_path: Path) -> None:
    """A CAR file with one byte of the second block's data flipped on disk."""
    blocks = sample_blocks()
    path = tmp_path / "flip.car"
    with CarWriter(path, [blocks[1][0]]) as writer:
        for cid, data in blocks:
            writer.add(cid, data)
    raw = bytearray(path.read_bytes())
    raw[raw.index(b"hello")] ^= 0x01
    path.write_bytes(bytes(raw))
    with open_car(str(path)) as (_roots, unverified):
        assert len(list(unverified)) == len(blocks)  # framing is intact; only the hash is wrong
    with pytest.raises(CarError, match=rf"block 1 \(cid {blocks[1][0]}\) does not match its CID"):
        read_file(path)


# ---------------------------------------------------------------- writer atomicity


def test_failed_export_leaves_nothing(tmp_path: Path) -> None:
    """An exception raised while writing: neither the temp file nor a new target remains,
    and a previous file at the target path is untouched."""
    path = tmp_path / "out.car.zst"
    path.write_bytes(b"previous")
    with pytest.raises(RuntimeError), CarWriter(path, []) as writer:
        writer.add(*sample_blocks()[1])
        raise RuntimeError("disk on fire")
    assert path.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.car.zst"]
    with pytest.raises(ValueError, match="closed"):
        writer.add(*sample_blocks()[1])


def test_abort_without_context_manager(tmp_path: Path) -> None:
    """abort() on a writer used without `with` removes its temp file; nothing is created."""
    writer = CarWriter(tmp_path / "x.car", [])
    writer.add(*sample_blocks()[1])
    assert (tmp_path / "x.car.tmp").exists()
    writer.abort()
    assert list(tmp_path.iterdir()) == []
