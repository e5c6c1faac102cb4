"""The Python viewer swarm against a real node's hub, on loopback only: ``medianode watch`` processes,
a corrupt peer built from the viewer's classes, and the node seeder.

Every viewer here gathers 127.0.0.1 as its only WebRTC candidate (``[viewers] loopback_only``) and
uses no STUN server, so nothing leaves the machine.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from conftest import CHROMIUM, CHROMIUM_ARGS, REPO, Node, Served, free_port, gen
from node.config import ViewersConfig
from node.demo import make_demo_clip
from node.storage.cid import CID
from node.storage.store import BlockStore
from node.swarm.viewers.clip import stored_clip
from node.swarm.viewers.from_gateway import GatewayBlocks, learn_clip
from node.swarm.viewers.pieces import FilePieces, StorePieces
from node.swarm.viewers.rtc_bridge import open_rtc_bridge
from node.swarm.viewers.seeder import run_seeder
from node.swarm.viewers.viewer import SwarmViewer, ViewerStats
from node.swarm.viewers.watch import watch_file
from test_watch import STATE

CLIP_SIZE = 6 * 1024 * 1024 + 12345  # 25 pieces of 256 KiB, the last one short
DEADLINE = 60.0


def hub_with_clip(tmp_path: Path, size: int = CLIP_SIZE, args: tuple[str, ...] = ()) -> tuple[Served, str, bytes]:
    """A running node that stores a clip (so its hub has a swarm for it); ``args`` for ``serve``."""
    content = gen(size, b"viewer-swarm")
    source = tmp_path / "clip.bin"
    source.write_bytes(content)
    cid = Node(tmp_path / "hub").ok("add", str(source), "--json").json["cid"]
    return Served(tmp_path / "hub", args=("--no-dht", *args)), cid, content


def viewer_dir(tmp_path: Path, name: str) -> Path:
    data_dir = tmp_path / name
    data_dir.mkdir()
    (data_dir / "config.toml").write_text("[viewers]\nloopback_only = true\n")
    return data_dir


def start_watch(data_dir: Path, gateway: str, cid: str, *more: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "node.cli", "watch", cid, "--gateway", gateway,
         "-o", str(data_dir / "clip.out"), "--json", *more],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
        env={**os.environ, "MEDIANODE_DATA": str(data_dir)},
    )  # fmt: skip


def saved_line(proc: subprocess.Popen[bytes], timeout: float = DEADLINE) -> dict[str, Any]:
    """The JSON object ``watch`` prints once the file is saved."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else b""
    if not line:
        proc.kill()
        raise AssertionError(f"watch printed nothing: {proc.communicate()[1].decode(errors='replace')}")
    result: dict[str, Any] = json.loads(line)
    return result


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def swarm_stats(gateway: str, cid: str) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{gateway}/api/v1/swarm/{cid}/stats", timeout=10).json()
    return answer


def wait_for_viewers(gateway: str, cid: str, count: int) -> None:
    deadline = time.monotonic() + DEADLINE
    while swarm_stats(gateway, cid)["viewers"] < count:
        assert time.monotonic() < deadline, f"the hub never saw {count} viewers of {cid}"
        time.sleep(0.1)


# ---------------------------------------------------------------- medianode watch


def test_two_viewers_at_once_both_get_the_verified_file(tmp_path: Path) -> None:
    """Whether two viewers that start together trade anything depends on how fast the gateway is
    (on loopback it can win every race), so only correctness is asserted here; sharing is asserted
    where it is certain: a later viewer and an earlier one."""
    hub, cid, content = hub_with_clip(tmp_path)
    dirs = [viewer_dir(tmp_path, name) for name in ("v1", "v2")]
    watchers = [start_watch(d, hub.url, cid, "--exit-when-done") for d in dirs]
    try:
        results = [saved_line(w) for w in watchers]
        assert [w.wait(timeout=DEADLINE) for w in watchers] == [0, 0]  # --exit-when-done: they end on their own
    finally:
        for w in watchers:
            stop(w)
        hub.stop()
    for data_dir, result in zip(dirs, results, strict=True):
        assert (data_dir / "clip.out").read_bytes() == content
        assert result["cid"] == cid and result["bytes"] == len(content)
        assert result["bytes_from_peers"] + result["bytes_from_http"] >= len(content)


