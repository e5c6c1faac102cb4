"""The I/O side of replication (the protocol is described in ``protocol``): answering owners
as a holder, and reconciling wanted copies as an owner, every ``interval`` seconds (``run``, a
task its caller starts in a nursery it owns: ``serve`` starts it in the swarm's)."""

from __future__ import annotations

import logging
from typing import Any

import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import PeerInfo

from ...storage.cid import CID
from ...storage.errors import QuotaExceeded, StoreError
from ..bitswap import FetchError
from ..host import peer_of, set_handlers
from ..node import Swarm
from .book import ReplicaBook
from .protocol import (
    MAX_MESSAGE,
    PROTOCOL_ID,
    REPLICA_PIN_PREFIX,
    ReplicationError,
    cid_field,
    decode_message,
    encode_request,
    frame_length,
)

log = logging.getLogger("medianode.swarm")

REQUEST_TIMEOUT = 15.0
HOLD_TIMEOUT = 600.0  # a holder fetches the whole DAG before it answers


async def read_message(stream: INetStream) -> dict[str, Any]:
    buffer = b""
    while True:
        header = frame_length(buffer)
        if header is not None and len(buffer) >= header[0] + header[1]:
            length, start = header
            return decode_message(buffer[start : start + length])
        chunk = await stream.read(MAX_MESSAGE)
        if not chunk:
            raise ReplicationError("stream ended before a whole message")
        buffer += chunk


class Replicator:
    def __init__(self, swarm: Swarm, book: ReplicaBook, trusted: list[PeerInfo], interval: float) -> None:
        self.swarm = swarm
        self.store = swarm.store
        self.book = book
        self.trusted = {str(info.peer_id): info for info in trusted}
        self.interval = interval
        set_handlers(swarm.host, (PROTOCOL_ID,), self._serve)

    # -- holder -----------------------------------------------------------------------------

    async def _serve(self, stream: INetStream) -> None:
        owner = str(peer_of(stream))
        try:
            with trio.fail_after(REQUEST_TIMEOUT):
                request = await read_message(stream)
            answer = await self._answer(owner, request)
        except ReplicationError as exc:
            answer = {"type": "refused", "reason": str(exc)}
        await stream.write(encode_request(answer))
        await stream.close()

    async def _answer(self, owner: str, request: dict[str, Any]) -> dict[str, Any]:
        if owner not in self.trusted:
            return {"type": "refused", "reason": "not a trusted peer"}
        kind = request["type"]
        if kind == "check":
            roots = request.get("roots")
            if not isinstance(roots, list) or len(roots) > 1000:
                raise ReplicationError("roots must be a list of at most 1000 CIDs")
            held = []
            for raw in roots:
                root = cid_field({"root": raw})
                if await trio.to_thread.run_sync(self._holds, root):
                    held.append(raw)
            return {"type": "held", "roots": held}
        root = cid_field(request)
        if kind == "hold":
            try:
                with trio.fail_after(HOLD_TIMEOUT):
                    await self.swarm.exchange.fetch_dag(root, [self.trusted[owner].peer_id])
                await trio.to_thread.run_sync(lambda: self._pin(root, owner))
            except (FetchError, trio.TooSlowError) as exc:
                return {"type": "refused", "reason": f"could not fetch: {exc}"}
            except (QuotaExceeded, StoreError) as exc:
                return {"type": "refused", "reason": str(exc)}
            log.info("holding a replica", extra={"fields": {"cid": str(root), "owner": owner}})
            return {"type": "holding"}
        if kind == "release":
            await trio.to_thread.run_sync(self._release, root, owner)
            return {"type": "released"}
        raise ReplicationError(f"unknown request type {kind!r}")

    def _holds(self, root: CID) -> bool:
        return self.store.is_pinned(root) and self.store.dag_counts(root)[1] == 0

    def _pin(self, root: CID, owner: str) -> None:
        # Always our own pin: a hold (an S3 key) on the same CID may go away while the copy must stay;
        # an operator's existing pin is kept as it is (and then never released here).
        self.store.pin_add(root, name=REPLICA_PIN_PREFIX + owner)

    def _release(self, root: CID, owner: str) -> None:
        for cid, name, _ in self.store.pins():
            if cid == root.to_v1() and name == REPLICA_PIN_PREFIX + owner:
                self.store.pin_rm(root)

    # -- owner ------------------------------------------------------------------------------

    async def request(self, peer: str, message: dict[str, Any], deadline: float) -> dict[str, Any]:
        info = self.trusted[peer]
        with trio.fail_after(deadline):
            if info.peer_id not in self.swarm.host.get_connected_peers():
                await self.swarm.connect(info)
            stream = await self.swarm.host.new_stream(info.peer_id, [TProtocol(PROTOCOL_ID)])
            try:
                await stream.write(encode_request(message))
                return await read_message(stream)
            finally:
                await stream.close()

    async def run(self) -> None:
        while True:
            await self.reconcile()
            await trio.sleep(self.interval)

    async def reconcile(self) -> None:
        """One round: check holders, replace lost copies, release copies no longer wanted."""
        wanted = dict(await trio.to_thread.run_sync(self.book.wanted))
        for replica in await trio.to_thread.run_sync(self.book.replicas):
            if replica.root not in wanted and replica.state == "holding":
                await self._try(replica.peer, {"type": "release", "root": bytes(replica.root)}, REQUEST_TIMEOUT)
                await trio.to_thread.run_sync(self.book.record, replica.root, replica.peer, "released")
        for root, copies in wanted.items():
            await self._reconcile_root(root, copies)

    async def _reconcile_root(self, root: CID, copies: int) -> None:
        for peer in await trio.to_thread.run_sync(self.book.holders, root):
            answer = await self._try(peer, {"type": "check", "roots": [bytes(root)]}, REQUEST_TIMEOUT)
            if answer is None or bytes(root) not in answer.get("roots", []):
                log.info("replica lost", extra={"fields": {"cid": str(root), "peer": peer}})
                await trio.to_thread.run_sync(self.book.record, root, peer, "lost")
        holders = await trio.to_thread.run_sync(self.book.holders, root)
        for peer in self.trusted:
            if len(holders) >= copies:
                return
            if peer in holders:
                continue
            answer = await self._try(peer, {"type": "hold", "root": bytes(root)}, HOLD_TIMEOUT)
            if answer is not None and answer.get("type") == "holding":
                await trio.to_thread.run_sync(self.book.record, root, peer, "holding")
                holders.append(peer)
            elif answer is not None:
                log.info("replica refused", extra={"fields": {"cid": str(root), "peer": peer,
                                                               "reason": answer.get("reason")}})  # fmt: skip

    async def _try(self, peer: str, message: dict[str, Any], deadline: float) -> dict[str, Any] | None:
        try:
            return await self.request(peer, message, deadline)
        except Exception as exc:  # unreachable, reset, timed out, malformed: all mean "no answer"
            log.info("replication peer did not answer", extra={"fields": {"peer": peer, "error": repr(exc)}})
            return None
