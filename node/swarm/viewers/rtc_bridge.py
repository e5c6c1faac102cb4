"""WebRTC data channels (aiortc, an asyncio library) for trio code.

``open_rtc_bridge()`` opens the node's asyncio bridge
(``node.swarm.asyncio_bridge``: one asyncio loop in one thread, owned by the
trio task that opens it; ``run`` to call into asyncio, ``deliver`` to hand
events back into trio memory channels). Leaving the context also closes
every RTCPeerConnection the bridge made, then ends the loop.

``RtcPeer`` is the trio face of one RTCPeerConnection with one ordered,
reliable data channel: offer or answer, take the other side's answer and
trickled ICE candidates, send messages (``send_paced`` keeps the channel's
``bufferedAmount`` under a high-water mark, so memory stays bounded however
slow the other side reads), and receive ``PeerEvent``s.

Loopback: aioice never gathers 127.0.0.1 (``aioice.ice.get_host_addresses``
skips it), so two peers on one machine with no network would find no
candidate pair. ``open_rtc_bridge(loopback_only=True)`` makes the candidates
of that bridge's connections 127.0.0.1 and nothing else; tests and
benchmarks use it (config ``[viewers] loopback_only``). The switch is read
per thread, so a bridge without it, in the same process, gathers normally.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aioice.ice
import trio
from aiortc import RTCConfiguration, RTCDataChannel, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

from ..asyncio_bridge import AsyncioBridge, BridgeClosed, open_asyncio_bridge
from .protocol import CHANNEL_HIGH_WATER, CHANNEL_LOW_WATER

log = logging.getLogger("medianode.rtc")

T = TypeVar("T")

CLOSE_TIMEOUT = 5.0  # seconds for closing all connections when the bridge closes


class RtcError(Exception):
    """A WebRTC operation failed, or the connection closed under it."""


# ---------------------------------------------------------------- loopback candidates

_thread_state = threading.local()
_original_host_addresses = aioice.ice.get_host_addresses


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    if getattr(_thread_state, "loopback_only", False):
        return ["127.0.0.1"] if use_ipv4 else []
    return _original_host_addresses(use_ipv4, use_ipv6)


def _allow_loopback_switch() -> None:
    """Route aioice's address lookup through ``_host_addresses`` (idempotent; asks the thread's switch)."""
    aioice.ice.get_host_addresses = _host_addresses


# ---------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class ChannelOpen:
    pass


@dataclass(frozen=True, slots=True)
class ChannelMessage:
    data: bytes


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    reason: str


PeerEvent = ChannelOpen | ChannelMessage | ChannelClosed


# ---------------------------------------------------------------- the bridge


class RtcBridge(AsyncioBridge):
    """The asyncio bridge, plus the RTCPeerConnections it made: closed (bounded) when it stops."""

    thread_name = "medianode-webrtc"

    def __init__(self, token: trio.lowlevel.TrioToken, loopback_only: bool) -> None:
        super().__init__(token)
        self.loopback_only = loopback_only
        self._connections: set[RTCPeerConnection] = set()  # touched only on the asyncio thread

    async def open_peer(self, stun_urls: Sequence[str]) -> RtcPeer:
        """A new RTCPeerConnection using ``stun_urls`` (an empty list means no STUN at all)."""
        send, receive = trio.open_memory_channel[PeerEvent](math.inf)
        peer = RtcPeer(self, send, receive)
        await peer._call(peer._create, list(stun_urls))
        return peer

    def _track(self, connection: RTCPeerConnection) -> None:
        self._connections.add(connection)

    def _untrack(self, connection: RTCPeerConnection) -> None:
        self._connections.discard(connection)

    def thread_setup(self) -> None:
        _thread_state.loopback_only = self.loopback_only

    async def before_stop(self) -> None:
        connections = list(self._connections)
        self._connections.clear()
        if connections:
            # aiortc's close() can wait on a peer that stopped answering; bounded so the node can stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)
        # Then the bridge ends the loop, cancelling the tasks aiortc and aioice left.


@contextlib.asynccontextmanager
async def open_rtc_bridge(loopback_only: bool = False) -> AsyncIterator[RtcBridge]:
    """Run the asyncio loop for WebRTC while the context is open (``node.swarm.asyncio_bridge``):
    the task that enters it owns the loop's thread; leaving closes every connection it made."""
    if loopback_only:
        _allow_loopback_switch()
    async with open_asyncio_bridge(RtcBridge(trio.lowlevel.current_trio_token(), loopback_only)) as bridge:
        yield bridge