def test_a_later_viewer_gets_most_bytes_from_the_first(tmp_path: Path) -> None:
    hub, cid, content = hub_with_clip(tmp_path)
    first_dir, second_dir = viewer_dir(tmp_path, "first"), viewer_dir(tmp_path, "second")
    first = start_watch(first_dir, hub.url, cid)  # seeds after saving, until stopped
    try:
        first_result = saved_line(first)
        assert first_result["bytes_from_http"] >= len(content)  # nobody to get it from yet
        second = start_watch(second_dir, hub.url, cid, "--exit-when-done")
        second_result = saved_line(second)
        assert second.wait(timeout=15) == 0
        # The hub counts the peer bytes once both ends said so: the first viewer reports what it sent
        # within a second or so of the second's last report.
        deadline = time.monotonic() + 15
        while (stats := swarm_stats(hub.url, cid))["bytes_from_peers"] < second_result["bytes_from_peers"]:
            assert time.monotonic() < deadline, (stats, second_result)
            time.sleep(0.1)
        assert stop(first) == 0  # a seeding viewer stops cleanly on SIGTERM
    finally:
        stop(first)
        hub.stop()
    assert (second_dir / "clip.out").read_bytes() == content
    assert second_result["bytes_from_peers"] > second_result["bytes_from_http"], second_result
    assert stats["bytes_from_peers"] == second_result["bytes_from_peers"], stats  # confirmed, and no more


def test_watch_errors_are_one_line(tmp_path: Path) -> None:
    viewer = Node(viewer_dir(tmp_path, "v"))
    viewer.fails("watch", "not-a-cid", match="invalid CID")
    unreachable = f"http://127.0.0.1:{free_port()}"
    some_cid = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
    viewer.fails("watch", some_cid, "--gateway", unreachable, match="cannot reach the gateway")
    hub, _, _ = hub_with_clip(tmp_path, size=1000)
    try:
        viewer.fails("watch", some_cid, "--gateway", hub.url, match="does not serve")
    finally:
        hub.stop()
    assert not list((tmp_path / "v").glob("*.medianode-part"))


# ---------------------------------------------------------------- in-process viewers


class CorruptPieces(StorePieces):
    """Claims every piece and serves each with its bytes flipped."""

    def read(self, index: int) -> bytes:
        return bytes(b ^ 0xFF for b in super().read(index))


def test_a_peer_serving_corrupt_pieces_is_dropped_and_the_file_is_still_right(tmp_path: Path) -> None:
    hub, cid, content = hub_with_clip(tmp_path, size=2 * 1024 * 1024)
    store = BlockStore(tmp_path / "hub" / "store")
    target = tmp_path / "watched.bin"
    clip = stored_clip(store, CID.parse(cid))
    assert clip is not None  # the hub's store holds all of it

    async def main() -> tuple[ViewerStats, set[str], str | None]:
        with trio.fail_after(DEADLINE):
            async with open_rtc_bridge(loopback_only=True) as bridge, trio.open_nursery() as nursery:
                liar = SwarmViewer(bridge, hub.url, clip, CorruptPieces(store, clip), http=None)
                nursery.start_soon(liar.run)
                await trio.to_thread.run_sync(wait_for_viewers, hub.url, cid, 1)
                async with httpx.AsyncClient() as client:
                    learned, brought = await learn_clip(GatewayBlocks(client, hub.url), clip.root)
                    assert learned == clip and not brought
                    with target.open("wb") as out:
                        pieces = FilePieces(out.fileno(), clip)
                        viewer = SwarmViewer(bridge, hub.url, clip, pieces, http=GatewayBlocks(client, hub.url),
                                             stop_when_complete=True)  # fmt: skip
                        await viewer.run()
                nursery.cancel_scope.cancel()
                return viewer.stats, viewer.banned, liar.my_id

    try:
        stats, banned, liar_id = trio.run(main)
    finally:
        store.close()
        hub.stop()
    assert target.read_bytes() == content
    assert stats.peers_dropped == 1 and liar_id in banned
    assert stats.bytes_from_peers == 0 and stats.bytes_from_http == len(content)


