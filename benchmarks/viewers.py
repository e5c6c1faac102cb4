"""Viewer-swarm benchmark: headless Chromium viewers of one clip, sharing its pieces over WebRTC.

    python benchmarks/viewers.py [--viewers 10] [--gap 1.0] [--seconds 10] [--kbps 16000] [--ttff-runs 5]

Everything runs on 127.0.0.1: one ``medianode serve`` and Debian's Chromium
(one browser, a separate context per viewer, so each has its own Service
Worker and cache, as separate people do).

1. share of bytes from peers: ``--viewers`` pages open ``/watch/{cid}`` of a
   ``--seconds`` s clip at ``--kbps`` (default 10 s, 16 Mbit/s: 20 MB), one
   every ``--gap`` s, and play it to the end. Share = bytes the viewers got
   over data channels / all bytes they got (the hub's counts: peer bytes as
   far as sender and receiver both reported them, HTTP bytes as the viewers
   reported them). Ceiling (N-1)/N; target >= 80%.
2. time to first frame (navigation start to the first frame presented,
   ``requestVideoFrameCallback``), P2P on against ``?p2p=0``, ``--ttff-runs``
   each, alternating, one fresh viewer at a time, with and without one other
   viewer already seeding. Target: P2P on at most 10% slower (medians).
3. data-channel throughput browser -> browser: a fresh viewer takes the whole
   clip from one viewer that has it (first to last piece from the peer),
   beside the same bytes over HTTP from the gateway in the same browser; and
   node -> browser: a second ``medianode serve`` that has the clip pinned
   seeds it to the first one's hub (``[viewers] seed_hubs``, aiortc) and a
   fresh viewer is its only peer.

Every viewer must end with every piece verified and no page error, or the run
fails (exit 1) after printing.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import REPO, MiB, medianode

sys.path.insert(0, str(REPO))
from node.demo import make_demo_clip

TRACE = bool(os.environ.get("VIEWERS_TRACE"))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-features=WebRtcHideLocalIpsWithMdns", "--allow-loopback-in-peer-connection",
]  # fmt: skip
STATE = """() => {
  const s = window.medianodeWatch, v = document.getElementById('video'), c = s && s.clip;
  return {error: s && s.error, ended: v.ended, t: v.currentTime, mediaError: v.error && v.error.code,
          stats: c ? c.stats : null, verified: c ? c.verifiedPieces() : 0, trace: c ? c.trace : [],
          pieces: c && c.pieces ? c.pieces.length : -1,
          swarm: c && c.swarm ? {rejects: c.swarm.rejects, dropped: c.swarm.dropped.size,
                                 struck: [...c.picker.peers.values()].filter((p) => p.strikes >= 3).length,
                                 known: c.picker.peers.size} : null};
}"""
HTTP_REFERENCE = """async (url) => {
  const start = performance.now();
  const body = await (await fetch(url, {cache: 'no-store'})).arrayBuffer();
  return {bytes: body.byteLength, ms: performance.now() - start};
}"""


class Viewer:
    def __init__(self, browser: Any, url: str) -> None:
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.drops: list[str] = []  # why the page dropped peers (its console warnings), for the trace
        self.page.on("console", lambda msg: "dropping peer" in msg.text and self.drops.append(msg.text))
        self.page.goto(url)

    def state(self) -> dict[str, Any]:
        return self.page.evaluate(STATE)  # type: ignore[no-any-return]

    def wait(self, condition: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            if state["error"] or state["mediaError"]:
                raise RuntimeError(f"viewer failed: {state}")
            if self.page.evaluate(f"(s) => {condition}", state):
                return state
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {condition}: {state}")
            time.sleep(0.2)

    def close(self) -> None:
        self.context.close()


def interleave(src: Path, dst: Path) -> Path:
    """``src`` remuxed with its audio and video packets interleaved by time, as encoders write real clips.

    ``make_demo_clip`` muxed all the video, then all the audio, until 2026-12-02: Chromium then read half of a
    20 s 4 Mbit/s clip (to its first audio packet) before it had the clip's metadata, all of it what the first
    frame waits on. It now interleaves by time itself, so this remux (``--interleaved``, and swipe.py's) changes
    little; it is kept so that runs of either version compare."""
    import av

    with av.open(str(src)) as source, av.open(str(dst), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in source.streams}
        packets = [p for p in source.demux() if p.dts is not None]
        packets.sort(key=lambda p: float(p.dts * p.time_base))
        for packet in packets:
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    return dst


# Each viewer stands for a person at an address of their own: the node's per-address bounds (HTTP connections,
# hub sockets and joins) would otherwise count every browser of the benchmark as one client on 127.0.0.1.
ONE_PERSON_PER_VIEWER = {
    "MEDIANODE_CONNECTIONS_PER_IP": "4096",
    "MEDIANODE_HUB_SOCKETS_PER_IP": "4096",
    "MEDIANODE_HUB_JOIN_BURST": "100000",
    "MEDIANODE_HUB_JOINS_PER_MINUTE": "100000",
}


def serve(data: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        medianode(data, "serve", "--gateway", "127.0.0.1:0", "--no-s3", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-dht",
                  "--workers", "1", "--no-mdns", "--json"),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO,
        env={**os.environ, **ONE_PERSON_PER_VIEWER},
    )  # fmt: skip
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())["gateway"]


def swarm_stats(url: str, cid: str) -> dict[str, int]:
    import httpx

    return httpx.get(f"{url}/api/v1/swarm/{cid}/stats").json()  # type: ignore[no-any-return]


def share_run(browser: Any, url: str, cid: str, viewers: int, gap: float, failures: list[str], query: str = "") -> None:
    before = swarm_stats(url, cid)
    started = time.monotonic()
    pages = []
    for _ in range(viewers):
        pages.append(Viewer(browser, f"{url}/watch/{cid}{query}"))
        time.sleep(gap)
    ends = []
    drops = []
    for page in pages:
        try:
            ends.append(page.wait("s.ended && s.verified === s.pieces"))
        except RuntimeError as exc:
            failures.append(str(exc))
            ends.append(page.state())
        if page.errors:
            failures.append(f"page errors: {page.errors}")
        drops.append(page.drops)
    took = time.monotonic() - started
    time.sleep(2.5)  # both ends' last byte counts reach the hub once a second
    after = swarm_stats(url, cid)
    peers = after["bytes_from_peers"] - before["bytes_from_peers"]
    http = after["bytes_from_http"] - before["bytes_from_http"]
    print(f"\n1. {viewers} viewers joining {gap:g} s apart, all played to the end in {took:.1f} s")
    print("   viewer  from peers MB  from HTTP MB  peer share  stalls")
    for i, state in enumerate(ends):
        s = state["stats"] or {}
        p, h = s.get("bytesFromPeers", 0), s.get("bytesFromHttp", 0)
        reasons = collections.Counter(entry["reason"] for entry in state.get("trace", []))
        why = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
        stalls = s.get("stalls", 0)
        print(f"   {i + 1:>6}  {p / 1e6:>13.1f}  {h / 1e6:>12.1f}  {p / max(1, p + h):>9.0%}  {stalls:>6}   "
              f"HTTP pieces: {why}")  # fmt: skip
        if TRACE:
            sw = state.get("swarm") or {}
            known = f"known {sw.get('known')}, struck out {sw.get('struck')}, dropped {sw.get('dropped')}"
            print(f"          first frame at {s.get('firstFrameAt')} ms; peers {known}; rejects {sw.get('rejects')}")
            for why in drops[i]:
                print(f"          {why}")
            for e in state.get("trace", []):
                ahead = "-" if e.get("ahead") is None else f"{e['ahead']:+.2f}s"
                print(f"          t={e['t']} piece {e['i']} {e['reason']}: {ahead} ahead of playback, readyState "
                      f"{e.get('rs')}, {e.get('peers')} peers open, first frame shown {e.get('ff')}")  # fmt: skip
    share = peers / max(1, peers + http)
    ceiling = (viewers - 1) / viewers
    print(f"   all (hub's counts): {peers / 1e6:.1f} MB from peers, {http / 1e6:.1f} MB over HTTP: "
          f"share {share:.1%} (ceiling {ceiling:.0%}, target >= 80%)")  # fmt: skip
    for page in pages:
        page.close()


def ttff_runs(browser: Any, url: str, cid: str, runs: int, with_seeder: bool, failures: list[str]) -> None:
    seeder = None
    if with_seeder:
        seeder = Viewer(browser, f"{url}/watch/{cid}")
        seeder.wait("s.verified === s.pieces")
    times: dict[str, list[float]] = {"on": [], "off": []}
    for _ in range(runs):
        for mode, query in (("on", ""), ("off", "?p2p=0")):
            viewer = Viewer(browser, f"{url}/watch/{cid}{query}")
            try:
                state = viewer.wait("s.stats && s.stats.firstFrameAt !== null", timeout=30)
                times[mode].append(state["stats"]["firstFrameAt"])
            except RuntimeError as exc:
                failures.append(str(exc))
            viewer.close()
    if seeder:
        seeder.close()
    if not times["on"] or not times["off"]:
        return
    on, off = statistics.median(times["on"]), statistics.median(times["off"])
    label = "one viewer already seeding" if with_seeder else "no other viewer"
    runs_on, runs_off = (", ".join(f"{t:.0f}" for t in times[mode]) for mode in ("on", "off"))
    print(f"   {label:<28} P2P on {on:6.0f} ms   P2P off {off:6.0f} ms   on/off {on / off:.2f}"
          f"   (runs on: {runs_on}; off: {runs_off})")  # fmt: skip


def throughput_run(browser: Any, url: str, cid: str, size: int, failures: list[str]) -> None:
    source = Viewer(browser, f"{url}/watch/{cid}")
    source.wait("s.verified === s.pieces")
    fresh = Viewer(browser, f"{url}/watch/{cid}")
    state = fresh.wait("s.verified === s.pieces")
    s = state["stats"]
    if s["firstPeerByteAt"] is None or s["lastPeerByteAt"] <= s["firstPeerByteAt"]:
        failures.append(f"no peer transfer to time: {s}")
    else:
        first_piece = 262144
        rate = (s["bytesFromPeers"] - first_piece) / ((s["lastPeerByteAt"] - s["firstPeerByteAt"]) / 1000)
        print(f"   browser -> browser data channel: {s['bytesFromPeers'] / 1e6:.1f} MB at {rate / 1e6:.1f} MB/s "
              f"({s['bytesFromHttp'] / 1e6:.1f} MB over HTTP)")  # fmt: skip
    reference = fresh.page.evaluate(HTTP_REFERENCE, f"{url}/ipfs/{cid}")
    if reference["bytes"] != size:
        failures.append(f"HTTP reference got {reference['bytes']} bytes")
    print(f"   reference, HTTP from the gateway in the same page: {size / 1e6:.1f} MB at "
          f"{reference['bytes'] / reference['ms'] / 1e3:.1f} MB/s")  # fmt: skip
    source.close()
    fresh.close()


def seeder_run(browser: Any, url: str, cid: str, clip: Path, tmp: Path, failures: list[str]) -> None:
    data = tmp / "seeder"
    subprocess.run(medianode(data, "add", str(clip)), capture_output=True, check=True)
    config = data / "config.toml"
    text = config.read_text().replace("seed_hubs = []", f'seed_hubs = ["{url}"]')
    config.write_text(text.replace("loopback_only = false", "loopback_only = true"))
    proc, _ = serve(data)
    try:
        deadline = time.monotonic() + 30
        while swarm_stats(url, cid)["viewers"] < 1:
            if time.monotonic() > deadline:
                failures.append("the seeder never joined the hub")
                return
            time.sleep(0.2)
        viewer = Viewer(browser, f"{url}/watch/{cid}")
        s = viewer.wait("s.verified === s.pieces")["stats"]
        viewer.close()
        if s["firstPeerByteAt"] is None or s["lastPeerByteAt"] <= s["firstPeerByteAt"]:
            failures.append(f"nothing came from the seeding node: {s}")
            return
        rate = (s["bytesFromPeers"] - 262144) / ((s["lastPeerByteAt"] - s["firstPeerByteAt"]) / 1000)
        print(f"   node -> browser data channel (aiortc seeder): {s['bytesFromPeers'] / 1e6:.1f} MB at "
              f"{rate / 1e6:.1f} MB/s ({s['bytesFromHttp'] / 1e6:.1f} MB over HTTP)")  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--viewers", type=int, default=10)
    parser.add_argument("--gap", type=float, default=1.0)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--kbps", type=int, default=16000)
    parser.add_argument("--ttff-runs", type=int, default=5)
    parser.add_argument("--parts", default="share,ttff,throughput", help="which measurements, comma-separated")
    parser.add_argument("--interleaved", action="store_true", help="remux by time again (see interleave)")
    parser.add_argument("--p2p-off", action="store_true",
                        help="share part with ?p2p=0: the same viewers without peers, for their stalls")  # fmt: skip
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="medianode-viewers-") as tmp:
        clip = make_demo_clip(Path(tmp) / "clip.mp4", args.seconds, args.kbps)
        if args.interleaved:
            clip = interleave(clip, Path(tmp) / "interleaved.mp4")
        size = clip.stat().st_size
        data = Path(tmp) / "node"
        added = subprocess.run(medianode(data, "add", str(clip), "--json"), capture_output=True, text=True, check=True)
        cid = json.loads(added.stdout)["cid"]
        digest = hashlib.sha256(clip.read_bytes()).hexdigest()[:16]
        layout = "remuxed by time" if args.interleaved else "as make_demo_clip writes it"
        print(f"clip: {args.seconds} s H.264 at {args.kbps} kbit/s ({layout}), {size / 1e6:.1f} MB "
              f"({size / MiB:.1f} MiB), {-(-size // 262144)} pieces of 256 KiB; sha256 {digest}")  # fmt: skip
        proc, url = serve(data)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
                parts = args.parts.split(",")
                if "share" in parts:
                    share_run(browser, url, cid, args.viewers, args.gap, failures, "?p2p=0" if args.p2p_off else "")
                if "ttff" in parts:
                    print("\n2. time to first frame (median)")
                    ttff_runs(browser, url, cid, args.ttff_runs, False, failures)
                    ttff_runs(browser, url, cid, args.ttff_runs, True, failures)
                if "throughput" in parts:
                    print("\n3. throughput")
                    throughput_run(browser, url, cid, size, failures)
                    seeder_run(browser, url, cid, clip, Path(tmp), failures)
                browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    for failure in failures:
        print("FAILED:", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
