"""The operator's console at ``/`` in real headless Chromium, against a real ``medianode serve``.

Read-only without a login (and writes refused), the login link ``medianode console`` prints, uploads through
the page's own file input over tus (the CID ``medianode add`` gives the same bytes), the charts filling with
real traffic, tokens and S3 keys shown once and revoked, and a CID pinned from another node over the swarm.
Screenshots at desktop and phone size are left in each test's tmp dir and in /tmp/screens/.
"""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import PAGE_SIZES, REPO, SCREENSHOTS, Node, Served, gen
from node.demo import make_demo_clip

WAIT = 60_000  # ms: Playwright's deadline for a condition (the page refreshes every 5 s, the sampler too)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = Served(tmp_path / "served")
    yield server
    assert server.stop() == 0


@pytest.fixture
def served_by_workers(tmp_path: Path) -> Iterator[Served]:
    """Two serving workers in front: the console's requests pass through them, /ipfs/ reads are theirs."""
    server = Served(tmp_path / "served", workers=2)
    yield server
    assert server.stop() == 0


def admin_token(served: Served) -> str:
    return str(json.loads((served.data_dir / "api.json").read_text())["token"])


class Console:
    """One browser context on the console; every console error and uncaught exception is kept."""

    def __init__(self, browser: Any, served: Served, size: str = "desktop") -> None:
        self.served = served
        self.context = browser.new_context(**PAGE_SIZES[size])
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.problems.append(f"uncaught: {exc}"))
        self.page.on("dialog", lambda dialog: dialog.accept())  # the confirm() before unpin and revoke

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.problems.append(f"console: {message.text} ({message.location.get('url')})")

    def open(self, fragment: str = "") -> None:
        self.page.goto(f"{self.served.url}/{fragment}", wait_until="load")
        self.until("document.body.dataset.role !== undefined")

    def login(self) -> None:
        self.open(f"#login={admin_token(self.served)}")
        self.until("document.body.dataset.role === 'admin'")

    def tab(self, name: str) -> None:
        self.page.click(f"#tabs a[data-tab={name}]")
        self.until(f"!document.getElementById('tab-{name}').hidden")

    def until(self, condition: str, arg: Any = None) -> Any:
        """Wait for ``condition`` (an expression, or a function of ``arg``) to hold. An expression is made a
        function: Playwright evaluates expressions with eval(), which the page's CSP refuses."""
        function = condition if condition.startswith("(") else f"() => ({condition})"
        return self.page.wait_for_function(function, arg=arg, timeout=WAIT)

    def fetch_status(self, path: str, method: str, headers: dict[str, str], body: str | None = None) -> int:
        """The status the page's own fetch() gets."""
        return int(self.page.evaluate(
            "([path, method, headers, body]) => fetch(path, {method, headers, body}).then((r) => r.status)",
            [path, method, headers, body],
        ))  # fmt: skip

    def screenshot(self, tmp_path: Path, name: str, full_page: bool = False) -> Path:
        path = tmp_path / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, SCREENSHOTS / path.name)
        return path

    def close(self) -> None:
        self.context.close()


