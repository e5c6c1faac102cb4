"""The tus write API against a hostile client, on a real ``serve``: concurrent PATCHes, allowances and expiry,
header values ``int`` cannot read, and a full disk."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from conftest import Node, Served, fill_filesystem, gen, mount_tmpfs, unmount
from node.storage.importer import import_stream


class Blocks:
    def put(self, cid: object, data: bytes) -> None: ...


def expected_cid(data: bytes) -> str:
    return str(import_stream(io.BytesIO(data), Blocks()).cid)


def token(node: Node, name: str = "social.example", *extra: str) -> str:
    return node.ok("token", "create", "--name", name, *extra).text.strip().splitlines()[-1]


def auth(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {"Content-Type": "application/offset+octet-stream"}


def poll(what: str, check: Callable[[], bool], deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while not check():
        if time.monotonic() > end:
            pytest.fail(f"waited {deadline:.0f}s for {what}")
        time.sleep(0.05)


def create(served: Served, tok: str, length: int | bytes) -> httpx.Response:
    return httpx.post(f"{served.url}/api/v1/uploads", headers={**auth(tok), **TUS, "Upload-Length": str(length)})


def patch(url: str, tok: str, offset: int, body: bytes) -> httpx.Response:
    return httpx.patch(url, content=body, headers={**auth(tok), **TUS, **OCTETS, "Upload-Offset": str(offset)})


def used(node: Node, name: str) -> int:
    return int(next(t["used"] for t in node.ok("token", "ls", "--json").json["tokens"] if t["name"] == name))


def upload_files(data_dir: Path) -> list[str]:
    return sorted(p.name for p in (data_dir / "uploads").iterdir())


def connect(served: Served) -> socket.socket:
    parsed = urllib.parse.urlsplit(served.url)
    return socket.create_connection((parsed.hostname, parsed.port), timeout=30)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body (what the API sends)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a response: {buf!r}")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def raw_request(served: Served, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with connect(served) as sock:
        sock.sendall(request)
        return read_response(sock)


def test_second_patch_while_one_is_in_progress_is_refused(served: Served) -> None:
    """Tried: PATCH A to a 1,000,000-byte upload sends 200,000 bytes and stalls; PATCH B then sends the other
    800,000 from the offset HEAD reports, and a DELETE comes too. Before, B passed the offset check, completed
    the upload, and A went on to write its 800,000 bytes as well (up to 2,000,000 bytes of interleaved data,
    answered 200). Now B and the DELETE are 409 with the offset, and A alone completes it."""
    tok = token(served.node)
    data = gen(1_000_000, b"race")
    location = create(served, tok, len(data)).headers["location"]
    url = f"{served.url}{location}"
    part = served.data_dir / "uploads" / (location.rsplit("/", 1)[1] + ".part")
    a = connect(served)
    try:
        a.sendall(
            (
                f"PATCH {location} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\nTus-Resumable: 1.0.0\r\n"
                f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
                f"Content-Length: {len(data)}\r\n\r\n"
            ).encode()
            + data[:200_000]
        )
        poll("A's first 200,000 bytes", lambda: httpx.head(url, headers=auth(tok)).headers["upload-offset"] == "200000")
        b = patch(url, tok, 200_000, data[200_000:])
        assert b.status_code == 409, b.text
        assert b.headers["upload-offset"] == "200000" and "in progress" in b.json()["error"]
        deleting = httpx.delete(url, headers=auth(tok))
        assert deleting.status_code == 409 and deleting.headers["upload-offset"] == "200000"
        assert part.stat().st_size == 200_000  # B wrote nothing
        a.sendall(data[200_000:])
        status, _, body = read_response(a)
    finally:
        a.close()
    assert status == 200, body
    result = json.loads(body)
    assert result["cid"] == expected_cid(data) and result["size"] == len(data)
    assert httpx.get(result["url"]).content == data
    # Once complete, a PATCH is refused as before, whatever offset it claims.
    assert patch(url, tok, len(data), b"").status_code == 409


def test_tus_uploads_are_charged_at_creation(tmp_path: Path) -> None:
    """Tried: a token with a 100 kB limit creating 30 uploads of 99,999 bytes (before, all 30 were created:
    tus uploads were not charged). Now the first is charged its length at creation, the other 29 are 413 and
    leave no files; DELETE refunds; a completed upload is charged once, not again by the import; reading its
    result removes its files."""
    node = Node(tmp_path / "node")
    node.ok("init")
    tok = token(node, "small", "--limit", "100KB")
    served = Served(node.data_dir)
    try:
        first = create(served, tok, 99_999)
        assert first.status_code == 201
        assert used(node, "small") == 99_999
        files = upload_files(node.data_dir)
        assert len(files) == 2
        for _ in range(29):
            refused = create(served, tok, 99_999)
            assert refused.status_code == 413 and "small" in refused.json()["error"]
        assert upload_files(node.data_dir) == files
        assert used(node, "small") == 99_999
        # Only one byte is left for /api/v1/add too.
        assert httpx.post(f"{served.url}/api/v1/add", content=b"ab", headers=auth(tok)).status_code == 413
        url = f"{served.url}{first.headers['location']}"
        assert patch(url, tok, 0, gen(10_000)).status_code == 204
        assert httpx.delete(url, headers=auth(tok)).status_code == 204
        assert used(node, "small") == 0 and upload_files(node.data_dir) == []
        assert httpx.head(url, headers=auth(tok)).status_code == 404

        data = gen(99_999, b"charged once")
        url = f"{served.url}{create(served, tok, len(data)).headers['location']}"
        assert used(node, "small") == 99_999
        done = patch(url, tok, 0, data)
        assert done.status_code == 200, done.text
        assert used(node, "small") == 99_999  # the creation's charge is the stored file's; no second charge
        assert httpx.delete(url, headers=auth(tok)).status_code == 204  # a finished upload: the charge stands
        assert used(node, "small") == 99_999

        url = f"{served.url}{create(served, auth_free := token(node, 'free'), 5).headers['location']}"
        assert patch(url, auth_free, 0, b"12345").status_code == 200
        assert upload_files(node.data_dir) == [url.rsplit("/", 1)[1] + ".json"]  # kept for GET
        assert httpx.get(url, headers=auth(auth_free)).json()["cid"] == expected_cid(b"12345")
        assert upload_files(node.data_dir) == []  # read once, then gone
        assert httpx.get(url, headers=auth(auth_free)).status_code == 404
        assert used(node, "free") == 5
    finally:
        assert served.stop() == 0


def test_failed_import_refunds_and_ends_the_upload(tmp_path: Path) -> None:
    """Tried: completing a 1.5 MB tus upload on a node whose store quota is 1 MiB. The import fails (507);
    the upload's charge is refunded and its files are removed, and nothing is stored."""
    node = Node(tmp_path / "node")
    node.ok("init", "--quota", "1MiB")
    tok = token(node, "quota", "--limit", "2MB")
    served = Served(node.data_dir)
    try:
        before = node.snapshot()
        data = gen(1_500_000, b"over quota")
        url = f"{served.url}{create(served, tok, len(data)).headers['location']}"
        assert used(node, "quota") == len(data)
        failed = patch(url, tok, 0, data)
        assert failed.status_code == 507, failed.text
        assert used(node, "quota") == 0
        assert upload_files(node.data_dir) == []
        assert httpx.head(url, headers=auth(tok)).status_code == 404
        assert node.snapshot() == before
    finally:
        assert served.stop() == 0