def test_the_node_seeder_serves_a_viewer(tmp_path: Path) -> None:
    hub, cid, content = hub_with_clip(tmp_path)
    seeder_node = Node(tmp_path / "seeder")
    seeder_node.ok("add", str(tmp_path / "clip.bin"))
    store = BlockStore(tmp_path / "seeder" / "store")
    target = tmp_path / "watched.bin"

    async def main() -> Any:
        with trio.fail_after(DEADLINE):
            async with trio.open_nursery() as nursery:
                config = ViewersConfig(seed_hubs=(hub.url,), loopback_only=True)
                await nursery.start(lambda task_status: run_seeder(store, config, task_status=task_status))
                await trio.to_thread.run_sync(wait_for_viewers, hub.url, cid, 1)
                result = await watch_file(hub.url, CID.parse(cid), target, loopback_only=True, seed=False)
                nursery.cancel_scope.cancel()
                return result

    try:
        result = trio.run(main)
    finally:
        store.close()
        hub.stop()
    assert target.read_bytes() == content
    assert result.bytes_from_peers > result.bytes_from_http, result


def test_the_node_seeder_rejoins_a_hub_that_restarts(tmp_path: Path) -> None:
    fixed = ("--gateway", f"127.0.0.1:{free_port()}")  # the same port after the restart; the later --gateway wins
    hub, cid, _ = hub_with_clip(tmp_path, size=1024 * 1024, args=fixed)
    Node(tmp_path / "seeder").ok("add", str(tmp_path / "clip.bin"))
    store = BlockStore(tmp_path / "seeder" / "store")

    async def main() -> None:
        nonlocal hub
        with trio.fail_after(DEADLINE):
            async with trio.open_nursery() as nursery:
                config = ViewersConfig(seed_hubs=(hub.url,), loopback_only=True)
                await nursery.start(lambda task_status: run_seeder(store, config, task_status=task_status))
                await trio.to_thread.run_sync(wait_for_viewers, hub.url, cid, 1)
                await trio.to_thread.run_sync(hub.stop)
                hub = await trio.to_thread.run_sync(lambda: Served(tmp_path / "hub", args=("--no-dht", *fixed)))
                await trio.to_thread.run_sync(wait_for_viewers, hub.url, cid, 1)
                nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        store.close()
        hub.stop()


# ---------------------------------------------------------------- with a browser


def seeding_node(tmp_path: Path, hub: str, clip: Path) -> Served:
    """A real ``medianode serve`` that has ``clip`` pinned and seeds it to ``hub``'s viewer swarm."""
    data_dir = tmp_path / "seeder"
    Node(data_dir).ok("add", str(clip))
    config = data_dir / "config.toml"
    text = config.read_text().replace("seed_hubs = []", f'seed_hubs = ["{hub}"]')
    config.write_text(text.replace("loopback_only = false", "loopback_only = true"))
    return Served(data_dir, args=("--no-dht",))


def test_python_and_browser_viewers_trade_pieces_both_ways(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    clip = make_demo_clip(tmp_path / "clip.mp4", 6, 6000)
    cid = Node(tmp_path / "hub").ok("add", str(clip), "--json").json["cid"]
    hub = Served(tmp_path / "hub", args=("--no-dht",))
    seeder = seeding_node(tmp_path, hub.url, clip)
    try:
        wait_for_viewers(hub.url, cid, 1)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_context().new_page()
            page.goto(f"{hub.url}/watch/{cid}")
            deadline = time.monotonic() + DEADLINE
            while not (state := page.evaluate(STATE))["ended"]:
                assert state["error"] is None and time.monotonic() < deadline, state
                time.sleep(0.25)
            assert state["mode"] == "verified" and state["bad"] == 0 and state["verified"] == state["pieces"]
            assert state["peer"] > 0, state  # from the Python seeder
            started = time.monotonic()
            assert seeder.stop() == 0
            assert time.monotonic() - started < 3  # its viewer sockets and connections close at once
            wait_for_viewers(hub.url, cid, 1)  # the browser alone now
            assert swarm_stats(hub.url, cid)["viewers"] == 1
            python_viewer = viewer_dir(tmp_path, "python")
            watcher = start_watch(python_viewer, hub.url, cid, "--exit-when-done")
            result = saved_line(watcher)
            assert watcher.wait(timeout=15) == 0
            browser.close()
    finally:
        seeder.stop()
        hub.stop()
    assert (python_viewer / "clip.out").read_bytes() == clip.read_bytes()
    assert result["bytes_from_peers"] > result["bytes_from_http"], result  # from the browser