def test_without_a_login_the_console_is_read_only_and_writes_are_refused(browser: Any, served: Served) -> None:
    home = httpx.get(f"{served.url}/")
    assert home.status_code == 200 and home.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in home.headers["content-security-policy"]
    assert "set-cookie" not in home.headers
    for static in ("/console/index.html", "/console/console.js", "/console/console.css"):
        answer = httpx.get(f"{served.url}{static}")
        assert answer.status_code == 200 and answer.headers["x-frame-options"] == "DENY", static
    console = Console(browser, served)
    console.open()
    console.until("(peer) => document.getElementById('st-peer-id').textContent === peer", served.peer_id)
    page = console.page
    assert page.locator("#readonly-banner").is_visible()
    assert page.locator("#role-badge").text_content() == "Read-only"
    assert "medianode console" in str(page.locator("#readonly-banner").text_content())
    assert page.locator("#st-addrs li code").first.text_content() == served.swarm_addrs[0]
    assert console.problems == []
    console.tab("upload")
    assert page.locator("#upload-locked").is_visible() and page.locator("#file-input").is_disabled()
    console.tab("access")
    assert page.locator("#access-locked").is_visible() and not page.locator("#tokens-card").is_visible()
    # The page's own requests without a credential, and with an upload token where the admin's is needed.
    json_body = {"Content-Type": "application/json"}
    assert console.fetch_status("/api/v1/console/tokens", "POST", json_body, '{"name": "x"}') == 401
    assert console.fetch_status("/api/v1/console/tokens", "GET", {}) == 401
    assert console.fetch_status("/api/v1/console/s3/keys", "POST", json_body, '{"name": "x"}') == 401
    assert console.fetch_status("/api/v1/console/pins", "POST", json_body, '{"cid": "bafkqaaa"}') == 401
    assert console.fetch_status("/api/v1/uploads", "POST", {"Tus-Resumable": "1.0.0", "Upload-Length": "3"}) == 401
    assert console.fetch_status("/api/v1/console/tokens", "GET", {"Authorization": "Bearer not-the-token"}) == 401
    upload_token = served.node.ok("token", "create", "--name", "uploader").text.strip().splitlines()[-1]
    bearer = {"Authorization": f"Bearer {upload_token}", **json_body}
    assert console.fetch_status("/api/v1/console/tokens", "POST", bearer, '{"name": "x"}') == 403
    assert [t["name"] for t in json.loads(served.node.ok("token", "ls", "--json").text)["tokens"]] == ["uploader"]
    # A login link with a token that is not this run's admin token (a restart's old one, or someone's upload
    # token) logs nobody in, and says why.
    for fragment, why in (("#login=an-old-token", "not valid any more"), (f"#login={upload_token}", "paste it")):
        console.open(fragment)
        console.until("!document.getElementById('login-error').hidden")
        assert why in str(page.locator("#login-error").text_content())
        assert page.evaluate("sessionStorage.getItem('medianode.console.token')") is None
        assert page.locator("#role-badge").text_content() == "Read-only"
    console.close()