def test_uploads_expire_while_serve_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tried: uploads left unfinished, and a finished one whose result is never read, on a serve that runs on
    (before, uploads were only looked at when serve started). With the expiry age at 5 s and a sweep every
    0.2 s, both go; the unfinished one's charge is refunded, the finished one's stands; SIGTERM still stops
    serve at once."""
    monkeypatch.setenv("MEDIANODE_UPLOAD_EXPIRE_AFTER", "5")
    monkeypatch.setenv("MEDIANODE_UPLOAD_SWEEP_EVERY", "0.2")
    node = Node(tmp_path / "node")
    node.ok("init")
    tok = token(node, "expiring", "--limit", "1MB")
    served = Served(node.data_dir)
    try:
        unfinished = f"{served.url}{create(served, tok, 50_000).headers['location']}"
        finished = f"{served.url}{create(served, tok, 1_000).headers['location']}"
        assert patch(finished, tok, 0, gen(1_000)).status_code == 200
        assert patch(unfinished, tok, 0, gen(20_000)).status_code == 204
        assert used(node, "expiring") == 51_000
        poll("the uploads to expire", lambda: upload_files(node.data_dir) == [])
        assert used(node, "expiring") == 1_000
        assert httpx.head(unfinished, headers=auth(tok)).status_code == 404
        assert httpx.get(finished, headers=auth(tok)).status_code == 404
    finally:
        assert served.stop() == 0


def test_bad_override_of_expiry_fails_serve(tmp_path: Path) -> None:
    node = Node(tmp_path / "node")
    proc = subprocess.run(
        ["env", "MEDIANODE_UPLOAD_EXPIRE_AFTER=\u00b2", *node_serve()],
        env={**os.environ, "MEDIANODE_DATA": str(node.data_dir)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "MEDIANODE_UPLOAD_EXPIRE_AFTER" in proc.stderr.strip().splitlines()[-1]


def node_serve() -> list[str]:
    import sys

    return [sys.executable, "-m", "node.cli", "serve", "--gateway", "127.0.0.1:0", "--no-s3", "--no-mdns",
            "--listen", "/ip4/127.0.0.1/tcp/0", "--workers", "1", "--json"]  # fmt: skip


BAD_NUMBERS = [b"\xb2", b"1\xb2", b"\xb9\xb2", b"9" * 5000, b"-1", b"+5", b"1e3", b"0x10", b"5 5", b""]


def test_header_numbers_must_be_ascii_digits(served: Served) -> None:
    """Tried: Upload-Length and Upload-Offset of '²' (sent as the Latin-1 byte, which Starlette decodes to
    '²': str.isdigit() took it, int() did not, 500), '1²', 5,000 nines (int() refuses over 4,300 digits), signs,
    exponents, hex, blanks. Each is a 400 with a one-line JSON reason, and no upload is created; a
    Content-Length of '²' is a 400 too (refused by the HTTP parser)."""
    tok = token(served.node)
    auth_line = f"Authorization: Bearer {tok}\r\n".encode()
    for bad in BAD_NUMBERS:
        status, _, body = raw_request(
            served, b"POST /api/v1/uploads HTTP/1.1\r\nHost: x\r\n" + auth_line
            + b"Tus-Resumable: 1.0.0\r\nUpload-Length: " + bad + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )  # fmt: skip
        assert status == 400, (bad[:20], status, body[:200])
        error = json.loads(body)["error"]
        assert "Upload-Length" in error and "\n" not in error
    assert upload_files(served.data_dir) == []
    location = create(served, tok, 10).headers["location"]
    for bad in BAD_NUMBERS:
        status, _, body = raw_request(
            served, f"PATCH {location} HTTP/1.1\r\nHost: x\r\n".encode() + auth_line
            + b"Content-Type: application/offset+octet-stream\r\nUpload-Offset: " + bad
            + b"\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
        )  # fmt: skip
        assert status == 400, (bad[:20], status, body[:200])
        error = json.loads(body)["error"]
        assert "Upload-Offset" in error and "\n" not in error
    assert httpx.head(f"{served.url}{location}", headers=auth(tok)).headers["upload-offset"] == "0"
    status, _, _ = raw_request(
        served, b"POST /api/v1/add HTTP/1.1\r\nHost: x\r\n" + auth_line
        + b"Content-Length: \xb2\r\nConnection: close\r\n\r\n",
    )  # fmt: skip
    assert status == 400
    assert httpx.get(f"{served.url}/metrics").status_code == 200


def test_full_disk_is_507_and_leaves_no_files(tmp_path: Path) -> None:
    """Tried, on a 24 MiB tmpfs holding serve's data directory, filled up: creating a tus upload (before: 500,
    and an empty .part and .tmp left behind), PATCHing one created earlier (before: 500), completing one. Each
    is a 507 with no file left behind; the unfinished upload keeps what it had and resumes once there is room
    again; the store still reads."""
    mnt = mount_tmpfs(tmp_path / "small", 24)
    served: Served | None = None
    try:
        node = Node(mnt / "node")
        node.ok("init")
        tok = token(node)
        served = Served(node.data_dir)
        stored = gen(300_000, b"kept")
        added = httpx.post(f"{served.url}/api/v1/add", content=stored, headers=auth(tok)).json()
        data = gen(2_000_000, b"full disk")
        url = f"{served.url}{create(served, tok, len(data)).headers['location']}"
        assert patch(url, tok, 0, data[:100_000]).status_code == 204
        last = gen(500_000, b"last byte")
        last_url = f"{served.url}{create(served, tok, len(last)).headers['location']}"
        assert patch(last_url, tok, 0, last[:-1]).status_code == 204  # its last byte fits in its last page
        files = upload_files(node.data_dir)
        filler = fill_filesystem(mnt / "filler")

        refused = create(served, tok, 1000)
        assert refused.status_code == 507, refused.text
        assert "space" in refused.json()["error"]
        assert upload_files(node.data_dir) == files
        more = patch(url, tok, 100_000, data[100_000:1_000_000])
        assert more.status_code == 507, more.text
        offset = int(more.headers["upload-offset"])
        assert 100_000 <= offset < 1_000_000
        assert upload_files(node.data_dir) == files
        assert int(httpx.head(url, headers=auth(tok)).headers["upload-offset"]) == offset
        assert httpx.get(added["url"]).content == stored  # the store still reads
        assert httpx.post(f"{served.url}/api/v1/add", content=gen(50_000), headers=auth(tok)).status_code == 507
        # The PATCH that completes an upload: its import finds no room; the upload ends and its files go.
        completing = patch(last_url, tok, len(last) - 1, last[-1:])
        assert completing.status_code == 507, completing.text
        assert httpx.head(last_url, headers=auth(tok)).status_code == 404
        assert len(upload_files(node.data_dir)) == len(files) - 2
        assert used(node, "social.example") == len(stored) + len(data)  # the failed one was refunded

        filler.unlink()
        done = patch(url, tok, offset, data[offset:])
        assert done.status_code == 200, done.text
        assert httpx.get(done.json()["url"]).content == data
        assert create(served, tok, 1000).status_code == 201
    finally:
        if served is not None:
            assert served.stop() == 0
        unmount(mnt)
