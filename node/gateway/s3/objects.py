"""What S3 writes do to the store: bodies into files, multipart parts into one file, holds kept true.

Every object is an ordinary UnixFS file with the CID ``medianode add`` gives the
same bytes. A body streams into an import batch as it arrives (hashed for its
leaves, its MD5 ETag and any checksum the client declared, in one pass on a
worker thread) and is committed together with its hold, so a failed check, a
cut body or a full quota stores nothing. A multipart upload's parts are files
of their own, held privately until the upload completes; completing links their
leaves under new nodes when every part but the last is a whole number of chunks
(what boto3, the Ruby SDK and lib-storage send: 5 and 8 MiB parts), which costs
no copy, and otherwise re-imports the parts' bytes in order. Either way the
object's CID is the one ``add`` gives the whole file. A stored video object
(a PUT or a completed multipart upload, not a part) gets its poster
(``posters.py``) before the write is answered.

Order of writes, so a crash at any point leaves nothing a restart cannot mend:
a hold is taken (with the blocks) before the catalogue names it, and the
catalogue forgets a name before its hold is released; ``reconcile`` at start-up
releases holds no catalogue row names.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import trio

from ...storage.cid import CID
from ...storage.errors import NoSpace, QuotaExceeded
from ...storage.importer import BalancedFileBuilder, ChunkFeeder
from ...storage.store import BlockStore, ImportBatch
from ...storage.unixfs import Child
from ..posters import PosterBook, media_db_path
from ..stages import FEED_BATCH, Stages, feed_in_batches
from .catalog import Catalog, Part, Upload, object_holder, part_holder
from .checksums import BodyChecks
from .errors import S3Error

MIN_PART_SIZE = 5 * 1024 * 1024
MAX_OBJECT_SIZE = 5 * 1024**3  # a single PUT or one part, as S3
MAX_PARTS = 10000


def quota_exceeded(message: str) -> S3Error:
    return S3Error("QuotaExceeded", 403, message)


def entity_too_large(size: int, limit: int) -> S3Error:
    return S3Error(
        "EntityTooLarge", 400, f"Your proposed upload ({size} bytes) exceeds the maximum allowed size ({limit} bytes)"
    )


@dataclass(frozen=True)
class Imported:
    cid: CID
    size: int
    md5: bytes
    checksums: dict[str, str]  # algorithm -> base64, what the client may ask back

    def checksum_headers(self) -> dict[str, str]:
        """The ``x-amz-checksum-*`` headers a PUT or UploadPart answers with (MD5 is the ETag)."""
        return {f"x-amz-checksum-{name}": value for name, value in self.checksums.items() if name != "md5"}


class ObjectWriter:
    def __init__(self, store: BlockStore, catalog: Catalog, chunk_size: int) -> None:
        self.store = store
        self.catalog = catalog
        self.chunk_size = chunk_size
        self.posters = PosterBook(media_db_path(store), chunk_size)

    async def make_poster(self, cid: CID, name: str) -> None:
        """A stored object's poster, if it is a video (``posters.py``): bounded, and never failing the write."""
        await trio.to_thread.run_sync(self.posters.poster, self.store, cid)

    async def import_body(
        self,
        chunks: AsyncIterator[bytes],
        checks: BodyChecks,
        *,
        room: int | None,
        hold: tuple[str, bool],
        name: str,
        trailers: Callable[[], dict[str, str]] | None = None,
    ) -> Imported:
        """Stream ``chunks`` into a new file held by ``hold``: at most ``room`` bytes (the key's quota; None:
        no quota) and ``MAX_OBJECT_SIZE``, or nothing is kept."""
        limit = MAX_OBJECT_SIZE if room is None else min(room, MAX_OBJECT_SIZE)
        batch = self.store.new_batch()
        try:
            feeder = ChunkFeeder(batch, self.chunk_size, content_hash=None)
            md5 = hashlib.md5(usedforsecurity=False)

            # Each batch is hashed on up to three threads at once (the leaves, which also writes them; the
            # ETag's MD5; the declared checksums) while the next is received.
            consumers: list[Callable[[bytes], None]] = [feeder.feed, md5.update]
            if checks.running:
                consumers.append(checks.update)
            async with Stages(consumers) as stages:
                await feed_in_batches(chunks, stages, FEED_BATCH, limit, lambda size: _too_big(size, room))
                await stages.finish()
            root, _ = await trio.to_thread.run_sync(feeder.finish)
            checksums = checks.finish(trailers() if trailers is not None else None)
            await trio.to_thread.run_sync(lambda: _commit(batch, root.cid, name, feeder.size, hold))
        finally:
            batch.abort()  # a no-op once committed
        if hold[0].startswith("s3:"):  # an object (object_holder), not a multipart part ("s3-part:")
            await self.make_poster(root.cid, name)
        return Imported(root.cid, feeder.size, md5.digest(), checksums)

    # -- multipart --------------------------------------------------------------------------------

    async def complete(self, upload: Upload, parts: list[Part]) -> tuple[CID, int]:
        """Join ``parts`` (checked by the caller: in order, all present) into the object's file and hold it
        with the object's key; the parts' holds are the caller's to release."""
        holder = object_holder(upload.bucket, upload.key)
        cid, size = await trio.to_thread.run_sync(self._assemble, parts, upload.key, (holder, upload.public))
        await self.make_poster(cid, upload.key)
        return cid, size

    def _assemble(self, parts: list[Part], name: str, hold: tuple[str, bool]) -> tuple[CID, int]:
        size = sum(p.size for p in parts)
        aligned = all(p.size % self.chunk_size == 0 for p in parts[:-1])
        batch = self.store.new_batch()
        try:
            if aligned:
                builder = BalancedFileBuilder(batch)
                for part in parts:
                    for leaf in self._leaves(part):
                        builder.add_stored_leaf(leaf)
                root = builder.finish()  # with no leaves at all: the empty file, as add gives it
            else:
                feeder = ChunkFeeder(batch, self.chunk_size)
                for part in parts:
                    for piece in self.store.read_range(part.cid, 0, part.size):
                        feeder.feed(piece)
                root, _ = feeder.finish()
            _commit(batch, root.cid, name, size, hold)
        finally:
            batch.abort()
        return root.cid, size

    def _leaves(self, part: Part) -> list[Child]:
        """A part's raw leaves in order (none for an empty part: the whole file has no empty leaf)."""
        if part.size == 0:
            return []
        layout, _ = self.store.range_layout(part.cid, 0, part.size)
        return [Child(leaf.cid, leaf.size, leaf.size) for leaf in layout.leaves]

    # -- keeping the catalogue and the store's holds in step --------------------------------------

    def release_parts(self, upload_id: str, parts: list[Part]) -> None:
        for part in parts:
            self.store.release(part_holder(upload_id, part.number))

    def abort(self, upload: Upload) -> None:
        self.release_parts(upload.upload_id, self.catalog.delete_upload(upload.upload_id))

    def expire(self, older_than_hours: float) -> int:
        """Abort uploads started more than ``older_than_hours`` ago; return how many."""
        stale = self.catalog.stale_uploads(time.time() - older_than_hours * 3600)
        for upload in stale:
            self.abort(upload)
        return len(stale)

    def reconcile(self) -> int:
        """Release holds whose catalogue rows are gone (a crash between the two writes); return how many."""
        released = 0
        for holder, _cid in self.store.holds_under("s3:"):
            bucket, _, key = holder[3:].partition("/")
            if self.catalog.get(bucket, key) is None:
                self.store.release(holder)
                released += 1
        for holder, cid in self.store.holds_under("s3-part:"):
            upload_id, _, number = holder[8:].rpartition("/")
            recorded = {p.number: p.cid for p in self.catalog.parts(upload_id)}
            if not (number.isascii() and number.isdigit()) or recorded.get(int(number)) != cid:
                self.store.release(holder)
                released += 1
        return released


def _too_big(size: int, room: int | None) -> S3Error:
    if room is None or room >= MAX_OBJECT_SIZE:
        return entity_too_large(size, MAX_OBJECT_SIZE)
    return quota_exceeded(f"the upload ({size} bytes so far) does not fit in the {room} bytes left to this key")


def _commit(batch: ImportBatch, root: CID, name: str, size: int, hold: tuple[str, bool]) -> None:
    try:
        batch.commit([root], name, size, hold=hold)
    except QuotaExceeded as exc:
        raise quota_exceeded(f"the node's storage quota is full: {exc}") from None
    except NoSpace as exc:
        raise S3Error("InsufficientStorage", 507, str(exc)) from None