def test_upload_through_the_page_stores_what_add_stores(
    browser: Any, served_by_workers: Served, tmp_path: Path
) -> None:
    served = served_by_workers
    files = {"clip one.bin": gen(9 * 1024 * 1024 + 12345, b"console-1"), "notes.txt": b"hello from the console\n"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    reference = Node(tmp_path / "reference")  # another node: what `medianode add --json` prints for these bytes
    expected = {name: reference.ok("add", str(tmp_path / name), "--json").json["cid"] for name in files}
    console = Console(browser, served)
    console.login()
    token = admin_token(served)
    assert token not in console.page.url, "the login fragment stays out of the address bar"
    assert console.page.evaluate("sessionStorage.getItem('medianode.console.token')") == token
    assert console.page.locator("#role-badge").text_content() == "Admin"
    assert console.page.locator("#readonly-banner").is_hidden()
    console.tab("upload")
    console.page.set_input_files("#file-input", [str(tmp_path / name) for name in files])
    console.until(
        "document.querySelectorAll('.upload.done').length === 2 || !!document.querySelector('.upload.failed')"
    )
    assert console.page.locator(".upload.failed").count() == 0, console.page.locator(".upload.failed").text_content()
    shown = {
        str(row.locator(".fname").text_content()): row.get_attribute("data-cid")
        for row in console.page.locator(".upload.done").all()
    }
    assert shown == expected
    attachment = json.loads(str(console.page.locator(".upload.done pre.json").first.text_content()))
    assert attachment["type"] == "Document" and attachment["digestMultibase"]
    for name, cid in expected.items():
        assert served.node.ok("stat", cid, "--json").json["pinned"]
        assert httpx.get(f"{served.url}/ipfs/{cid}").content == files[name]
    console.screenshot(tmp_path, "console-upload-desktop")
    # The library lists them, newest first, with their names; unpin from the page.
    console.tab("library")
    console.until("document.querySelectorAll('#lib-items .item').length === 2")
    names = console.page.locator("#lib-items .item .name").all_text_contents()
    assert sorted(names) == sorted(files)
    console.screenshot(tmp_path, "console-library-desktop")
    console.page.click(f".item[data-cid='{expected['notes.txt']}'] button.danger")
    console.until("document.querySelectorAll('#lib-items .item').length === 1")
    assert not served.node.ok("stat", expected["notes.txt"], "--json").json["pinned"]
    # Uploads with the admin token are counted under the `console` account.
    accounts = {t["name"]: t for t in json.loads(served.node.ok("token", "ls", "--json").text)["tokens"]}
    assert accounts["console"]["used"] == sum(len(data) for data in files.values())
    assert console.problems == []
    console.close()


def test_charts_fill_with_traffic(browser: Any, served_by_workers: Served, tmp_path: Path) -> None:
    served = served_by_workers  # the bytes are served by the workers and counted by the main process
    data = gen(3 * 1024 * 1024, b"console-charts")
    (tmp_path / "served.bin").write_bytes(data)
    cid = served.node.ok("add", str(tmp_path / "served.bin"), "--json").json["cid"]
    for _ in range(4):
        assert httpx.get(f"{served.url}/ipfs/{cid}").content == data
    for size in ("desktop", "phone"):
        console = Console(browser, served, size)
        console.open()
        console.until("(least) => Number(document.getElementById('chart-http').dataset.total) >= least", 4 * len(data))
        console.until("Number(document.getElementById('chart-storage').dataset.total) > 0")
        assert console.page.locator("#chart-http svg path.line").count() == 1
        assert console.page.locator("#chart-storage svg path.line").count() == 2
        assert console.page.locator("#st-pins").text_content() == "1"
        console.screenshot(tmp_path, f"console-{size}")
        console.screenshot(tmp_path, f"console-{size}-full", full_page=True)
        assert console.problems == []
        console.close()
    series = httpx.get(f"{served.url}/api/v1/console/history", params={"span": 900}).json()
    assert series["totals"]["http"] >= 4 * len(data)
    assert max(rate for rate in series["rates"]["http"] if rate is not None) > 0


def test_tokens_and_keys_are_shown_once_and_revoked(browser: Any, served: Served, tmp_path: Path) -> None:
    console = Console(browser, served)
    console.login()
    console.tab("access")
    page = console.page
    page.fill("#token-name", "social.example")
    page.fill("#token-limit", "2GiB")
    page.click("#token-form button[type=submit]")
    console.until("!document.getElementById('token-secret').hidden")
    secret = str(page.locator("#token-secret code.secret-value").text_content())
    assert secret.startswith("mn_")
    console.until("!!document.querySelector('#token-table tr[data-name=\"social.example\"]')")
    assert "2.00 GiB" in str(page.locator('#token-table tr[data-name="social.example"]').text_content())
    # The token works for the upload API; nothing shows it again.
    added = httpx.post(f"{served.url}/api/v1/add", params={"filename": "a.txt"}, content=b"a",
                       headers={"Authorization": f"Bearer {secret}"})  # fmt: skip
    assert added.status_code == 201
    listed = httpx.get(
        f"{served.url}/api/v1/console/tokens", headers={"Authorization": f"Bearer {admin_token(served)}"}
    )
    assert secret not in listed.text
    page.fill("#key-name", "mastodon.example")
    page.fill("#key-buckets", "mastodon-media")
    page.click("#key-form button[type=submit]")
    console.until("!document.getElementById('key-secret').hidden")
    key_id, key_secret = page.locator("#key-secret code.secret-value").all_text_contents()
    assert key_id.startswith("MN") and len(key_secret) >= 30
    console.until("!!document.querySelector('#key-table tr[data-name=\"mastodon.example\"]')")
    keys = json.loads(served.node.ok("s3", "key", "ls", "--json").text)["keys"]
    assert [(k["name"], k["access_key_id"], k["buckets"]) for k in keys] == [
        ("mastodon.example", key_id, ["mastodon-media"])
    ]
    console.screenshot(tmp_path, "console-access-desktop")
    page.reload()
    console.until("document.body.dataset.role === 'admin'")  # the tab stays logged in
    console.tab("access")
    console.until("!!document.querySelector('#key-table tr[data-name=\"mastodon.example\"]')")
    content = page.content()
    assert secret not in content and key_secret not in content
    # Revoke both from the page.
    page.click('#token-table tr[data-name="social.example"] button.danger')
    console.until("!document.querySelector('#token-table tr[data-name=\"social.example\"]')")
    refused = httpx.post(f"{served.url}/api/v1/add", content=b"b", headers={"Authorization": f"Bearer {secret}"})
    assert refused.status_code == 401
    page.click('#key-table tr[data-name="mastodon.example"] button.danger')
    console.until("!document.querySelector('#key-table tr[data-name=\"mastodon.example\"]')")
    assert json.loads(served.node.ok("s3", "key", "ls", "--json").text)["keys"] == []
    # What the page's JSON API refuses: what is not there, a path for a CID, a bad limit.
    admin = {"Authorization": f"Bearer {admin_token(served)}"}
    api = f"{served.url}/api/v1/console"
    assert httpx.delete(f"{api}/tokens/social.example", headers=admin).status_code == 404
    assert httpx.delete(f"{api}/s3/keys/mastodon.example", headers=admin).status_code == 404
    assert httpx.post(f"{api}/pins", json={"cid": "bafkqaaa/a/b"}, headers=admin).status_code == 400
    assert httpx.post(f"{api}/tokens", json={"name": "x", "limit": "lots"}, headers=admin).status_code == 400
    assert httpx.post(f"{api}/tokens", content=b"[1]", headers=admin).status_code == 400
    assert console.problems == []
    console.close()


def test_an_upload_token_logs_in_to_upload_only(browser: Any, served: Served, tmp_path: Path) -> None:
    token = served.node.ok("token", "create", "--name", "pixelfed.example").text.strip().splitlines()[-1]
    (tmp_path / "photo.bin").write_bytes(gen(70_000, b"console-uploader"))
    console = Console(browser, served, "phone")
    console.open()
    console.page.fill("#login-token", token)
    console.page.click("#login-form button[type=submit]")
    console.until("document.body.dataset.role === 'uploader'")
    assert "pixelfed.example" in str(console.page.locator("#role-badge").text_content())
    console.tab("upload")
    console.page.set_input_files("#file-input", str(tmp_path / "photo.bin"))
    console.until("!!document.querySelector('.upload.done')")
    accounts = {t["name"]: t["used"] for t in json.loads(served.node.ok("token", "ls", "--json").text)["tokens"]}
    assert accounts == {"pixelfed.example": 70_000}
    console.screenshot(tmp_path, "console-upload-phone")
    console.tab("access")
    assert console.page.locator("#access-locked").is_visible()
    assert console.problems == []
    console.close()


def test_a_cid_another_node_has_is_fetched_and_pinned(browser: Any, tmp_path: Path) -> None:
    a = Served(tmp_path / "a")
    b = None
    try:
        data = gen(2 * 1024 * 1024 + 7, b"console-swarm")
        (tmp_path / "remote.bin").write_bytes(data)
        cid = a.node.ok("add", str(tmp_path / "remote.bin"), "--json").json["cid"]
        b = Served(tmp_path / "b", bootstrap=(a.swarm_addrs[0],))
        console = Console(browser, b)
        console.login()
        console.tab("library")
        assert console.page.locator("#lib-empty").is_visible()
        console.page.fill("#pin-cid", cid)
        console.page.click("#pin-form button[type=submit]")
        console.until("document.querySelectorAll('#lib-items .item').length === 1")
        assert console.page.locator("#lib-items .item").get_attribute("data-cid") == cid
        assert b.node.ok("stat", cid, "--json").json["pinned"]
        assert httpx.get(f"{b.url}/ipfs/{cid}").content == data
        # A CID nobody has: the failure is shown and can be dismissed.
        missing = Node(tmp_path / "nobody")
        (tmp_path / "nobody.bin").write_bytes(b"nobody has this")
        absent = missing.ok("add", str(tmp_path / "nobody.bin"), "--json").json["cid"]
        console.page.fill("#pin-cid", absent)
        console.page.click("#pin-form button[type=submit]")
        console.until("!!document.querySelector('#lib-pending li.failed')")
        console.page.click("#lib-pending li.failed button")
        console.until("!document.querySelector('#lib-pending li')")
        assert console.problems == []
        console.close()
    finally:
        assert a.stop() == 0
        if b is not None:
            assert b.stop() == 0


def test_console_command_prints_the_login_link(served: Served, node: Node) -> None:
    token = admin_token(served)
    shown = served.node.ok("console", "--json").json
    assert shown["login_url"] == f"{served.url}/#login={token}"
    assert shown["console"] == f"{served.url}/"
    assert served.node.ok("console", "--url").text.strip() == shown["login_url"]
    assert re.search(r"^console: http://\S+/#login=\S+$", served.node.ok("console").text, re.MULTILINE)
    assert served.ready["console"] == f"{served.url}/"  # serve's own JSON line: the address, never the token
    assert token not in json.dumps(served.ready)
    node.fails("console", match="serve is not running")


def test_a_clip_shows_its_poster_and_what_its_viewers_took(browser: Any, served: Served, tmp_path: Path) -> None:
    clip = make_demo_clip(tmp_path / "Harbour at dawn.mp4", 6)
    cid = served.node.ok("add", str(clip), "--json").json["cid"]
    console = Console(browser, served)
    console.open("#library")
    item = f"#lib-items .item[data-cid='{cid}']"
    console.until(f'!!document.querySelector("{item} .thumb img")?.naturalWidth')
    assert console.page.locator(f"{item} a", has_text="Watch").get_attribute("href") == f"/watch/{cid}"
    # A viewer plays it on its watch page; the hub counts what it took, and the library and the charts show it.
    viewer = browser.new_context(viewport={"width": 390, "height": 844})
    watch = viewer.new_page()
    watch.goto(f"{served.url}/watch/{cid}", wait_until="load")
    console.until(f'Number(document.querySelector("{item}")?.dataset.http) > 0')
    assert "HTTP" in str(console.page.locator(f"{item} .stats").text_content())
    console.screenshot(tmp_path, "console-library-clip-desktop")
    console.tab("overview")
    console.until("Number(document.getElementById('chart-viewers').dataset.total) > 0")
    viewer.close()
    assert console.problems == []
    console.close()


def test_reached_by_another_address_it_says_how_to_log_in(browser: Any, tmp_path: Path) -> None:
    served = Served(tmp_path / "served", args=("--gateway", "127.0.0.2:0"))  # not the name the node's machine uses
    try:
        assert served.url.startswith("http://127.0.0.2:")
        console = Console(browser, served, "phone")
        console.open()
        banner = console.page.locator("#readonly-banner")
        console.until("document.getElementById('readonly-why').textContent.includes('without a login')")
        assert "127.0.0.2" in str(banner.text_content()) and "medianode console" in str(banner.text_content())
        assert console.page.locator("#login-form").is_visible()
        console.screenshot(tmp_path, "console-remote-phone")
        assert console.problems == []
        console.close()
    finally:
        assert served.stop() == 0


def test_serve_on_a_terminal_prints_the_login_link_first(tmp_path: Path) -> None:
    """``serve --demo`` on a terminal (a pty here): its first line is the console's login link, with the token of
    api.json; off a terminal (a service's log) the address alone, as ``Served`` reads it."""
    data_dir = tmp_path / "node"
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "serve", "--demo", "--gateway", "127.0.0.1:0", "--no-s3",
         "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--workers", "1"],
        stdout=secondary, stderr=subprocess.PIPE, env={**os.environ, "MEDIANODE_DATA": str(data_dir)}, cwd=REPO,
    )  # fmt: skip
    os.close(secondary)
    try:
        output = b""
        while b"stop with" not in output:
            chunk = os.read(primary, 4096)
            assert chunk, f"serve ended: {proc.stderr.read() if proc.stderr else ''}"
            output += chunk
        lines = output.decode().splitlines()
        token = json.loads((data_dir / "api.json").read_text())["token"]
        base = json.loads((data_dir / "api.json").read_text())["url"]
        assert lines[0] == f"console (open this to manage the node): {base}/#login={token}"
        assert any(line.startswith("demo clip: ") for line in lines)
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        os.close(primary)


