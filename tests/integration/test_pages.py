"""The watch page and the feed as people use them, in real headless Chromium at desktop and phone size.

The pages talk to a real ``medianode serve`` on 127.0.0.1: the clip's facts and poster come from
``GET /api/v1/clip/{cid}`` and ``GET /api/v1/feed``, the bytes from the gateway and from other viewers
over real WebRTC. Each test leaves a screenshot in its tmp dir and in /tmp/screens/ to look at.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from conftest import PAGE_SIZES, SCREENSHOTS, Node, Served
from node.demo import make_demo_clip

WAIT = 30_000  # ms: Playwright's deadline for a condition
NAMES = ["Harbour at dawn.mp4", "second take.mp4", "third.mp4"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, list[str]]]:
    """A node with three pinned clips (three CIDs: the demo clip is the same bytes for the same length): 8 s at
    4 Mbit/s (about 4 MB, so a second viewer has pieces to take from the first), 5 s and 4 s. The feed lists
    them newest first: the last one added leads."""
    base = tmp_path_factory.mktemp("pages")
    files = [make_demo_clip(base / NAMES[0], 8, 4000), make_demo_clip(base / NAMES[1], 5),
             make_demo_clip(base / NAMES[2], 4)]  # fmt: skip
    node = Node(base / "node")
    cids = [node.ok("add", str(f), "--json").json["cid"] for f in files]
    served = Served(base / "node", args=("--no-dht",))
    yield served, cids
    served.stop()


class Viewer:
    """One person's browser at one size: its own context (Service Worker, cache), every console error and
    uncaught exception kept."""

    def __init__(self, browser: Any, size: str) -> None:
        self.size = size
        self.context = browser.new_context(**PAGE_SIZES[size])
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.closed = False
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.problems.append(f"uncaught: {exc}"))

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.problems.append(f"console: {message.text}")
        elif message.type == "warning":
            self.warnings.append(message.text)

    def until(self, condition: str, arg: Any = None) -> Any:
        try:
            return self.page.wait_for_function(condition, arg=arg, timeout=WAIT)
        except PlaywrightTimeout as exc:
            raise AssertionError(f"timed out waiting for {condition}: {self.state()}") from exc

    def state(self) -> str:
        """What the page's clip says of itself, with the page's warnings: for a failed wait's message."""
        try:
            clip = self.page.evaluate(CLIP_STATE)
        except PlaywrightError as exc:
            clip = f"unreadable: {exc}"
        return f"clip {clip}; warnings {self.warnings[-10:]}; problems {self.problems}"

    def text(self, selector: str) -> str:
        return str(self.page.locator(selector).first.text_content()).strip()

    def press(self, target: str) -> None:
        """A click with the mouse, or a tap with a finger on a touch screen."""
        if self.size == "phone":
            self.page.tap(target)
        else:
            self.page.click(target)

    def swipe(self, fraction: float) -> None:
        """A finger dragged up the screen (fraction > 0: towards the next clip) or down, as real touch input."""
        viewport = PAGE_SIZES[self.size]["viewport"]
        x, height = viewport["width"] / 2, viewport["height"]
        start = height * (0.8 if fraction > 0 else 0.2)
        cdp = self.context.new_cdp_session(self.page)
        cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": start}]})
        for step in range(1, 13):
            y = start - fraction * height * step / 12
            cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        cdp.detach()

    def screenshot(self, tmp_path: Path, name: str) -> Path:
        path = tmp_path / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, SCREENSHOTS / path.name)
        return path

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.context.close()


CLIP_STATE = """() => {
  const c = window.medianodeWatch && window.medianodeWatch.clip;
  if (!c) return null;
  return {stats: c.stats, peersOpen: c.peers(), joined: c.swarm !== null, myId: c.swarm && c.swarm.myId,
          verified: c.verifiedPieces(), trace: c.trace.slice(-12)};
}"""


@pytest.fixture
def people(browser: Any) -> Iterator[Any]:
    """Opens viewers for one test and closes every one when it ends, passed or failed: a viewer left open seeds
    the clip for the next test (a failed run once made the next test's first viewer take 81% from peers)."""
    opened: list[Viewer] = []

    def open_viewer(size: str) -> Viewer:
        viewer = Viewer(browser, size)
        opened.append(viewer)
        return viewer

    yield open_viewer
    for viewer in opened:
        viewer.close()


def poll(what: str, fetch: Any, ready: Any, timeout: float = 60) -> Any:
    """``fetch()`` again until ``ready(value)``, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if ready(value):
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {value}"
        time.sleep(0.25)


def clip_facts(served: Served, cid: str) -> dict[str, Any]:
    """The node's facts of a clip once its poster is made (posters may come a moment after the add)."""

    def fetch() -> Any:
        response = httpx.get(f"{served.url}/api/v1/clip/{cid}")
        return response.json() if response.status_code == 200 else response.status_code

    return poll(f"the facts and poster of {cid}", fetch, lambda v: isinstance(v, dict) and v.get("poster"))  # type: ignore[no-any-return]