# ---------------------------------------------------------------- one connection


class RtcPeer:
    """One RTCPeerConnection and its data channel, driven from trio. ``events`` yields ``PeerEvent``s."""

    def __init__(
        self, bridge: RtcBridge, send: trio.MemorySendChannel[PeerEvent], events: trio.MemoryReceiveChannel[PeerEvent]
    ) -> None:
        self.bridge = bridge
        self.events = events
        self.flooded = False  # set when the other side sent faster than we take messages
        self._send_events = send
        # The rest is touched only on the asyncio thread.
        self._connection: RTCPeerConnection | None = None
        self._channel: RTCDataChannel | None = None
        self._drained: asyncio.Event | None = None
        self._closed = False
        self._closing: asyncio.Future[None] | None = None

    # -- trio side

    async def offer(self, label: str) -> dict[str, str]:
        """Open the data channel ``label`` and return the SDP offer (with every candidate in it)."""
        return await self._call(self._offer, label)

    async def answer(self, offer: dict[str, Any]) -> dict[str, str]:
        """Take the other side's offer; return our answer."""
        return await self._call(self._answer, _description(offer, "offer"))

    async def accept_answer(self, answer: dict[str, Any]) -> None:
        await self._call(self._accept_answer, _description(answer, "answer"))

    async def add_candidate(self, data: dict[str, Any]) -> None:
        """A trickled ICE candidate ``{candidate, sdpMid, sdpMLineIndex}``; an empty one ends the list."""
        await self._call(self._add_candidate, data)

    def send(self, message: bytes) -> None:
        """Queue one small message (not paced: for control messages, which are few)."""
        self.bridge.call_soon(self._send_now, message)

    async def send_paced(self, messages: Sequence[bytes]) -> None:
        """Send ``messages`` in order, waiting whenever the channel holds more than ``CHANNEL_HIGH_WATER`` bytes."""
        await self._call(self._send_paced, messages)

    async def close(self) -> None:
        with trio.CancelScope(shield=True), contextlib.suppress(BridgeClosed, trio.TooSlowError):
            await self.bridge.run(self._close, "closed by us", timeout=CLOSE_TIMEOUT)

    async def _call(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        try:
            return await self.bridge.run(fn, *args)
        except (RtcError, trio.TooSlowError):
            raise
        except BridgeClosed as exc:
            raise RtcError(str(exc)) from None
        except Exception as exc:  # aiortc raises many kinds for a bad SDP or candidate from the other side
            raise RtcError(f"{type(exc).__name__}: {exc}") from exc

    def _flood(self) -> None:
        if not self.flooded:
            self.flooded = True
            self._send_events.close()

    # -- asyncio side

    def _emit(self, event: PeerEvent) -> None:
        self.bridge.deliver(self._send_events, event, self._flood)

    async def _create(self, stun_urls: list[str]) -> None:
        # An explicit list: with iceServers=None aiortc would use a public Google STUN server.
        servers = [RTCIceServer(urls=url) for url in stun_urls]
        connection = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self._connection = connection
        self._drained = asyncio.Event()
        self.bridge._track(connection)

        @connection.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            if self._channel is None:
                self._wire(channel)
            else:
                channel.close()  # one channel per connection is the protocol

        @connection.on("connectionstatechange")
        async def on_state() -> None:
            if connection.connectionState in ("failed", "closed"):
                await self._close(f"connection {connection.connectionState}")

    def _wire(self, channel: RTCDataChannel) -> None:
        self._channel = channel
        channel.bufferedAmountLowThreshold = CHANNEL_LOW_WATER
        drained = self._drained
        assert drained is not None

        @channel.on("open")
        def on_open() -> None:
            self._emit(ChannelOpen())

        @channel.on("message")
        def on_message(data: bytes | str) -> None:
            if isinstance(data, str):
                data = data.encode()  # the protocol is binary; the decoder will refuse it
            self._emit(ChannelMessage(data))

        @channel.on("bufferedamountlow")
        def on_drained() -> None:
            drained.set()

        @channel.on("close")
        def on_close() -> None:
            drained.set()
            self._closing = asyncio.ensure_future(self._close("data channel closed"))

        if channel.readyState == "open":
            self._emit(ChannelOpen())

    def _live(self) -> RTCPeerConnection:
        if self._connection is None or self._closed:
            raise RtcError("connection closed")
        return self._connection

    async def _offer(self, label: str) -> dict[str, str]:
        connection = self._live()
        self._wire(connection.createDataChannel(label, ordered=True))
        await connection.setLocalDescription(await connection.createOffer())
        return {"type": connection.localDescription.type, "sdp": connection.localDescription.sdp}

    async def _answer(self, offer: RTCSessionDescription) -> dict[str, str]:
        connection = self._live()
        await connection.setRemoteDescription(offer)
        await connection.setLocalDescription(await connection.createAnswer())
        return {"type": connection.localDescription.type, "sdp": connection.localDescription.sdp}

    async def _accept_answer(self, answer: RTCSessionDescription) -> None:
        await self._live().setRemoteDescription(answer)

    async def _add_candidate(self, data: dict[str, Any]) -> None:
        connection = self._live()
        text = data.get("candidate")
        mid, line = data.get("sdpMid"), data.get("sdpMLineIndex")
        if not isinstance(text, str) or not (isinstance(mid, str) or isinstance(line, int)):
            raise RtcError("an ICE candidate needs 'candidate' and 'sdpMid' or 'sdpMLineIndex'")
        if not text:
            await connection.addIceCandidate(None)
            return
        try:
            candidate = candidate_from_sdp(text.removeprefix("candidate:"))
        except (AssertionError, ValueError, IndexError):  # aiortc asserts on a short line
            raise RtcError(f"malformed ICE candidate {text[:80]!r}") from None
        candidate.sdpMid = mid if isinstance(mid, str) else None
        candidate.sdpMLineIndex = line if isinstance(line, int) else None
        await connection.addIceCandidate(candidate)

    def _send_now(self, message: bytes) -> None:
        channel = self._channel
        if channel is not None and channel.readyState == "open" and not self._closed:
            channel.send(message)

    async def _send_paced(self, messages: Sequence[bytes]) -> None:
        channel, drained = self._channel, self._drained
        assert drained is not None
        for message in messages:
            while channel is not None and channel.readyState == "open" and channel.bufferedAmount > CHANNEL_HIGH_WATER:
                drained.clear()
                await drained.wait()
            if channel is None or channel.readyState != "open" or self._closed:
                raise RtcError("data channel closed")
            channel.send(message)

    async def _close(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        if self._drained is not None:
            self._drained.set()
        self._emit(ChannelClosed(reason))
        self.bridge.to_trio(self._send_events.close)
        connection = self._connection
        if connection is not None:
            self.bridge._untrack(connection)
            await connection.close()


def _description(data: dict[str, Any], kind: str) -> RTCSessionDescription:
    sdp = data.get("sdp")
    if data.get("type") != kind or not isinstance(sdp, str):
        raise RtcError(f"expected an SDP {kind}")
    return RTCSessionDescription(sdp=sdp, type=kind)