def test_an_interrupted_upload_resumes_where_it_stopped(browser: Any, served: Served, tmp_path: Path) -> None:
    """The connection breaks under the second PATCH (Playwright aborts it on its way out): the page asks the
    node where the upload stands (HEAD) and sends only the rest; the stored file is the whole one."""
    data = gen(8 * 1024 * 1024 + 300_000, b"console-resume")
    (tmp_path / "long take.bin").write_bytes(data)
    expected = Node(tmp_path / "reference").ok("add", str(tmp_path / "long take.bin"), "--json").json["cid"]
    console = Console(browser, served)
    console.login()
    console.tab("upload")
    seen: list[tuple[str, str]] = []

    def cut_the_second_patch(route: Any) -> None:
        request = route.request
        patches = [method for method, _ in seen if method == "PATCH"]
        seen.append((request.method, str(request.headers.get("upload-offset"))))
        if request.method == "PATCH" and len(patches) == 1:
            route.abort("connectionreset")
        else:
            route.continue_()

    console.page.route("**/api/v1/uploads/*", cut_the_second_patch)
    console.page.set_input_files("#file-input", str(tmp_path / "long take.bin"))
    console.until("!!document.querySelector('.upload.done') || !!document.querySelector('.upload.failed')")
    assert console.page.locator(".upload.done").get_attribute("data-cid") == expected
    chunk = str(8 * 1024 * 1024)
    assert seen == [("PATCH", "0"), ("PATCH", chunk), ("HEAD", "None"), ("PATCH", chunk)]
    assert httpx.get(f"{served.url}/ipfs/{expected}").content == data
    # Chromium reports the cut request itself, and nothing else.
    assert [p for p in console.problems if "ERR_CONNECTION_RESET" not in p] == []
    assert len(console.problems) == 1
    console.close()


