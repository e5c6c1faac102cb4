"""Prometheus metrics for the gateway: requests, bytes served, uploads, and the store's size.

Each application gets its own registry, so several nodes (or tests) in one
process do not share counters. Store gauges are read when scraped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from ..storage.store import BlockStore
from ..swarm.viewers.hub import ViewerHub

Scope = dict[str, Any]
Message = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


def route_label(path: str) -> str:
    """A small fixed set of labels, so metrics never grow with the number of CIDs."""
    for prefix, label in (("/ipfs/", "ipfs"), ("/api/v1/", "api"), ("/metrics", "metrics"), ("/watch/", "watch")):
        if path.startswith(prefix):
            return label
    return "other"


class StoreCollector(Collector):
    def __init__(self, store: BlockStore) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stat = self.store.repo_stat()
        yield GaugeMetricFamily("medianode_store_bytes", "Bytes of pack files on disk", value=stat.size)
        yield GaugeMetricFamily("medianode_store_quota_bytes", "Configured quota (0: none)", value=stat.quota)
        yield GaugeMetricFamily("medianode_store_blocks", "Blocks in the store", value=stat.blocks)
        yield GaugeMetricFamily("medianode_store_pins", "Pinned roots", value=stat.pinned)
        yield GaugeMetricFamily("medianode_store_pinned_bytes", "Bytes needed by pins", value=stat.pinned_bytes)


class SwarmCollector(Collector):
    def __init__(self, swarm: Any) -> None:
        self.swarm = swarm

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        exchange = self.swarm.exchange
        yield GaugeMetricFamily("medianode_swarm_peers", "Connected peers", value=len(self.swarm.peers()))
        yield CounterMetricFamily(
            "medianode_bitswap_blocks_served", "Blocks sent to peers", value=exchange.blocks_served
        )
        yield CounterMetricFamily(
            "medianode_bitswap_bytes_served", "Block bytes sent to peers", value=exchange.bytes_served
        )
        yield CounterMetricFamily("medianode_bitswap_blocks_fetched", "Verified blocks received",
                                  value=exchange.blocks_fetched)  # fmt: skip
        yield CounterMetricFamily("medianode_bitswap_bytes_fetched", "Verified block bytes received",
                                  value=exchange.bytes_fetched)  # fmt: skip


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "medianode_http_requests", "HTTP requests answered", ["route", "method", "status"], registry=self.registry
        )
        self.bytes_served = Counter("medianode_http_bytes_served", "Body bytes sent for /ipfs/", registry=self.registry)
        self.uploads = Counter("medianode_uploads", "Uploads finished, by result", ["result"], registry=self.registry)
        self.upload_bytes = Counter("medianode_upload_bytes", "Bytes stored by uploads", registry=self.registry)
        self._store_collector: StoreCollector | None = None

    def endpoint(
        self, store: BlockStore, swarm: Any = None, hub: ViewerHub | None = None
    ) -> Callable[[Request], Awaitable[Response]]:
        if self._store_collector is None:
            self._store_collector = StoreCollector(store)
            self.registry.register(self._store_collector)
            if swarm is not None:
                self.registry.register(SwarmCollector(swarm))
            if hub is not None:
                self.registry.register(ViewerCollector(hub))

        async def metrics(request: Request) -> Response:
            body = await trio.to_thread.run_sync(generate_latest, self.registry)
            return Response(body, media_type=CONTENT_TYPE_LATEST)

        return metrics

    def http_counts(self) -> dict[str, Any]:
        """What this process answered so far: requests by (route, method, status), and /ipfs/ body bytes.
        A serving worker reports the growth of these to the owner (node/gateway/worker.py)."""
        requests = {
            (sample.labels["route"], sample.labels["method"], sample.labels["status"]): sample.value
            for family in self.requests.collect()
            for sample in family.samples
            if sample.name.endswith("_total")
        }
        served = sum(s.value for f in self.bytes_served.collect() for s in f.samples if s.name.endswith("_total"))
        return {"requests": requests, "bytes_served": served}

    def add_http_counts(self, report: dict[str, Any]) -> None:
        """Add a worker's report (``{"requests": [[route, method, status, n]], "bytes_served": n}``) to ours,
        so /metrics counts what every serving process answered. Refuses a malformed one whole."""
        rows = report.get("requests", [])
        served = report.get("bytes_served", 0)
        if not isinstance(rows, list) or not isinstance(served, int | float) or served < 0:
            raise ValueError("a metrics report is {requests: [[route, method, status, n]], bytes_served: n}")
        checked = []
        for row in rows:
            if not (isinstance(row, list) and len(row) == 4 and all(isinstance(x, str) for x in row[:3])
                    and isinstance(row[3], int | float) and row[3] > 0):  # fmt: skip
                raise ValueError(f"a metrics report row is [route, method, status, n], got {row!r}")
            checked.append(row)
        for route, method, status, count in checked:
            self.requests.labels(route, method, status).inc(count)
        if served:
            self.bytes_served.inc(served)

    def wrap(self, app: Any) -> ASGIApp:
        """ASGI middleware that counts every HTTP response by route, method and status."""

        async def counted(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            status = {"code": 500}

            async def send_counting(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                await send(message)

            try:
                await app(scope, receive, send_counting)
            finally:
                self.requests.labels(route_label(scope["path"]), scope["method"], str(status["code"])).inc()

        return counted


class ViewerCollector(Collector):
    """The viewer swarm, from the signaling hub's counts (what they mean: ``node/swarm/viewers/hub.py``)."""

    def __init__(self, hub: ViewerHub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        viewers, swarms, seen, joins, from_peers, from_http = self._read()
        yield GaugeMetricFamily("medianode_viewers", "Viewers connected to the signaling hub", value=viewers)
        yield GaugeMetricFamily("medianode_viewer_swarms", "CIDs with viewers now", value=swarms)
        yield GaugeMetricFamily("medianode_viewers_seen",
                                "Distinct viewers in the last hour (per address, most at once; summed over CIDs)",
                                value=seen)  # fmt: skip
        yield CounterMetricFamily("medianode_viewers_joined", "Viewer memberships admitted since start",
                                  value=joins)  # fmt: skip
        bytes_received = CounterMetricFamily(
            "medianode_viewer_bytes_received",
            "Clip bytes viewers received, by source (peers: confirmed by both ends; http: claimed, bounded)",
            labels=["source"],
        )
        bytes_received.add_metric(["peers"], from_peers)
        bytes_received.add_metric(["http"], from_http)
        yield bytes_received

    def _read(self) -> tuple[int, int, int, int, int, int]:
        """The hub's figures, read on the event loop's thread (the hub is not thread-safe; a scrape runs in a
        worker thread); read directly when called outside one (no loop to ask)."""
        try:
            return trio.from_thread.run_sync(self._figures)
        except RuntimeError:
            return self._figures()

    def _figures(self) -> tuple[int, int, int, int, int, int]:
        try:
            now = trio.current_time()
        except RuntimeError:
            now = None
        overall = self.hub.overall
        seen = self.hub.viewers_seen(now) if now is not None else self.hub.audience.total
        return (self.hub.viewer_count(), len(self.hub.swarms), seen, overall.joins, overall.bytes_from_peers,
                overall.bytes_from_http)  # fmt: skip
