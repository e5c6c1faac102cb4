"""Long-lived worker threads that each consume every batch of a request body, in order.

An upload's body is hashed several ways at once (the leaves' SHA-256 and their
pack writes, S3's MD5 ETag, the checksums a client declared). hashlib, zstd and
file writes release the GIL, so each consumer gets a thread of its own for the
whole body: the event loop hands a batch to every consumer's queue and goes back
to receiving. One thread per consumer for the whole body, rather than a trip to a
worker thread per batch, because with the event loop busy receiving each trip's
hand-over and wake-up cost as much as hashing a MiB, and the consumers then ran
in lock step with the slowest.

Each consumer's queue holds at most ``depth`` batches; :meth:`Stages.put` waits
(in trio, not blocking the loop) for room in every queue, which is what slows the
client down when hashing cannot keep up. A consumer that raises stops taking
batches; the error is raised from the next ``put`` or from :meth:`Stages.finish`.
Leaving the ``async with`` by an error or cancellation stops the threads after the
batch they are on, and waits for them (shielded: one batch's work at most), so
nothing outlives the request. The threads are trio's (``start_thread_soon``), not
tasks of a nursery: they never raise, so errors in the ``async with`` body pass
through unwrapped.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from types import TracebackType

import trio

_END = None
FEED_BATCH = 1024 * 1024  # bytes of a body handed to the consumers at a time


class _Consumer:
    def __init__(self, work: Callable[[bytes], None], depth: int, token: trio.lowlevel.TrioToken) -> None:
        self.work = work
        self.queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.room = trio.Semaphore(depth)
        self.token = token
        self.error: BaseException | None = None
        self.stopping = threading.Event()
        self.done = trio.Event()

    def start(self) -> None:
        trio.lowlevel.start_thread_soon(self.run, lambda _outcome: self.token.run_sync_soon(self.done.set))

    def run(self) -> None:
        """The thread: every batch in order until the end marker; after an error, only release room."""
        while (data := self.queue.get()) is not _END:
            if self.error is None and not self.stopping.is_set():
                try:
                    self.work(data)
                except BaseException as exc:  # handed to the event loop, which raises it
                    self.error = exc
            self.token.run_sync_soon(self.room.release)


class Stages:
    """``async with Stages([f, g], depth=2) as stages: await stages.put(batch) ...; await stages.finish()``."""

    def __init__(self, consumers: Sequence[Callable[[bytes], None]], depth: int = 2) -> None:
        self._work = list(consumers)
        self._depth = depth
        self._consumers: list[_Consumer] = []
        self._ended = False

    async def __aenter__(self) -> Stages:
        token = trio.lowlevel.current_trio_token()
        self._consumers = [_Consumer(work, self._depth, token) for work in self._work]
        for consumer in self._consumers:
            consumer.start()
        return self

    async def put(self, data: bytes) -> None:
        """Queue ``data`` for every consumer, once each has room."""
        self._raise_error()
        for consumer in self._consumers:
            await consumer.room.acquire()
        for consumer in self._consumers:
            consumer.queue.put(data)

    async def finish(self) -> None:
        """Wait until every consumer has taken every batch; raise the first consumer's error."""
        self._end()
        for consumer in self._consumers:
            for _ in range(self._depth):  # all room back: every batch has been taken
                await consumer.room.acquire()
        self._raise_error()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            for consumer in self._consumers:
                consumer.queue.put(_END)

    def _raise_error(self) -> None:
        for consumer in self._consumers:
            if consumer.error is not None:
                raise consumer.error

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> bool | None:
        if error is not None:
            for consumer in self._consumers:
                consumer.stopping.set()
        self._end()  # the threads return once they reach the end marker
        with trio.CancelScope(shield=True):  # a batch's work at most: nothing outlives the request
            for consumer in self._consumers:
                await consumer.done.wait()
        return None


async def feed_in_batches(
    chunks: AsyncIterator[bytes], stages: Stages, batch: int, limit: int, too_big: Callable[[int], Exception]
) -> int:
    """Hand ``chunks`` (a body as it arrives) to ``stages`` joined into batches of about ``batch`` bytes,
    refusing with ``too_big(size so far)`` once more than ``limit`` bytes came; return the size."""
    received = 0
    pending: list[bytes] = []
    held = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > limit:
            raise too_big(received)
        pending.append(chunk)
        held += len(chunk)
        if held >= batch:
            await stages.put(pending[0] if len(pending) == 1 else b"".join(pending))
            pending, held = [], 0
    if pending:
        await stages.put(b"".join(pending))
    return received
