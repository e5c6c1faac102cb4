"""ActivityPub attachment objects for stored media, and what they need: media type, digest, size.

The object is an ActivityStreams ``Document`` that Mastodon, PeerTube and
Loops-style servers accept as an attachment: a single http(s) ``url`` string,
``mediaType``, ``digestMultibase`` (FEP-1311: base58btc multibase of the
sha2-256 multihash of the whole file), ``size``, and for video ``width``,
``height`` and ``duration`` (xsd:duration) when FFmpeg (PyAV) can read them,
and for a video with a poster (``posters.py``) an ``icon``: the ``Image``
Mastodon takes as a remote video's thumbnail (its ``thumbnail_remote_url``,
read from ``icon.url``). Results are cached per CID in the gateway database,
since computing the digest reads the whole file.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..smalldb import open_small_db
from ..storage.cid import CID, base58btc_encode
from ..storage.importer import DEFAULT_CHUNK_SIZE
from ..storage.store import BlockStore
from .mediatype import SNIFF_BYTES, sniff
from .posters import Poster, PosterBook, StoreFile

log = logging.getLogger("medianode.gateway")


@dataclass(frozen=True)
class MediaFacts:
    cid: CID
    name: str | None
    size: int
    media_type: str
    sha256: bytes
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    poster: Poster | None = None  # not cached with the rest: see PosterBook

    @property
    def digest_multibase(self) -> str:
        return "z" + base58btc_encode(b"\x12\x20" + self.sha256)


def xsd_duration(seconds: float) -> str:
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"PT{text}S"


def attachment_object(facts: MediaFacts, url: str, poster_url: str | None = None) -> dict[str, Any]:
    """The ``Document``; ``poster_url`` is where the gateway serves ``facts.poster``."""
    obj: dict[str, Any] = {
        "type": "Document",
        "mediaType": facts.media_type,
        "url": url,
        "digestMultibase": facts.digest_multibase,
        "size": facts.size,
    }
    if facts.name:
        obj["name"] = facts.name
    if facts.width and facts.height:
        obj["width"], obj["height"] = facts.width, facts.height
    if facts.duration:
        obj["duration"] = xsd_duration(facts.duration)
    if facts.poster is not None and poster_url is not None:
        obj["icon"] = {"type": "Image", "mediaType": "image/jpeg", "url": poster_url,
                       "width": facts.poster.width, "height": facts.poster.height}  # fmt: skip
    return obj


def probe_video(store: BlockStore, cid: CID) -> tuple[int | None, int | None, float | None]:
    """Width, height and duration in seconds, as far as FFmpeg can tell; Nones if it cannot."""
    import av

    try:
        with av.open(StoreFile(store, cid), mode="r") as container:
            duration = container.duration / 1_000_000 if container.duration else None
            video = next(iter(container.streams.video), None)
            if video is None:
                return None, None, duration
            return video.codec_context.width or None, video.codec_context.height or None, duration
    except (av.FFmpegError, ValueError, OSError) as exc:
        log.info("could not probe media", extra={"fields": {"cid": str(cid), "error": str(exc)}})
        return None, None, None


def media_facts(store: BlockStore, cid: CID, name: str | None, sha256: bytes | None = None) -> MediaFacts:
    """Everything an attachment needs; reads the whole file when the digest is not known yet."""
    size = store.file_size(cid)
    head = b"".join(store.read_range(cid, 0, SNIFF_BYTES))
    media_type = sniff(head, name)
    if sha256 is None:
        digest = hashlib.sha256()
        for piece in store.read_range(cid):
            digest.update(piece)
        sha256 = digest.digest()
    width = height = None
    duration = None
    if media_type.startswith(("video/", "audio/")):
        width, height, duration = probe_video(store, cid)
    return MediaFacts(cid, name, size, media_type, sha256, width, height, duration)


class AttachmentCache:
    """Media facts per CID, kept in the gateway database, with the clip's poster (made the first time)."""

    def __init__(self, path: Path, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self._db = open_small_db(
            path,
            "CREATE TABLE IF NOT EXISTS media (cid BLOB PRIMARY KEY, name TEXT, size INTEGER NOT NULL, "
            "media_type TEXT NOT NULL, sha256 BLOB NOT NULL, width INTEGER, height INTEGER, duration REAL)",
        )
        self._lock = threading.Lock()
        self.posters = PosterBook(path, chunk_size)

    def close(self) -> None:
        self._db.close()
        self.posters.close()

    def get(self, cid: CID) -> MediaFacts | None:
        with self._lock:
            row = self._db.execute(
                "SELECT name, size, media_type, sha256, width, height, duration FROM media WHERE cid = ?",
                (bytes(cid.to_v1()),),
            ).fetchone()
        return MediaFacts(cid, *row) if row else None

    def put(self, facts: MediaFacts) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO media VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (bytes(facts.cid.to_v1()), facts.name, facts.size, facts.media_type, facts.sha256,
                 facts.width, facts.height, facts.duration),
            )  # fmt: skip

    def facts(self, store: BlockStore, cid: CID, name: str | None = None, sha256: bytes | None = None) -> MediaFacts:
        """The facts, computed and cached the first time, with the poster (made the first time for a video:
        after the clip is stored, never failing for what the file holds)."""
        facts = self.get(cid)
        if facts is None:
            facts = media_facts(store, cid, name, sha256)
            self.put(facts)
        return replace(facts, poster=self.posters.poster(store, cid))
