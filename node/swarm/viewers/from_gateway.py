"""Blocks from a gateway's trustless interface, each checked against its CID, and a clip learned from them.

``medianode watch`` knows only a root CID and a gateway URL: ``learn_clip``
fetches the root and every dag-pb node below it as ``?format=raw``, level by
level and a few at a time, checks each block against the CID that links to
it, and builds the clip (``clip.py``) from what it verified. Pieces missing
later are fetched the same way (``GatewayBlocks.get``).
"""

from __future__ import annotations

import httpx
import trio

from ...storage.cid import CID, DAG_PB
from ...storage.dagpb import DagPBError, decode_node
from .clip import Clip, ViewerError, clip_from_blocks
from .protocol import MAX_DAG_NODE, MAX_PIECE, MAX_PIECES

RAW_TYPE = "application/vnd.ipld.raw"
DAG_FETCHES = 8  # dag-pb nodes fetched at once while learning a clip
HTTP_ATTEMPTS = 3


class GatewayBlocks:
    """Raw blocks from a gateway (``/ipfs/{cid}?format=raw``), each checked against its CID."""

    def __init__(self, client: httpx.AsyncClient, base_url: str) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")

    async def get(self, cid: CID, limit: int) -> bytes:
        """The block, retried on network and server errors; ``ViewerError`` when it cannot be had."""
        url = f"{self.base_url}/ipfs/{cid}?format=raw"
        reason = ""
        for attempt in range(HTTP_ATTEMPTS):
            if attempt:
                await trio.sleep(0.5 * 2**attempt)
            try:
                async with self.client.stream("GET", url, headers={"Accept": RAW_TYPE}) as response:
                    if response.status_code != 200:
                        detail = " ".join((await response.aread())[:200].decode("utf-8", "replace").split())
                        reason = f"the gateway does not serve {cid} (HTTP {response.status_code}: {detail})"
                        if response.status_code < 500:
                            raise ViewerError(reason)
                        continue  # the gateway may get it from its swarm yet
                    body = bytearray()
                    async for part in response.aiter_bytes():
                        body += part
                        if len(body) > limit:
                            raise ViewerError(f"the gateway sent more than {limit} bytes for block {cid}")
            except httpx.RequestError as exc:
                reason = f"cannot reach the gateway at {self.base_url}: {exc or type(exc).__name__}"
                continue
            data = bytes(body)
            if cid.verifies(data):
                return data
            reason = f"the gateway sent bytes that do not match {cid}"
        raise ViewerError(reason)


async def learn_clip(blocks: GatewayBlocks, root: CID) -> tuple[Clip, dict[int, bytes]]:
    """The clip at ``root`` and the pieces that fetching its DAG already brought (a one-block file,
    dag-pb leaves). Every dag-pb node is fetched, level by level, a few at a time."""
    fetched: dict[CID, bytes] = {}
    level = [root]
    while level:
        if len(fetched) + len(level) > MAX_PIECES:
            raise ViewerError(f"{root} has more than {MAX_PIECES} nodes")
        results = await _fetch_level(blocks, level)
        fetched.update(results)
        level = []
        for cid, block in results.items():
            if cid.codec == DAG_PB:
                try:
                    links = decode_node(block).links
                except DagPBError as exc:
                    raise ViewerError(f"{cid} is not a dag-pb node: {exc}") from None
                level += [link.cid for link in links if link.cid.codec == DAG_PB and link.cid not in fetched]
    clip = clip_from_blocks(root, fetched)
    brought = {i: fetched[p.cid] for i, p in enumerate(clip.pieces) if p.cid in fetched}
    return clip, brought


async def _fetch_level(blocks: GatewayBlocks, cids: list[CID]) -> dict[CID, bytes]:
    results: dict[CID, bytes] = {}
    limiter = trio.Semaphore(DAG_FETCHES)

    async def fetch(cid: CID) -> None:
        async with limiter:
            results[cid] = await blocks.get(cid, MAX_DAG_NODE if cid.codec == DAG_PB else MAX_PIECE)

    try:
        async with trio.open_nursery() as nursery:
            for cid in cids:
                nursery.start_soon(fetch, cid)
    except BaseExceptionGroup as group:
        errors = group.split(ViewerError)[0]
        if errors is None:
            raise
        raise _first_leaf(errors) from None
    return results


def _first_leaf(group: BaseExceptionGroup[ViewerError]) -> ViewerError:
    first = group.exceptions[0]
    return first if isinstance(first, ViewerError) else _first_leaf(first)
