"""Feed benchmark: headless Chromium viewers swiping through a feed of clips, P2P on against off.

    python benchmarks/swipe.py [--viewers 8] [--clips 10] [--dwell 5] [--gap 2] [--seconds 8] [--kbps 4000]
                               [--runs 1] [--modes on,off]

Everything runs on 127.0.0.1: one ``medianode serve`` with ``--clips`` clips
pinned (``--seconds`` s of H.264 each, at ``--kbps`` plus a few kbit/s per
clip so that every clip is different bytes, audio and video interleaved as
real clips are: see ``viewers.interleave``) and Debian's Chromium (a browser
context per viewer). ``--viewers`` pages open ``/watch/feed`` one every
``--gap`` s; each stays ``--dwell`` s on a clip (counted from when its first
clip was shown, by a timer in the page) and swipes to the next (the
down-arrow key, which scrolls the feed as a swipe does) until it has stayed
on the last one.

Per mode (P2P on, then ``?p2p=0``), from the page's own records
(``window.medianodeFeed.swipes``: when the key was pressed, when the next
clip's first frame was presented, ``waiting`` events after it while on
screen) and, for P2P on, the hub's counts (peer bytes as far as sender and
receiver both reported them):

- share of bytes from peers over all the feed's clips (ceiling (N-1)/N: the
  first viewer has no one ahead of it);
- stalls per swipe (target 0);
- swipe to first frame of the next clip, median and p95 (target: on at most
  1.05x off).

A viewer that fails to show every clip, or a page error, fails the run (exit 1).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from viewers import ARGS, CHROMIUM, interleave, serve, swarm_stats

from benchlib import REPO, medianode

sys.path.insert(0, str(REPO))
from node.demo import make_demo_clip

TRACE = bool(os.environ.get("VIEWERS_TRACE"))
STATE = """() => {
  const s = window.medianodeFeed;
  if (!s) return null;
  const clips = {};
  for (const [cid, c] of s.clips) clips[cid] = c.stats ? {...c.stats, trace: c.trace} : null;
  return {index: s.index, error: s.error || null, swipes: s.swipes.map(({clip, ...r}) => r), clips,
          items: s.items.length};
}"""


# Run in each viewer's page before its scripts: once the feed shows its first slide, press the down arrow every
# dwell ms, `swipes` times, and say so a dwell after the last press.
SWIPER = """(() => {
  const start = () => {
    const feed = window.medianodeFeed;
    if (!feed || feed.index < 0) return setTimeout(start, 50);
    let pressed = 0;
    const timer = setInterval(() => {
      document.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowDown", bubbles: true }));
      if (++pressed < %(swipes)d) return;
      clearInterval(timer);
      setTimeout(() => (window.medianodeSwiped = true), %(dwell)d);
    }, %(dwell)d);
  };
  addEventListener("DOMContentLoaded", start);
})();"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


