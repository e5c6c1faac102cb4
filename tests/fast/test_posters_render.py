"""Posters without a server: rendering real clips with FFmpeg (PyAV), refusing what is not a decodable video
within the bounds, and keeping a poster exactly as long as its clip in a real store on disk."""

from __future__ import annotations

import io
import os
from fractions import Fraction
from pathlib import Path

import av
import pytest

from conftest import huge_frame_mp4
from node.demo import HEIGHT, WIDTH, make_demo_clip
from node.gateway import posters
from node.gateway.posters import PosterBook, poster_holder, release_orphans, render_poster
from node.storage.importer import import_stream
from node.storage.store import BlockStore, StoreConfig


class Blocks:
    def put(self, cid: object, data: bytes) -> None: ...


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", seconds=3)


def decode(jpeg: bytes) -> av.VideoFrame:
    with av.open(io.BytesIO(jpeg)) as container:
        assert container.streams.video[0].codec_context.name == "mjpeg"
        return next(container.decode(video=0))


def luma(frame: av.VideoFrame, x: int, y: int) -> int:
    gray = frame.reformat(format="gray")
    plane = gray.planes[0]
    return bytes(plane)[y * plane.line_size + x]


def test_a_clip_gives_a_480_px_jpeg_of_its_frame_a_second_in(clip: Path) -> None:
    still = render_poster(str(clip))
    assert still is not None
    frame = decode(still.jpeg)
    assert (frame.width, frame.height) == (still.width, still.height) == (270, 480)  # 360x640 scaled to 480
    # The demo clip's white bar moves 7 rows a frame: at 1 s (frame 30) it starts at row 210 of 640.
    with av.open(str(clip)) as container:
        at_one = next(f for f in container.decode(video=0) if f.time is not None and f.time >= 1.0)
    assert luma(at_one, WIDTH // 2, 210 + 12) > 200
    assert luma(frame, frame.width // 2, round((210 + 12) * 480 / HEIGHT)) > 200
    assert render_poster(str(clip)) == still  # the same bytes each time: one CID per picture


def test_a_clip_shorter_than_two_seconds_uses_its_middle(tmp_path: Path) -> None:
    short = make_demo_clip(tmp_path / "short.mp4", seconds=1)
    still = render_poster(str(short))
    assert still is not None and max(decode(still.jpeg).width, decode(still.jpeg).height) == 480


@pytest.mark.parametrize("rotation, corner", [(90, "bottom-left"), (-90, "top-right"), (180, "bottom-right")])
def test_a_rotated_clip_gives_an_upright_poster(tmp_path: Path, rotation: int, corner: str) -> None:
    """A 320x160 clip whose top-left quarter is white, with a display rotation (counter-clockwise, as
    FFmpeg's display matrix says): the poster shows it turned as a player would, so the white quarter
    moves to the named corner."""
    path = tmp_path / "rotated.mp4"
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 160, "yuv420p"
        stream.set_display_rotation(rotation)
        rows = [(b"\xff" * 160 + b"\x00" * 160) if y < 80 else b"\x00" * 320 for y in range(160)]
        for i in range(20):
            frame = av.VideoFrame(320, 160, "gray")
            frame.planes[0].update(b"".join(row + b"\0" * (frame.planes[0].line_size - 320) for row in rows))
            frame.pts, frame.time_base = i, Fraction(1, 10)
            for packet in stream.encode(frame.reformat(format="yuv420p")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    still = render_poster(str(path))
    assert still is not None
    frame = decode(still.jpeg)
    w, h = frame.width, frame.height
    assert (w, h) == ((160, 320) if rotation in (90, -90) else (320, 160))  # never scaled up
    corners = {"top-left": (w // 4, h // 4), "top-right": (3 * w // 4, h // 4),
               "bottom-left": (w // 4, 3 * h // 4), "bottom-right": (3 * w // 4, 3 * h // 4)}  # fmt: skip
    for name, (x, y) in corners.items():
        assert (luma(frame, x, y) > 200) == (name == corner), name


def png() -> bytes:
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = (1).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0\x80")) + chunk(b"IEND", b"")
    )


def test_what_is_not_a_decodable_video_has_no_poster(clip: Path, tmp_path: Path) -> None:
    """Tried: random bytes, an empty file, text, the clip without its first 40% (no moov), an audio-only
    file, and a real MP4 whose frame is 7000x7000 (refused before decoding: over MAX_PIXELS). (FFmpeg
    reads a PNG as a one-frame video: images are left out by their media type, in the next test.)"""
    data = clip.read_bytes()
    audio = tmp_path / "tone.m4a"
    with av.open(str(audio), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=44100)
        stream.layout = "mono"
        for n in range(20):
            sound = av.AudioFrame(format="s16", layout="mono", samples=1024)
            sound.planes[0].update(bytes(2048))
            sound.sample_rate, sound.pts, sound.time_base = 44100, n * 1024, Fraction(1, 44100)
            for packet in stream.encode(sound):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    huge = huge_frame_mp4(tmp_path / "huge.mp4")
    for source in (io.BytesIO(os.urandom(300_000)), io.BytesIO(b""), io.BytesIO(b"hello\n" * 1000),
                   io.BytesIO(data[len(data) * 2 // 5 :]), str(audio), str(huge)):  # fmt: skip
        assert render_poster(source) is None, source


def test_a_stream_of_undecodable_packets_ends_at_the_packet_bound(clip: Path, tmp_path: Path) -> None:
    """The clip's moov (at the front) with its frames overwritten by noise: every packet fails to decode,
    and the search ends after MAX_PACKETS instead of reading the file to its end."""
    data = bytearray(clip.read_bytes())
    mdat = data.index(b"mdat") + 4
    data[mdat:] = os.urandom(len(data) - mdat)
    assert render_poster(io.BytesIO(bytes(data))) is None


def test_decoding_stops_at_the_frame_bound(clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With frames bounded below the target's (30 at 1 s), the poster is the last frame within the bound."""
    monkeypatch.setattr(posters, "MAX_FRAMES", 5)
    still = render_poster(str(clip))
    assert still is not None
    frame = decode(still.jpeg)
    # The bar starts at row 28 at frame 4 (after the seek to the keyframe at 0), not at row 210 (frame 30).
    assert luma(frame, frame.width // 2, round((28 + 12) * 480 / HEIGHT)) > 200


def test_decoding_stops_at_the_time_bound(clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Out of time before the first frame (the bound set to nothing): no poster, rather than a late one."""
    monkeypatch.setattr(posters, "DECODE_SECONDS", 0.0)
    assert render_poster(str(clip)) is None


def test_a_poster_is_kept_while_its_clip_is(clip: Path, tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "store", StoreConfig(quota=0))
    book = PosterBook(tmp_path / "gateway.sqlite")
    try:
        root = store.add_path(str(clip), 262144, pin=True, name="clip.mp4")
        poster = book.poster(store, root.cid)
        assert poster is not None
        jpeg = b"".join(store.read_range(poster.cid))
        assert poster.cid == import_stream(io.BytesIO(jpeg), Blocks()).cid  # the importer `add` uses
        assert store.holders(poster.cid) == [(poster_holder(root.cid), True)]
        assert poster.cid not in {cid for cid, _, _ in store.pins()}  # a hold, never a pin
        store.gc()
        assert store.has(poster.cid)
        assert book.poster(store, root.cid) == poster  # recorded: not decoded again

        store.pin_rm(root.cid)
        assert release_orphans(store) == 1
        store.gc()
        assert not store.has(poster.cid) and not store.has(root.cid)

        # The clip again: the poster is made again (its record outlived its blocks), the same CID.
        root = store.add_path(str(clip), 262144, pin=True, name="clip.mp4")
        assert book.poster(store, root.cid) == poster
        assert release_orphans(store) == 0
        store.gc()
        assert store.has(poster.cid)

        # Unpinned, then pinned again before any gc: follow() holds the poster again.
        store.pin_rm(root.cid)
        book.follow(store, root.cid)
        assert store.holders(poster.cid) == []
        store.pin_add(root.cid)
        book.follow(store, root.cid)
        assert store.holders(poster.cid) == [(poster_holder(root.cid), True)]
    finally:
        book.close()
        store.close()


def test_a_privately_held_clip_has_a_private_poster(clip: Path, tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "store", StoreConfig(quota=0))
    book = PosterBook(tmp_path / "gateway.sqlite")
    try:
        root = store.add_path(str(clip), 262144, pin=False, name="clip.mp4")
        store.hold("s3:bucket/clip.mp4", root.cid, public=False)
        poster = book.poster(store, root.cid)
        assert poster is not None and store.is_withheld(poster.cid)
        store.hold("s3:bucket/clip.mp4", root.cid, public=True)  # made public-read: so is the poster
        book.follow(store, root.cid)
        assert not store.is_withheld(poster.cid)
    finally:
        book.close()
        store.close()


def test_a_file_that_is_not_video_is_tried_once(tmp_path: Path) -> None:
    """Like a video by its first bytes but not one (an MP4 header over noise): decoded once and recorded
    as having none. Random bytes or an image, whatever their name: not tried, and nothing recorded."""
    store = BlockStore(tmp_path / "store", StoreConfig(quota=0))
    book = PosterBook(tmp_path / "gateway.sqlite")
    try:
        added = {}
        fake = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + os.urandom(100_000)
        for name, data in (("fake.mp4", fake), ("noise.mp4", os.urandom(100_000)), ("image.mp4", png())):
            (tmp_path / name).write_bytes(data)
            added[name] = store.add_path(str(tmp_path / name), 262144, pin=True, name=name).cid
            assert book.poster(store, added[name]) is None
        assert book.recorded(added["fake.mp4"]) == (True, None)
        assert book.recorded(added["noise.mp4"]) == book.recorded(added["image.mp4"]) == (False, None)
        assert store.holds_under("poster:") == []
    finally:
        book.close()
        store.close()
