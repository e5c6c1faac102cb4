"""Posters: one still frame of a stored clip, as a small JPEG with a CID of its own, linked from the clip.

A clip's poster is the frame about a second in (or the middle of a shorter
clip), scaled to ``POSTER_LONG_SIDE`` pixels on its long side, upright as the
clip's display rotation says, encoded as JPEG with FFmpeg (PyAV). JPEG rather
than WebP: every fediverse server and browser decodes it, Mastodon's remote
thumbnail is usually one, and FFmpeg's ``mjpeg`` encoder is in every build,
where ``libwebp`` is optional. The JPEG is imported with the same importer an
``add`` uses, so its CID is what ``ipfs add --cid-version=1`` of its bytes
prints.

Decoding hostile or broken files is bounded: frames larger than
``MAX_PIXELS`` are not decoded at all; at most ``MAX_PACKETS`` packets are read
and ``MAX_FRAMES`` frames decoded; FFmpeg's own I/O is interrupted after
``DECODE_SECONDS``. A file without a decodable video frame has no poster, and
nothing about a poster ever fails the add that stored the clip.

Keeping: a poster is kept as strongly as its clip. While the clip is pinned
or held, a hold named ``poster:<clip CID>`` keeps the poster (a hold, not a
pin: posters never appear in ``pin ls``, ``GET /api/v1/pins`` or the feed);
an unpinned clip's poster is unpinned cache like the clip. The storage layer
knows nothing of posters: ``PosterBook.follow`` sets a clip's poster hold to
match the clip after the API pins or unpins it, and ``release_orphans`` drops
the holds of all posters whose clip nothing pins or holds any more (a clip
unpinned by ``medianode pin rm``, an S3 delete or replication), for ``gc`` to
run first. A poster is shared by clips with the same picture: each clip holds
it under its own name.

Which clip has which poster (or that it has none) is recorded in the gateway
database (``gateway.sqlite``), beside the media facts in ``attachment.py``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from ..smalldb import open_small_db
from ..storage.cid import CID, CIDError
from ..storage.errors import StoreError
from ..storage.importer import DEFAULT_CHUNK_SIZE, import_stream
from ..storage.store import BlockStore
from .mediatype import SNIFF_BYTES, sniff

log = logging.getLogger("medianode.gateway")

POSTER_LONG_SIDE = 480  # pixels: sharp in a feed or a timeline card, about 20-40 KB
POSTER_AT = 1.0  # seconds in: past the fade-in or black first frame many clips start with
JPEG_QSCALE = 5  # FFmpeg's -q:v for mjpeg, 2 (best) to 31
MAX_SIDE = 16384  # pixels: what FFmpeg's decoders allow at most anyway
MAX_PIXELS = 36_000_000  # 8K UHD (7680x4320) fits; a larger frame is not decoded for a poster
MAX_PACKETS = 2000  # read while looking for the frame, so a stream of undecodable packets ends
MAX_FRAMES = 300  # decoded after the seek: ten seconds at 30 fps, for clips whose keyframes are far apart
DECODE_SECONDS = 5.0  # wall clock for one poster, FFmpeg's I/O included
HOLD_PREFIX = "poster:"
DB_NAME = "gateway.sqlite"


@dataclass(frozen=True)
class Poster:
    cid: CID
    width: int
    height: int


@dataclass(frozen=True)
class Still:
    """A rendered poster, not stored yet."""

    jpeg: bytes
    width: int
    height: int


def media_db_path(store: BlockStore) -> Path:
    """The gateway database beside a store (``DATA/store`` and ``DATA/gateway.sqlite``), for the parts of
    the gateway that are handed only the store."""
    return store.root.parent / DB_NAME


class StoreFile(io.RawIOBase):
    """A read-only, seekable file over a stored UnixFS file (for FFmpeg)."""

    def __init__(self, store: BlockStore, cid: CID) -> None:
        self._store = store
        self._cid = cid
        self._size = store.file_size(cid)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), max(0, self._size - self._pos))
        data = b"".join(self._store.read_range(self._cid, self._pos, want))
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


# -- rendering (no store) -------------------------------------------------------------------------


def render_poster(source: Any, long_side: int = POSTER_LONG_SIDE, at: float = POSTER_AT) -> Still | None:
    """The poster of the video in ``source`` (a path or a binary file object), or None when it has no
    video stream or no frame decodes within the bounds above. A ``StoreError`` from reading ``source``
    (blocks missing) is raised: that file may decode once it is complete."""
    import av  # here, not at the top: loading FFmpeg costs commands that never decode

    deadline = time.monotonic() + DECODE_SECONDS
    try:
        # timeout: FFmpeg's interrupt callback ends a read or probe that runs past the deadline.
        with av.open(source, mode="r", timeout=DECODE_SECONDS) as container:
            video = next(iter(container.streams.video), None)
            if video is None:
                return None
            width, height = video.codec_context.width, video.codec_context.height
            if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE and width * height <= MAX_PIXELS):
                return None  # unknown or huge: decoding one frame could take gigabytes
            # And FFmpeg's own bound, for a stream that changes its frame size midway.
            video.codec_context.options = {"max_pixels": str(MAX_PIXELS)}
            frame = _frame_near(container, video, at, deadline)
            if frame is None or frame.width * frame.height > MAX_PIXELS:
                return None
            return _encode(frame, long_side)
    except StoreError:
        raise
    except Exception as exc:  # FFmpeg's failures on hostile input are many kinds; a poster is optional
        cause = exc.__context__ if isinstance(exc.__context__, StoreError) else None
        if cause is not None:  # raised in our read callback, re-raised by PyAV as its own error
            raise cause from None
        log.info("no poster", extra={"fields": {"error": f"{type(exc).__name__}: {exc}"}})
        return None


def _frame_near(container: Any, video: Any, at: float, deadline: float) -> Any:
    """The first frame at or after ``at`` seconds (capped to half the clip), else the last one decoded."""
    import av

    target = at
    if container.duration and container.duration > 0:
        target = min(at, container.duration / 1_000_000 / 2)
    if target > 0 and video.time_base:
        # Backward: to the keyframe before the target, then decode forward to it. Not seekable: decode
        # from where the demuxer is.
        with contextlib.suppress(av.FFmpegError):
            container.seek(int(target / video.time_base), stream=video, backward=True)
    last = None
    packets = frames = 0
    for packet in container.demux(video):
        packets += 1
        if packets > MAX_PACKETS or time.monotonic() > deadline:
            break
        try:
            decoded = packet.decode()
        except av.FFmpegError:
            continue  # one damaged packet; the next keyframe may decode
        for frame in decoded:
            frames += 1
            last = frame
            if frame.time is None or frame.time >= target - 0.001 or frames >= MAX_FRAMES:
                return frame
        if frames >= MAX_FRAMES:
            break
    return last


def _encode(frame: Any, long_side: int) -> Still:
    """Scale (never up), turn upright and encode as JPEG."""
    import av

    width, height = frame.width, frame.height
    # PyAV's rotation is the display matrix's, counter-clockwise; FFmpeg's autorotate turns by its negative.
    clockwise = -int(frame.rotation or 0) % 360
    scale = min(1.0, long_side / max(width, height))
    # Even sizes: 4:2:0 chroma is subsampled in pairs.
    target_w, target_h = max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)
    small = frame.reformat(width=target_w, height=target_h, format="yuvj420p", interpolation="AREA")
    if clockwise in (90, 180, 270):
        small = _rotate(small, clockwise)
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height = small.width, small.height
    encoder.pix_fmt = "yuvj420p"
    encoder.time_base = Fraction(1, 25)
    encoder.qmin = encoder.qmax = JPEG_QSCALE  # a fixed quantiser: the size follows the picture, not a bitrate
    small.pts = 0
    jpeg = b"".join(bytes(packet) for packet in [*encoder.encode(small), *encoder.encode(None)])
    return Still(jpeg, small.width, small.height)


def _rotate(frame: Any, clockwise: int) -> Any:
    """``frame`` turned ``clockwise`` degrees (90, 180 or 270), as FFmpeg's autorotate would show it."""
    import av.filter

    graph = av.filter.Graph()
    source = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format.name,
                              time_base=Fraction(1, 25))  # fmt: skip
    steps = {90: ["transpose=clock"], 270: ["transpose=cclock"], 180: ["hflip", "vflip"]}[clockwise]
    node = source
    for step in steps:
        name, _, args = step.partition("=")
        following = graph.add(name, args or None)
        node.link_to(following)
        node = following
    sink = graph.add("buffersink")
    node.link_to(sink)
    graph.configure()
    frame.pts = 0
    graph.push(frame)
    return graph.pull()


