"""The one bridge between trio (the node's world) and asyncio (aiortc's and zeroconf's): a loop in a thread.

``open_asyncio_bridge(bridge)`` is an async context manager used inside trio:
it runs one asyncio event loop in one thread for as long as it is open, owned
by the trio task that enters it (it starts the thread and, on the way out,
waits for it to end). Trio code calls into asyncio with ``AsyncioBridge.run``
(await the result; cancelling the trio side cancels the asyncio task, and a
timeout can be given); asyncio code hands results and events back with
``to_trio`` and ``deliver``, which go through ``TrioToken.run_sync_soon`` and
never wait for trio (``trio.from_thread.run_sync`` would, and then asyncio
could sit waiting on trio while trio, closing the bridge, waits on asyncio).

Users: ``node.swarm.viewers.rtc_bridge`` (WebRTC data channels; it subclasses
the bridge to close its connections when the loop stops) and
``node.swarm.mdns`` (zeroconf, attached to this loop instead of starting a
thread of its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

import trio

log = logging.getLogger("medianode.asyncio")

T = TypeVar("T")
B = TypeVar("B", bound="AsyncioBridge")

CANCEL_GRACE = 5.0  # seconds a cancelled asyncio task gets to finish before trio stops waiting for it
MAX_BACKLOG = 1024  # items delivered but not yet taken by trio before the reader is called a flood


class BridgeClosed(Exception):
    """The asyncio loop is not running (not yet, or no longer), or it stopped during the call."""


class AsyncioBridge:
    """One asyncio loop in one thread, and the ways across. Subclasses may set up the thread
    (``thread_setup``) and tidy up on the loop before it ends (``before_stop``)."""

    thread_name = "medianode-asyncio"

    def __init__(self, token: trio.lowlevel.TrioToken) -> None:
        self.token = token
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Future[None] | None = None
        self._stop_requested = False
        self._pending: set[trio.Event] = set()  # calls waiting for their asyncio task (trio thread only)

    # -- for subclasses, on the asyncio thread

    def thread_setup(self) -> None:
        """Run first in the bridge's thread, before the loop starts."""

    async def before_stop(self) -> None:
        """Run on the loop once the bridge is asked to stop, before the remaining tasks are cancelled."""

    # -- crossing over

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            raise BridgeClosed("the asyncio bridge is not running")
        return loop

    async def run(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any, timeout: float | None = None) -> T:
        """Run ``fn(*args)`` as a task on the asyncio loop and return its result.

        Cancelling the caller (or ``timeout`` passing, which raises
        ``trio.TooSlowError``) cancels the asyncio task and waits, shielded, up
        to ``CANCEL_GRACE`` seconds for it to end, so nothing it does outlives
        the call unnoticed.
        """
        loop = self.loop
        finished = trio.Event()
        started: list[asyncio.Task[T]] = []

        async def call() -> T:  # fn(*args) inside the task, so that even a bad call ends it with an error
            return await fn(*args)

        def start() -> None:  # on the asyncio thread
            task = loop.create_task(call())
            task.add_done_callback(lambda _: self.to_trio(finished.set))
            started.append(task)

        def cancel() -> None:  # on the asyncio thread, after start (callbacks keep their order)
            if started:
                started[0].cancel()

        try:
            loop.call_soon_threadsafe(start)
        except RuntimeError:  # the loop closed just now
            raise BridgeClosed("the asyncio bridge is closed") from None
        self._pending.add(finished)
        try:
            with trio.fail_after(timeout) if timeout is not None else contextlib.nullcontext():
                await finished.wait()
        except BaseException:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(cancel)
            with trio.CancelScope(shield=True), trio.move_on_after(CANCEL_GRACE):
                await finished.wait()
            raise
        finally:
            self._pending.discard(finished)
        if not started or started[0].cancelled():
            raise BridgeClosed("the asyncio bridge stopped during the call")
        return started[0].result()

    def call_soon(self, fn: Callable[..., object], *args: Any) -> None:
        """Run a plain function on the asyncio loop without waiting for it (order is kept among calls)."""
        with contextlib.suppress(RuntimeError, BridgeClosed):  # the loop has closed: nothing left to act on
            self.loop.call_soon_threadsafe(fn, *args)

    def to_trio(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` in the trio thread soon; from any thread. Dropped once trio has finished."""
        with contextlib.suppress(trio.RunFinishedError):
            self.token.run_sync_soon(fn, *args)

    def deliver(self, channel: trio.MemorySendChannel[T], item: T, on_flood: Callable[[], object]) -> None:
        """From asyncio: put ``item`` into a trio channel; call ``on_flood`` (in trio) if its reader is
        ``MAX_BACKLOG`` items behind, and drop items whose reader is gone."""

        def put() -> None:
            if channel.statistics().current_buffer_used >= MAX_BACKLOG:
                on_flood()
                return
            with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                channel.send_nowait(item)

        self.to_trio(put)

    # -- the asyncio thread

    def _request_stop(self) -> None:
        """From the asyncio thread: end ``_main`` (also if it has not started yet)."""
        self._stop_requested = True
        if self._stop is not None and not self._stop.done():
            self._stop.set_result(None)

    def _thread_main(self, ready: trio.Event, ended: trio.Event) -> None:
        try:
            self.thread_setup()
            asyncio.run(self._main(ready))
        finally:
            self._loop = None
            self.to_trio(ready.set)  # in case _main never got to it
            self.to_trio(self._release_pending)
            self.to_trio(ended.set)

    def _release_pending(self) -> None:
        """In trio, once the loop has ended: wake calls whose task never ran (they raise BridgeClosed)."""
        for finished in self._pending:
            finished.set()

    async def _main(self, ready: trio.Event) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_log_asyncio_error)
        self._stop = loop.create_future()
        self._loop = loop
        self.to_trio(ready.set)
        if not self._stop_requested:
            await self._stop
        await self.before_stop()
        # asyncio.run then cancels the tasks left behind and shuts down the default executor.


def _log_asyncio_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    log.debug("asyncio: %s", context.get("message"), exc_info=context.get("exception"))


@contextlib.asynccontextmanager
async def open_asyncio_bridge(bridge: B) -> AsyncIterator[B]:
    """Run ``bridge``'s asyncio loop while the context is open (see the module docstring).

    The task that enters the context owns the loop's thread: it starts it,
    and on the way out stops it and waits, shielded, until it has ended. No
    nursery is opened here, so the body's exceptions come out unwrapped.
    """
    ready, ended = trio.Event(), trio.Event()
    thread = threading.Thread(target=bridge._thread_main, args=(ready, ended), name=bridge.thread_name, daemon=True)
    thread.start()
    try:
        with trio.CancelScope(shield=True):
            await ready.wait()
        if bridge._loop is None:
            raise BridgeClosed("the asyncio event loop did not start")
        yield bridge
    finally:
        loop = bridge._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed on its own
                loop.call_soon_threadsafe(bridge._request_stop)
        with trio.CancelScope(shield=True):
            await ended.wait()
        thread.join()