def run_mode(browser: Any, url: str, cids: list[str], args: argparse.Namespace, p2p: bool) -> dict[str, Any]:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    query = "" if p2p else "?p2p=0"
    before = {cid: swarm_stats(url, cid) for cid in cids}
    viewers: list[dict[str, Any]] = []
    start = time.monotonic()
    failures: list[str] = []
    last: dict[int, Any] = {}
    # Each viewer is opened at start + k * gap and swipes by itself (SWIPER, in the page): one thread pressing
    # every page's keys bunched the presses up behind a slow page load, and clips were swiped past early.
    for k in range(args.viewers):
        delay = start + k * args.gap - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        context = browser.new_context()
        context.add_init_script(SWIPER % {"dwell": round(args.dwell * 1000), "swipes": args.clips - 1})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
        page.goto(f"{url}/watch/feed{query}")
        viewers.append({"context": context, "page": page, "errors": errors})
    deadline = time.monotonic() + 60 + args.clips * args.dwell * 3
    for k, viewer in enumerate(viewers):
        try:
            viewer["page"].wait_for_function(
                "window.medianodeSwiped === true", timeout=max(1, deadline - time.monotonic()) * 1000
            )
        except PlaywrightTimeout:
            failures.append(f"viewer {k + 1} had not made its swipes by the deadline")
        last[k] = viewer["page"].evaluate(STATE)
    time.sleep(2.5)  # both ends' last byte counts reach the hub once a second
    after = {cid: swarm_stats(url, cid) for cid in cids}
    peers = sum(after[c]["bytes_from_peers"] - before[c]["bytes_from_peers"] for c in cids)
    http = sum(after[c]["bytes_from_http"] - before[c]["bytes_from_http"] for c in cids)
    to_frame: list[float] = []
    stalls: list[int] = []
    for k, viewer in enumerate(viewers):
        state = last.get(k)
        if not state or state["error"] or state["index"] != args.clips - 1:
            failures.append(f"viewer {k + 1} did not reach the last clip: {state and state['index']}, "
                            f"{state and state['error']}")  # fmt: skip
        if viewer["errors"]:
            failures.append(f"viewer {k + 1} page errors: {viewer['errors']}")
        for record in (state or {}).get("swipes", []):
            if record["firstFrameAt"] is None:
                failures.append(f"viewer {k + 1}: no first frame after the swipe to clip {record['index'] + 1}")
                continue
            to_frame.append(record["firstFrameAt"] - record["at"])
            stalls.append(record["stalls"])
            if TRACE:
                print(f"     viewer {k + 1} swipe to clip {record['index'] + 1}: shown after "
                      f"{record['shownAt'] - record['at']:.0f} ms, play() after {record['playAt'] - record['at']:.0f}"
                      f" ms, first frame after {record['firstFrameAt'] - record['at']:.0f} ms, readyState at play() "
                      f"{record['cached']}, pieces verified {record.get('verified')} of {record.get('pieces')}, "
                      f"stalls {record['stalls']}")  # fmt: skip
        if TRACE and state:
            for cid, stats in state["clips"].items():
                if not stats:
                    continue
                reasons = collections.Counter(e["reason"] for e in stats["trace"])
                print(f"     viewer {k + 1} clip {cids.index(cid) + 1}: peers {stats['bytesFromPeers'] / 1e6:.2f} MB, "
                      f"http {stats['bytesFromHttp'] / 1e6:.2f} MB, HTTP pieces: {dict(reasons)}")  # fmt: skip
        viewer["context"].close()
    return {"peers": peers, "http": http, "to_frame": to_frame, "stalls": stalls, "failures": failures}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--viewers", type=int, default=8)
    parser.add_argument("--clips", type=int, default=10)
    parser.add_argument("--dwell", type=float, default=5.0)
    parser.add_argument("--gap", type=float, default=2.0)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--kbps", type=int, default=4000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--modes", default="on,off")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="medianode-swipe-") as tmp:
        data = Path(tmp) / "node"
        cids: list[str] = []
        size = 0
        # Added last = newest = first in the feed: clip 1 is added last.
        for i in reversed(range(args.clips)):
            clip = make_demo_clip(Path(tmp) / f"demo{i}.mp4", args.seconds, args.kbps + 7 * i)
            clip = interleave(clip, Path(tmp) / f"clip{i}.mp4")
            size += clip.stat().st_size
            added = subprocess.run(medianode(data, "add", str(clip), "--json"), capture_output=True, text=True,
                                   check=True)  # fmt: skip
            cids.insert(0, json.loads(added.stdout)["cid"])
        print(f"feed: {args.clips} clips of {args.seconds} s H.264 at ~{args.kbps} kbit/s, {size / 1e6:.1f} MB in all; "
              f"{args.viewers} viewers joining {args.gap:g} s apart, {args.dwell:g} s per clip")  # fmt: skip
        proc, url = serve(data)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
                results: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
                for run in range(args.runs):
                    for mode in args.modes.split(","):
                        result = run_mode(browser, url, cids, args, mode == "on")
                        results[mode].append(result)
                        failures += result["failures"]
                        frames = result["to_frame"]
                        share = result["peers"] / max(1, result["peers"] + result["http"])
                        swipes = max(1, len(result["stalls"]))
                        line = f"run {run + 1} P2P {mode:<3}"
                        if frames:
                            line += (f"  swipe to first frame median {statistics.median(frames):4.0f} ms, "
                                     f"p95 {percentile(frames, 0.95):4.0f} ms")  # fmt: skip
                        line += f"; stalls per swipe {sum(result['stalls']) / swipes:.2f} ({sum(result['stalls'])})"
                        if mode == "on":
                            ceiling = (args.viewers - 1) / args.viewers
                            line += (f"; from peers {result['peers'] / 1e6:.1f} MB, HTTP {result['http'] / 1e6:.1f}"
                                     f" MB: share {share:.1%} (ceiling {ceiling:.1%})")  # fmt: skip
                        print(line, flush=True)
                on = [t for r in results["on"] for t in r["to_frame"]]
                off = [t for r in results["off"] for t in r["to_frame"]]
                if on and off:
                    median = statistics.median(on) / statistics.median(off)
                    p95 = percentile(on, 0.95) / percentile(off, 0.95)
                    print(f"all runs: swipe to first frame on/off: median {median:.2f}, p95 {p95:.2f} (target <= 1.05)")
                browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    for failure in failures:
        print("FAILED:", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