# -- storing and keeping --------------------------------------------------------------------------


def poster_holder(clip: CID) -> str:
    return HOLD_PREFIX + str(clip.to_v1())


def clip_of(holder: str) -> CID | None:
    """The clip a poster hold is named after (None for any other holder)."""
    if not holder.startswith(HOLD_PREFIX):
        return None
    try:
        return CID.parse(holder[len(HOLD_PREFIX) :])
    except CIDError:
        return None


def store_poster(store: BlockStore, clip: CID, still: Still, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Poster:
    """Import the JPEG as a file of its own, kept as strongly as ``clip`` is (see the module's doc)."""
    hold = _hold_for(store, clip)
    with store.batch() as batch:
        root = import_stream(io.BytesIO(still.jpeg), batch, chunk_size)
        batch.commit([root.cid], f"{clip}.jpg", len(still.jpeg), hold=hold)
    return Poster(root.cid, still.width, still.height)


def _hold_for(store: BlockStore, clip: CID) -> tuple[str, bool] | None:
    """The hold a poster of ``clip`` needs now: none for unpinned cache; private when the clip is withheld
    (only private S3 keys keep it), so the poster is not served where the clip is not."""
    if not store.is_pinned(clip):
        return None
    return poster_holder(clip), not store.is_withheld(clip)


def keep_like_clip(store: BlockStore, clip: CID, poster: CID) -> None:
    """Make the poster's hold match its clip's state now (a clip pinned again, made private, unpinned);
    writes only when it differs."""
    holder = poster_holder(clip)
    wanted = _hold_for(store, clip)
    current = dict(store.holders(poster)).get(holder)
    if wanted is None:
        if current is not None:
            store.release(holder)
    elif current != wanted[1]:
        store.hold(holder, poster, wanted[1])


def release_orphans(store: BlockStore) -> int:
    """Release the hold of every poster whose clip nothing pins or holds any more, so ``gc`` collects it;
    return how many. Run it before ``gc``: the store cannot know a poster follows its clip."""
    released = 0
    for holder, _poster in store.holds_under(HOLD_PREFIX):
        clip = clip_of(holder)
        if clip is None or not store.is_pinned(clip):
            store.release(holder)
            released += 1
    return released


def poster_after_add(
    db_path: Path, store: BlockStore, clip: CID, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> Poster | None:
    """For a command that stored a file and has no PosterBook open: its poster, or None; never raises for it."""
    try:
        book = PosterBook(db_path, chunk_size)
    except (OSError, sqlite3.Error) as exc:
        log.info("poster not made", extra={"fields": {"cid": str(clip), "error": str(exc)}})
        return None
    try:
        return book.poster(store, clip)
    finally:
        book.close()


class PosterBook:
    """Which clip has which poster, or that it has none, in the gateway database; makes posters on demand."""

    def __init__(self, path: Path, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self._db = open_small_db(
            path,
            "CREATE TABLE IF NOT EXISTS posters (clip BLOB PRIMARY KEY, poster BLOB, width INTEGER, "
            "height INTEGER, made REAL NOT NULL);"
            "CREATE INDEX IF NOT EXISTS posters_by_poster ON posters(poster);",
        )
        self._lock = threading.Lock()
        self._chunk_size = chunk_size

    def close(self) -> None:
        self._db.close()

    def recorded(self, clip: CID) -> tuple[bool, Poster | None]:
        """Whether a poster was tried for ``clip``, and the poster if one was made."""
        with self._lock:
            row = self._db.execute(
                "SELECT poster, width, height FROM posters WHERE clip = ?", (bytes(clip.to_v1()),)
            ).fetchone()
        if row is None:
            return False, None
        if row[0] is None:
            return True, None
        return True, Poster(CID.from_bytes(row[0]), int(row[1]), int(row[2]))

    def record(self, clip: CID, poster: Poster | None) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO posters VALUES (?, ?, ?, ?, ?)",
                (bytes(clip.to_v1()), bytes(poster.cid.to_v1()) if poster else None,
                 poster.width if poster else None, poster.height if poster else None, time.time()),
            )  # fmt: skip

    def clip_of_poster(self, cid: CID) -> CID | None:
        """The clip ``cid`` is the poster of, if it is one."""
        with self._lock:
            row = self._db.execute(
                "SELECT clip FROM posters WHERE poster = ? LIMIT 1", (bytes(cid.to_v1()),)
            ).fetchone()
        return CID.from_bytes(row[0]) if row else None

    def all(self) -> dict[CID, CID]:
        """Every clip with a recorded poster: clip -> poster CID (no decoding, for listings)."""
        with self._lock:
            rows = self._db.execute("SELECT clip, poster FROM posters WHERE poster IS NOT NULL").fetchall()
        return {CID.from_bytes(clip): CID.from_bytes(poster) for clip, poster in rows}

    def follow(self, store: BlockStore, clip: CID) -> None:
        """Keep ``clip``'s recorded poster as the clip is kept now (just pinned or unpinned); makes none."""
        _, poster = self.recorded(clip)
        if poster is None:
            return
        try:
            if store.has(poster.cid):
                keep_like_clip(store, clip, poster.cid)
        except StoreError as exc:  # no room to hold it: it stays cache, and is held when next asked for
            log.info("poster not held", extra={"fields": {"cid": str(clip), "error": str(exc)}})

    def poster(self, store: BlockStore, clip: CID) -> Poster | None:
        """``clip``'s poster: the recorded one (kept as its clip is now), else made now for a video and
        recorded, so a clip is decoded once. Never raises for what the file holds; None when there is none."""
        tried, poster = self.recorded(clip)
        try:
            if poster is not None and store.has(poster.cid):
                keep_like_clip(store, clip, poster.cid)
                return poster
            if tried and poster is None:
                return None
            # Video by its first bytes, not its name: random bytes called clip.mp4 cost FFmpeg 50-90 ms of
            # probing for nothing. What is not video is not recorded either (S3 stores many images).
            if not sniff(b"".join(store.read_range(clip, 0, SNIFF_BYTES)), None).startswith("video/"):
                return None
            # A recorded poster whose blocks gc took (its clip was unpinned, then pinned again) is made again.
            still = render_poster(StoreFile(store, clip))
            made = store_poster(store, clip, still, self._chunk_size) if still is not None else None
            self.record(clip, made)
        except (StoreError, OSError, sqlite3.Error, ValueError) as exc:
            # Blocks of the clip missing, a directory (ValueError), no room for the poster, the database
            # busy: none now (a directory never has one; the others are tried again when next asked for).
            log.info("poster not made", extra={"fields": {"cid": str(clip), "error": str(exc)}})
            return None
        return made
