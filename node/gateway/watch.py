"""The viewer's side of the gateway: the watch page, the feed, the embeddable player.

``/watch/{cid}`` and ``/watch/feed`` (``/feed`` redirects there) are static
pages whose JavaScript, under ``/watch/player/``, does the work in the
browser: it verifies the clip's DAG and every piece, trades pieces with
other viewers over WebRTC, and feeds the ``<video>`` element through a
Service Worker (``/watch/sw.js``, scope ``/watch/``) that answers the
element's Range requests with verified bytes. Everything a page needs is
under ``/watch/`` so that one Service Worker scope covers it.

``GET /api/v1/feed`` lists the node's pinned clips (files whose first bytes
say video, audio or image), newest pin first: what ``/feed`` scrolls through.
Each item: ``cid``, ``name``, ``type``, ``size``, ``pinned_at``, ``poster``
(``/ipfs/<poster CID>`` or null), ``duration`` (seconds), ``width``,
``height`` (null while not known). A clip's facts and poster are worked out
once (``attachment.py``, ``posters.py``) and remembered; one poll works out at
most ``FEED_FILL_SECONDS`` of them and later polls go on, so the feed stays
fast however many clips were pinned before posters existed. Posters are never
items.

``GET /api/v1/clip/{cid}``: ``{"cid", "name", "size", "type", "duration",
"width", "height", "poster"}`` for one stored file (400 for a malformed CID or
a directory, 404 when it is not in the store, 410 when it is not public).
``GET /api/v1/poster/{cid}``: a 307 to the clip's poster under ``/ipfs/``, or
404 when it has none.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import NotFound
from ..storage.cid import CID
from ..storage.errors import StoreError
from ..storage.layout import NotAFileError
from ..storage.store import BlockStore
from ..storage.unixfs import UnixFSError
from .attachment import AttachmentCache, MediaFacts
from .http import HTTPProblem, json_problems, parse_cid, problem_response
from .mediatype import SNIFF_BYTES, is_media, sniff
from .posters import media_db_path

STATIC = Path(__file__).parent / "static"
FEED_LENGTH = 200
FEED_FILL_SECONDS = 1.0  # per feed request, spent working out facts and posters not known yet
NO_CACHE = {"Cache-Control": "no-cache"}  # pages and scripts change with the node's version


class ClipList:
    """Pinned clips for the feed, and one clip's facts; what a CID is never changes, so its media type,
    facts and poster are remembered."""

    def __init__(self, store: BlockStore, media: AttachmentCache | None = None) -> None:
        self.store = store
        self.media = media or AttachmentCache(media_db_path(store))
        self._types: dict[CID, str | None] = {}
        self._facts: dict[CID, dict[str, Any]] = {}

    def clips(self) -> list[dict[str, Any]]:
        pins = sorted(self.store.pins(), key=lambda pin: pin[2], reverse=True)
        pinned = {cid for cid, _, _ in pins}
        for forgotten in self._types.keys() - pinned:
            del self._types[forgotten]  # unpinned since: remembered no longer
        for forgotten in self._facts.keys() - pinned:
            del self._facts[forgotten]
        fill_until = time.monotonic() + FEED_FILL_SECONDS
        found = []
        for cid, name, pinned_at in pins:
            mime = self._media_type(cid, name)
            if mime is None:
                continue
            item = {"cid": str(cid), "name": name, "type": mime, "size": self.store.file_size(cid),
                    "pinned_at": pinned_at}  # fmt: skip
            item.update(self._known(cid, name, fill_until))
            found.append(item)
            if len(found) >= FEED_LENGTH:
                break
        return found

    def _known(self, cid: CID, name: str | None, fill_until: float) -> dict[str, Any]:
        """The clip's poster and dimensions: remembered, or worked out while this request has time left."""
        known = self._facts.get(cid)
        if known is None:
            if time.monotonic() > fill_until:
                return {"poster": None, "duration": None, "width": None, "height": None}
            try:
                known = clip_extras(self.media.facts(self.store, cid, name))
            except (NotAFileError, UnixFSError, StoreError):
                known = {"poster": None, "duration": None, "width": None, "height": None}
            self._facts[cid] = known
        return known

    def _media_type(self, cid: CID, name: str | None) -> str | None:
        if cid not in self._types:
            try:
                head = b"".join(self.store.read_range(cid, 0, SNIFF_BYTES))
                mime = sniff(head, name)
                # A poster someone pinned is still not a clip (posters are JPEGs: only those are looked up).
                poster = mime == "image/jpeg" and self.media.posters.clip_of_poster(cid) is not None
                self._types[cid] = mime if is_media(mime) and not poster else None
            except (NotAFileError, UnixFSError, StoreError):
                self._types[cid] = None
        return self._types[cid]

    def clip(self, cid: CID) -> dict[str, Any]:
        """What ``GET /api/v1/clip/{cid}`` answers; raises the node's errors for what is not a public file."""
        facts = self._public_facts(cid)
        return {"cid": str(cid), "name": facts.name, "size": facts.size, "type": facts.media_type,
                **clip_extras(facts)}  # fmt: skip

    def poster_path(self, cid: CID) -> str:
        poster = self._public_facts(cid).poster
        if poster is None:
            raise NotFound(f"{cid} has no poster")
        return f"/ipfs/{poster.cid}"

    def _public_facts(self, cid: CID) -> MediaFacts:
        store = self.store
        if not store.has(cid):
            raise NotFound(f"{cid} is not in the store")
        if store.is_withheld(cid):
            raise HTTPProblem(410, f"{cid} is not public")
        name = None
        if self.media.get(cid) is None:  # the first time: the name it was pinned under, if any
            name = next((n for c, n, _ in store.pins() if c == cid), None)
        return self.media.facts(store, cid, name)


