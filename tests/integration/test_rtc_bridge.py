"""The asyncio <-> trio bridge for aiortc: calls, timeouts, cancellation, events, loopback peers, shutdown."""

from __future__ import annotations

import asyncio
import threading

import pytest
import trio

from node.swarm import asyncio_bridge
from node.swarm.viewers import rtc_bridge
from node.swarm.viewers.rtc_bridge import ChannelClosed, ChannelMessage, ChannelOpen, RtcError, RtcPeer, open_rtc_bridge


async def connected_pair(bridge: rtc_bridge.RtcBridge) -> tuple[RtcPeer, RtcPeer]:
    offerer, answerer = await bridge.open_peer([]), await bridge.open_peer([])
    await offerer.accept_answer(await answerer.answer(await offerer.offer("pieces")))
    for peer in (offerer, answerer):
        assert isinstance(await peer.events.receive(), ChannelOpen)
    return offerer, answerer


def test_run_returns_results_and_raises_errors_from_the_asyncio_thread() -> None:
    async def where() -> str:
        await asyncio.sleep(0)
        return threading.current_thread().name

    async def fail() -> None:
        raise ValueError("from asyncio")

    async def main() -> str:
        async with open_rtc_bridge() as bridge:
            with pytest.raises(ValueError, match="from asyncio"):
                await bridge.run(fail)
            return await bridge.run(where)

    assert trio.run(main) == "medianode-webrtc"


@pytest.mark.parametrize("how", ["timeout", "cancel"])
def test_a_call_given_up_on_cancels_the_asyncio_task(how: str) -> None:
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def main() -> None:
        async with open_rtc_bridge() as bridge:
            if how == "timeout":
                with pytest.raises(trio.TooSlowError):
                    await bridge.run(forever, timeout=0.1)
            else:
                with trio.move_on_after(0.1):
                    await bridge.run(forever)
            assert cancelled.is_set()  # before run returned, not later

    trio.run(main)


def test_loopback_peers_gather_only_127_0_0_1_and_exchange_messages() -> None:
    async def main() -> tuple[list[str], list[bytes]]:
        async with open_rtc_bridge(loopback_only=True) as bridge:
            offerer = await bridge.open_peer([])
            offer = await offerer.offer("pieces")
            answerer = await bridge.open_peer([])
            await offerer.accept_answer(await answerer.answer(offer))
            for peer in (offerer, answerer):
                assert isinstance(await peer.events.receive(), ChannelOpen)
            offerer.send(b"one")
            await offerer.send_paced([b"two", b"three"])
            got = [(await answerer.events.receive()) for _ in range(3)]
            addresses = [line.split()[4] for line in offer["sdp"].splitlines() if line.startswith("a=candidate:")]
            return addresses, [e.data for e in got if isinstance(e, ChannelMessage)]

    addresses, messages = trio.run(main)
    assert addresses and set(addresses) == {"127.0.0.1"}
    assert messages == [b"one", b"two", b"three"]
    assert rtc_bridge._host_addresses(True, False) != ["127.0.0.1"]  # other threads gather normally


def test_closing_one_side_ends_the_other_and_closing_the_bridge_closes_the_rest() -> None:
    async def main() -> list[RtcPeer]:
        async with open_rtc_bridge(loopback_only=True) as bridge:
            first, second = await connected_pair(bridge)
            await first.close()
            assert isinstance(await second.events.receive(), ChannelClosed)
            third, fourth = await connected_pair(bridge)
            return [third, fourth]

    for peer in trio.run(main):
        assert peer._connection is not None and peer._connection.connectionState == "closed"


def test_a_peer_sending_faster_than_we_read_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asyncio_bridge, "MAX_BACKLOG", 8)

    async def main() -> RtcPeer:
        async with open_rtc_bridge(loopback_only=True) as bridge:
            sender, receiver = await connected_pair(bridge)
            await sender.send_paced([b"x"] * 50)
            with trio.fail_after(10):
                async for _ in receiver.events:
                    await trio.sleep(0.05)  # a slow reader
            return receiver

    assert trio.run(main).flooded


def test_calls_after_the_bridge_closed_fail_cleanly() -> None:
    async def main() -> rtc_bridge.RtcBridge:
        async with open_rtc_bridge() as bridge:
            return bridge

    async def late(bridge: rtc_bridge.RtcBridge) -> None:
        with pytest.raises(RtcError):
            await bridge.open_peer([])

    closed = trio.run(main)
    trio.run(late, closed)
