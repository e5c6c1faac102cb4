"""The S3 upload path's body reader (ASGI messages into batches) and its hashing stages (worker threads)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
from starlette.requests import ClientDisconnect

from node.gateway.s3.body import BodyReader
from node.gateway.s3.errors import S3Error
from node.gateway.stages import Stages


def messages(*bodies: bytes, end: bool = True) -> Callable[[], Awaitable[dict[str, Any]]]:
    """An ASGI ``receive`` giving ``bodies`` as one request's body messages, then (if not ``end``)
    waiting forever as a client that stopped sending does."""
    queue = list(bodies)

    async def receive() -> dict[str, Any]:
        if not queue:
            await trio.sleep_forever()
        body = queue.pop(0)
        return {"type": "http.request", "body": body, "more_body": bool(queue) or not end}

    return receive


async def read_all(reader: BodyReader, length: int | None, batch: int) -> list[bytes]:
    return [piece async for piece in reader.batches(length, batch)]


def test_messages_are_gathered_into_batches_and_nothing_is_lost() -> None:
    """Tried: 64 KiB messages, an empty one in the middle, a last short one; batches of 150,000 bytes."""
    bodies = [bytes([i]) * 65536 for i in range(7)]
    bodies.insert(3, b"")
    bodies.append(b"tail")

    async def main() -> None:
        got = await read_all(BodyReader(messages(*bodies)), sum(map(len, bodies)), 150_000)
        assert b"".join(got) == b"".join(bodies)
        assert [len(piece) for piece in got] == [196608, 196608, 65536 + 4]

    trio.run(main)


def test_a_body_that_disagrees_with_its_content_length_is_refused() -> None:
    """Tried: a body shorter than Content-Length (the client ended early) and one longer."""

    async def main() -> None:
        with pytest.raises(S3Error) as short:
            await read_all(BodyReader(messages(b"x" * 10)), 11, 4)
        assert short.value.code == "IncompleteBody"
        with pytest.raises(S3Error) as long:
            await read_all(BodyReader(messages(b"x" * 10)), 9, 4)
        assert long.value.code == "InvalidRequest"
        assert await read_all(BodyReader(messages(b"")), 0, 4) == []  # an empty body: one empty message

    trio.run(main)


def test_a_client_that_goes_away_is_a_disconnect() -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def main() -> None:
        reader = BodyReader(receive)
        with pytest.raises(ClientDisconnect):
            await read_all(reader, None, 4)
        assert reader.ended
        await reader.drain()  # returns at once: nothing more will come

    trio.run(main)


def test_a_body_that_stops_is_refused_after_the_idle_bound_and_a_steady_one_is_not() -> None:
    """Tried: a client that sends 5 bytes then nothing (refused after 60 s idle), and one that sends a
    byte every 50 s for 20 bytes (1,000 s in all, in one batch: every message moves the deadline)."""
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def stalled() -> None:
        reader = BodyReader(messages(b"12345", end=False), idle_timeout=60)
        start = trio.current_time()
        with pytest.raises(S3Error) as error:
            await read_all(reader, None, 1024)
        assert error.value.code == "RequestTimeout"
        assert trio.current_time() - start == pytest.approx(60)

    async def steady() -> None:
        sent = 0

        async def receive() -> dict[str, Any]:
            nonlocal sent
            await trio.sleep(50)
            sent += 1
            return {"type": "http.request", "body": b"b", "more_body": sent < 20}

        start = trio.current_time()
        assert await read_all(BodyReader(receive, idle_timeout=60), 20, 1024) == [b"b" * 20]
        assert trio.current_time() - start == pytest.approx(1000)

    trio.run(stalled, clock=clock)
    trio.run(steady, clock=trio.testing.MockClock(autojump_threshold=0))


def test_drain_reads_what_is_left_but_never_waits_for_a_finished_body() -> None:
    async def main() -> None:
        rest = messages(b"a", b"b", b"c")
        reader = BodyReader(rest)
        await reader.drain()
        assert reader.ended
        finished = BodyReader(messages(b"all"))
        assert await read_all(finished, 3, 1) == [b"all"]
        with trio.fail_after(1):  # would wait on a receive with nothing more to give
            await finished.drain()

    trio.run(main)


def test_stages_give_every_consumer_every_batch_in_order_on_threads_of_their_own() -> None:
    batches = [bytes([i]) * 1000 for i in range(50)]
    seen: dict[str, list[bytes]] = {"a": [], "b": []}
    threads: dict[str, set[int]] = {"a": set(), "b": set()}

    def consumer(name: str) -> Callable[[bytes], None]:
        def take(data: bytes) -> None:
            seen[name].append(data)
            threads[name].add(threading.get_ident())

        return take

    async def main() -> None:
        md5 = hashlib.md5()
        async with Stages([consumer("a"), consumer("b"), md5.update], depth=2) as stages:
            for batch in batches:
                await stages.put(batch)
            await stages.finish()
        assert seen == {"a": batches, "b": batches}
        assert md5.digest() == hashlib.md5(b"".join(batches)).digest()
        assert len(threads["a"]) == len(threads["b"]) == 1
        assert threads["a"] != threads["b"] and threading.get_ident() not in threads["a"] | threads["b"]

    trio.run(main)


def test_stages_hold_at_most_depth_batches_for_a_slow_consumer() -> None:
    """Tried: a consumer blocked on its first batch; ``put`` must wait after ``depth`` more rather than
    queue the whole body in memory."""
    release = threading.Event()
    taken: list[bytes] = []

    def slow(data: bytes) -> None:
        release.wait(30)
        taken.append(data)

    async def main() -> None:
        async with Stages([slow], depth=2) as stages:
            put = 0

            async def put_all() -> None:
                nonlocal put
                for i in range(10):
                    await stages.put(bytes([i]))
                    put += 1

            async with trio.open_nursery() as nursery:
                nursery.start_soon(put_all)
                await trio.testing.wait_all_tasks_blocked()
                assert put == 2  # both slots taken while the first batch is still being worked on
                release.set()
            await stages.finish()
        assert taken == [bytes([i]) for i in range(10)]

    trio.run(main)


def test_a_consumer_error_is_raised_and_an_error_in_the_body_stops_the_threads() -> None:
    """Tried: a consumer that fails on its third batch (as a full disk does), and an error raised by the
    receiving side (the client's body was too long) while batches are still queued."""
    calls: list[int] = []

    def fails_on_third(data: bytes) -> None:
        calls.append(len(data))
        if len(calls) == 3:
            raise OSError(28, "No space left on device")

    async def consumer_error() -> None:
        with pytest.raises(OSError, match="No space"):
            async with Stages([fails_on_third, hashlib.sha256().update]) as stages:
                for _ in range(10):
                    await stages.put(b"x")
                await stages.finish()
        assert len(calls) == 3  # nothing after the failure was worked on

    started = threading.Event()
    gate = threading.Event()
    worked: list[bytes] = []

    def blocked(data: bytes) -> None:
        started.set()
        gate.wait(30)
        worked.append(data)

    async def body_error() -> None:
        raised = trio.Event()

        async def receiving_side() -> None:
            with pytest.raises(S3Error):
                async with Stages([blocked], depth=3) as stages:
                    for i in range(3):
                        await stages.put(bytes([i]))
                    await trio.to_thread.run_sync(started.wait, 30)
                    raised.set()  # no checkpoint before the exit tells the threads to stop
                    raise S3Error("InvalidRequest", 400, "too long")

        async def unblock_once_raised() -> None:
            await raised.wait()
            gate.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiving_side)
            nursery.start_soon(unblock_once_raised)
        assert worked == [b"\x00"]  # the batch in hand finished; the queued ones were dropped, not worked

    trio.run(consumer_error)
    trio.run(body_error)