def clip_extras(facts: MediaFacts) -> dict[str, Any]:
    """The feed's and the clip endpoint's view of a clip's poster and dimensions."""
    return {
        "poster": f"/ipfs/{facts.poster.cid}" if facts.poster else None,
        "duration": facts.duration,
        "width": facts.width,
        "height": facts.height,
    }


def watch_routes(store: BlockStore) -> list[BaseRoute]:
    clip_list = ClipList(store)

    async def watch_page(request: Request) -> Response:
        try:
            parse_cid(request.path_params["cid"])
        except HTTPProblem as problem:
            return problem_response(problem)
        return FileResponse(STATIC / "watch.html", headers=NO_CACHE)

    async def feed_page(request: Request) -> Response:
        return FileResponse(STATIC / "feed.html", headers=NO_CACHE)

    async def service_worker(request: Request) -> Response:
        return FileResponse(STATIC / "sw.js", media_type="text/javascript", headers=NO_CACHE)

    async def feed(request: Request) -> Response:
        clips = await trio.to_thread.run_sync(clip_list.clips)
        return JSONResponse({"clips": clips}, headers={"Cache-Control": "no-store"})

    @json_problems
    async def clip(request: Request) -> Response:
        cid = parse_cid(request.path_params["cid"])
        body = await trio.to_thread.run_sync(clip_list.clip, cid)
        # What a CID is never changes, but its poster may appear later (made on demand): revalidate.
        return JSONResponse(body, headers={"Cache-Control": "no-cache"})

    @json_problems
    async def poster(request: Request) -> Response:
        cid = parse_cid(request.path_params["cid"])
        path = await trio.to_thread.run_sync(clip_list.poster_path, cid)
        return RedirectResponse(path, status_code=307, headers={"Cache-Control": "no-cache"})

    async def to_feed(request: Request) -> Response:
        return RedirectResponse("/watch/feed", status_code=307)

    async def stream_without_worker(request: Request) -> Response:
        # The Service Worker answers these; without one the gateway does.
        return RedirectResponse(f"/ipfs/{request.path_params['cid']}", status_code=307)

    return [
        Route("/feed", to_feed, methods=["GET", "HEAD"]),
        Route("/api/v1/feed", feed, methods=["GET"]),
        Route("/api/v1/clip/{cid}", clip, methods=["GET"]),
        Route("/api/v1/poster/{cid}", poster, methods=["GET", "HEAD"]),
        Route("/watch/feed", feed_page, methods=["GET", "HEAD"]),
        Route("/watch/sw.js", service_worker, methods=["GET", "HEAD"]),
        Route("/watch/stream/{cid}", stream_without_worker, methods=["GET", "HEAD"]),
        Mount("/watch/player", StaticFiles(directory=STATIC / "player"), name="player"),
        Route("/watch/{cid}", watch_page, methods=["GET", "HEAD"]),
    ]
