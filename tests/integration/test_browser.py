"""A real browser (Debian's Chromium, headless, driven by Playwright) plays and seeks a stored MP4."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from conftest import Served
from node.demo import make_demo_clip

PAGE = """<!doctype html><meta charset=utf-8><title>clip</title>
<video id=v src="clip.mp4" muted playsinline preload=auto></video>"""


def make_site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    make_demo_clip(site / "clip.mp4", seconds=8)
    (site / "index.html").write_text(PAGE)
    return site


def play_and_seek(browser, url: str) -> None:  # type: ignore[no-untyped-def]
    """Open the page, play, seek to 6 s, keep playing; fail on any media or page error."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url, wait_until="load")
    page.wait_for_function("document.getElementById('v').readyState >= 2", timeout=30_000)
    duration = page.evaluate("document.getElementById('v').duration")
    assert 7.5 < duration < 8.5
    page.evaluate("document.getElementById('v').play()")
    page.wait_for_function("document.getElementById('v').currentTime > 0.5", timeout=20_000)
    seeked = page.evaluate(
        """() => new Promise((resolve, reject) => {
            const v = document.getElementById('v');
            v.addEventListener('seeked', () => resolve(v.currentTime), {once: true});
            v.addEventListener('error', () => reject(new Error('media error ' + v.error.code)), {once: true});
            v.currentTime = 6.0;
        })"""
    )
    assert 5.9 < seeked < 6.5
    page.wait_for_function("document.getElementById('v').currentTime > 6.3", timeout=20_000)
    assert page.evaluate("document.getElementById('v').error") is None
    assert errors == []
    page.close()


def test_video_plays_and_seeks_from_the_gateway(served: Served, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cid = served.node.ok("add", "-r", str(make_site(tmp_path)), "--json").json["cid"]
    play_and_seek(browser, f"{served.url}/ipfs/{cid}/")
    metrics = httpx.get(f"{served.url}/metrics").text
    partial = re.search(r'medianode_http_requests_total\{method="GET",route="ipfs",status="206"\} (\d+)', metrics)
    assert partial and int(partial.group(1)) >= 1, "the player should have used Range requests"


def test_video_plays_through_a_node_that_fetches_it_from_two_others(browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The clip is added on A and B; C, connected to both, has nothing and serves the page and the
    video to the browser, fetching blocks from A and B as the player asks."""
    site = make_site(tmp_path)
    a = Served(tmp_path / "a")
    b = Served(tmp_path / "b")
    c = None
    try:
        cid = a.node.ok("add", "-r", str(site), "--json").json["cid"]
        assert b.node.ok("add", "-r", str(site), "--json").json["cid"] == cid
        c = Served(tmp_path / "c", bootstrap=(a.swarm_addrs[0], b.swarm_addrs[0]))
        play_and_seek(browser, f"{c.url}/ipfs/{cid}/")
        metrics = httpx.get(f"{c.url}/metrics").text
        fetched = re.search(r"^medianode_bitswap_blocks_fetched_total (\S+)", metrics, re.MULTILINE)
        assert fetched and float(fetched.group(1)) >= 3
    finally:
        assert a.stop() == 0
        assert b.stop() == 0
        if c is not None:
            assert c.stop() == 0