def mib(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MiB"  # the pages' formatBytes for sizes of a MiB and more


def clock(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


POSTER_SHOWN = """([poster]) => {
  const v = document.getElementById('video');
  return v.getAttribute('poster') === poster && v.readyState === 0
    && performance.getEntriesByName(new URL(poster, location.href).href).length > 0;
}"""
METER = "(id) => parseFloat(document.getElementById(id).style.width) > 0"


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_watch_page_shows_the_clip_its_poster_and_where_its_bytes_come_from(people, clips, size, tmp_path) -> None:  # type: ignore[no-untyped-def]
    served, cids = clips
    cid = cids[0]
    facts = clip_facts(served, cid)
    assert facts["cid"] == cid and facts["name"] == NAMES[0] and facts["poster"].startswith("/ipfs/")
    url = f"{served.url}/watch/{cid}"

    first = people(size)
    # Hold the clip's own bytes back: while they are on their way the page shows the poster.
    held: list[Any] = []
    clip_bytes = re.compile(rf"/ipfs/{cid}(\?|$)")

    def of_the_clip(url: str) -> bool:
        return bool(clip_bytes.search(url))

    holding = [True]
    first.page.route(of_the_clip, lambda route: held.append(route) if holding[0] else route.continue_())
    first.page.goto(url)
    first.until(POSTER_SHOWN, [facts["poster"]])
    assert first.text("#clipName") == NAMES[0]
    first.screenshot(tmp_path, f"watch-{size}-loading")
    holding[0] = False  # from now on straight through
    assert held
    for route in held:
        route.continue_()

    first.until("document.getElementById('video').currentTime > 0.5")
    assert first.page.evaluate("window.medianodeWatch.mode") == "verified"
    assert first.text("#clipName") == NAMES[0] and first.text("#clipCid") == cid
    assert first.text("#clipSize") == mib(facts["size"])
    assert first.text("#clipDuration") == clock(facts["duration"])
    assert first.text("#clipDimensions") == f"{facts['width']}\N{MULTIPLICATION SIGN}{facts['height']}"
    assert first.page.title() == f"{NAMES[0]} · medianode"
    # The meter fills from this node as bytes arrive.
    first.until(METER, "meterHttp")
    assert first.text("#httpBytes") != "0 B" and first.text("#peerBytes").startswith("0 B")
    first.until("() => { const c = window.medianodeWatch.clip; return c.verifiedPieces() === c.pieces.length; }")

    # A second viewer takes pieces from the first: its meter shows them, the first's shows them given.
    second = people(size)
    second.page.goto(url)
    second.until(METER, "meterPeer")
    assert second.text("#peerBytes") != "0 B"
    first.until(METER, "meterSent")
    assert first.text("#sentBytes") != "0 B"
    assert first.page.evaluate("window.medianodeWatch.clip.bytesToPeers()") > 0
    second.until("document.getElementById('video').currentTime > 1.0")
    explained = second.text("#p2pExplain")
    assert "verified pieces of this clip" in explained and "other viewers of this clip" in explained
    assert "WebRTC" in explained and "Never anything else" in explained
    second.screenshot(tmp_path, f"watch-{size}")
    first.screenshot(tmp_path, f"watch-{size}-giving")
    assert first.problems == [] and second.problems == []
    for viewer in (first, second):
        viewer.close()


def answering(answer: dict[str, Any]) -> Any:
    return lambda route: route.fulfill(**answer)


def test_watch_page_without_the_clips_facts_shows_its_cid_and_plays(people, clips) -> None:  # type: ignore[no-untyped-def]
    """An older node (no /api/v1/clip) or facts with nothing in them: the CID stands for the clip."""
    served, cids = clips
    cid = cids[1]
    for answer in ({"status": 404, "body": "not found"}, {"status": 200, "json": {"cid": cid}}):
        viewer = people("desktop")
        viewer.page.route(f"**/api/v1/clip/{cid}", answering(answer))
        viewer.page.goto(f"{served.url}/watch/{cid}")
        viewer.until("document.getElementById('video').currentTime > 0.5")
        viewer.until("window.medianodeWatch.facts !== null")
        assert viewer.text("#clipName") == cid
        assert viewer.page.locator("#clipFacts").is_hidden() and viewer.page.locator("#clipCid").is_hidden()
        assert viewer.page.evaluate("document.getElementById('video').getAttribute('poster')") is None
        assert viewer.page.evaluate("window.medianodeWatch.error") is None
        if answer["status"] == 404:  # the failed request itself is the one line in red, as in any browser
            assert len(viewer.problems) == 1 and "404" in viewer.problems[0], viewer.problems
        else:
            assert viewer.problems == []
        viewer.close()


FEED = "window.medianodeFeed"
# The slide is on screen, scrolled into place (not still on its way there), and playing.
SLIDE_PLAYS = """([index, after]) => {
  const s = window.medianodeFeed, v = document.querySelector(`video[data-cid="${s.items[index].cid}"]`);
  const feed = document.getElementById('feed'), settled = Math.abs(feed.scrollTop - v.closest('section').offsetTop) < 1;
  return s.index === index && settled && !v.paused && v.currentTime > after;
}"""
POSTERS_BEFORE_PLAY = """() => {
  const s = window.medianodeFeed;
  return s.items.length > 0 && s.items.every((item, i) => {
    const v = document.querySelector(`video[data-cid="${item.cid}"]`);
    if (!v) return false;
    const loaded = performance.getEntriesByName(new URL(item.poster, location.href).href).length > 0;
    const idle = !v.getAttribute('src') && v.readyState === 0;
    return v.getAttribute('poster') === item.poster && loaded && (i === 0 || idle);
  });
}"""


def current_video(viewer: Viewer, prop: str) -> Any:
    return viewer.page.evaluate(
        f'(() => {{ const s = {FEED}; return document.querySelector(`video[data-cid="${{s.current}}"]`).{prop}; }})()'
    )


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_feed_posters_navigation_pause_and_sound(people, clips, size, tmp_path) -> None:  # type: ignore[no-untyped-def]
    served, cids = clips

    def feed() -> Any:
        return httpx.get(f"{served.url}/api/v1/feed").json()["clips"]

    items = poll("a poster for every clip in the feed", feed, lambda v: len(v) == 3 and all(c.get("poster") for c in v))
    assert [item["cid"] for item in items] == cids[::-1]
    viewer = people(size)
    viewer.page.goto(f"{served.url}/watch/feed")
    # Every slide has its poster; those after the first have not started loading their clip.
    viewer.until(POSTERS_BEFORE_PLAY)
    viewer.until(SLIDE_PLAYS, [0, 0.3])
    assert viewer.page.locator("section").nth(0).locator(".name").text_content() == NAMES[2]
    assert viewer.page.locator("section").nth(1).locator(".name").text_content() == NAMES[1]
    assert viewer.text("#count") == "1 / 3"

    # Autoplay starts muted; the switch turns sound on, and it stays on for the next clips.
    assert viewer.page.evaluate(f"{FEED}.muted") is True and current_video(viewer, "muted") is True
    viewer.press("#sound")
    viewer.until(f'!{FEED}.muted && !document.querySelector(`video[data-cid="${{{FEED}.current}}"]`).muted')
    assert viewer.page.get_attribute("#sound", "aria-pressed") == "true"
    sound = viewer.page.locator("#sound")
    assert sound.locator(".sound-icon").is_visible() and sound.locator(".muted-icon").is_hidden()

    if size == "phone":
        viewer.swipe(0.6)
        viewer.until(SLIDE_PLAYS, [1, 0.3])
        viewer.swipe(-0.6)
        viewer.until(SLIDE_PLAYS, [0, 0.3])
    viewer.page.keyboard.press("ArrowDown")
    viewer.until(SLIDE_PLAYS, [1, 0.3])
    assert current_video(viewer, "muted") is False  # the sound switch holds across slides
    viewer.page.keyboard.press("ArrowUp")
    viewer.until(SLIDE_PLAYS, [0, 0.3])
    viewer.page.keyboard.press("PageDown")
    viewer.until(SLIDE_PLAYS, [1, 0.3])
    assert viewer.text("#count") == "2 / 3"
    if size == "phone":
        viewer.swipe(0.6)
        viewer.until(SLIDE_PLAYS, [2, 0.3])
        viewer.swipe(-0.6)
        viewer.until(SLIDE_PLAYS, [1, 0.3])

    # A tap on the clip pauses it, another resumes it.
    slide = "section:nth-of-type(2) .frame"
    viewer.press(slide)
    viewer.until(f"document.querySelector('{slide} video').paused && document.querySelector('{slide}')"
                 ".closest('section').classList.contains('paused')")  # fmt: skip
    paused_at = current_video(viewer, "currentTime")
    viewer.press(slide)
    viewer.until(SLIDE_PLAYS, [1, paused_at + 0.3])
    viewer.until(f"() => {{ const s = {FEED}.clips.get({FEED}.current); return s && s.verifiedPieces() > 0; }}")
    viewer.until("document.querySelector('section:nth-of-type(2) .stats').textContent !== ''")
    viewer.screenshot(tmp_path, f"feed-{size}")
    assert viewer.problems == []
    viewer.close()