EVIL_PAGE = """<!doctype html><meta charset=utf-8><title>stored page</title><script>
let token = null, storage = "blocked", answer = "none";
try { token = sessionStorage.getItem('medianode.console.token'); storage = "read"; } catch (e) { storage = e.name; }
fetch('/api/v1/console/tokens', {headers: {Authorization: 'Bearer ' + token}})
  .then((r) => { answer = String(r.status); }, (e) => { answer = e.name; })
  .finally(() => { document.title = JSON.stringify({storage, token, answer}); });
</script>"""


def test_a_stored_page_opened_in_the_consoles_tab_cannot_read_its_login(
    browser: Any, served: Served, tmp_path: Path
) -> None:
    """An HTML file added to the node and opened in the tab the console is logged in to: it runs (a site on
    IPFS keeps its scripts) but in an origin of its own, so it can neither read the admin token from
    sessionStorage nor use the console's API with it."""
    (tmp_path / "page.html").write_text(EVIL_PAGE)
    cid = served.node.ok("add", str(tmp_path / "page.html"), "--json").json["cid"]
    console = Console(browser, served)
    try:
        console.login()
        console.page.goto(f"{served.url}/ipfs/{cid}", wait_until="load")
        console.page.wait_for_function("document.title.startsWith('{')", timeout=WAIT)
        seen = json.loads(console.page.title())
        assert seen["storage"] == "SecurityError" and seen["token"] is None, seen
        assert seen["answer"] in ("401", "TypeError"), seen  # no token, or the opaque origin's fetch refused
    finally:
        console.close()
