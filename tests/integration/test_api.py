"""The write API: authenticated uploads (raw, multipart, resumable), attachments, pins, limits."""

from __future__ import annotations

import base64
import hashlib
import io
import socket
import time
import urllib.parse
from pathlib import Path

import httpx
import pytest

from conftest import Node, Served, gen
from node.demo import make_demo_clip
from node.storage.cid import base58btc_encode
from node.storage.importer import import_stream

MiB = 1024 * 1024


class Blocks:
    def put(self, cid: object, data: bytes) -> None: ...


def expected_cid(data: bytes) -> str:
    return str(import_stream(io.BytesIO(data), Blocks()).cid)


def token(node: Node, name: str = "social.example", *extra: str) -> str:
    result = node.ok("token", "create", "--name", name, *extra)
    return result.text.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_demo_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", seconds=3).read_bytes()


def auth(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def raw_exchange(served: Served, request: bytes, read: bool = True) -> bytes:
    """Send bytes exactly as given (to cut a body short), then read whatever comes back."""
    parsed = urllib.parse.urlsplit(served.url)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        if not read:
            return b""
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_raw_upload_returns_cid_and_attachment(served: Served, clip: bytes) -> None:
    tok = token(served.node)
    r = httpx.post(f"{served.url}/api/v1/add", params={"filename": "clip.mp4"}, content=clip, headers=auth(tok))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["cid"] == expected_cid(clip)
    assert body["size"] == len(clip) and body["mediaType"] == "video/mp4" and body["name"] == "clip.mp4"
    assert body["url"] == f"{served.url}/ipfs/{body['cid']}"
    attachment = body["attachment"]
    assert attachment["type"] == "Document"
    assert attachment["mediaType"] == "video/mp4"
    assert attachment["url"] == body["url"] and isinstance(attachment["url"], str)
    assert attachment["digestMultibase"] == "z" + base58btc_encode(b"\x12\x20" + hashlib.sha256(clip).digest())
    assert attachment["size"] == len(clip)
    assert (attachment["width"], attachment["height"]) == (360, 640)
    assert attachment["duration"].startswith("PT3") and attachment["duration"].endswith("S")
    # The bytes are served back, and the same attachment is available for stored content.
    assert httpx.get(body["url"]).content == clip
    again = httpx.get(f"{served.url}/api/v1/attachment/{body['cid']}")
    assert again.status_code == 200 and again.json() == attachment
    assert served.node.ok("stat", body["cid"], "--json").json["pinned"]


def test_attachment_for_content_added_by_cli(served: Served, tmp_path: Path, clip: bytes) -> None:
    (tmp_path / "c.mp4").write_bytes(clip)
    cid = served.node.ok("add", str(tmp_path / "c.mp4"), "--json").json["cid"]
    attachment = httpx.get(f"{served.url}/api/v1/attachment/{cid}").json()
    assert attachment["digestMultibase"] == "z" + base58btc_encode(b"\x12\x20" + hashlib.sha256(clip).digest())
    assert attachment["width"] == 360 and attachment["mediaType"] == "video/mp4"
    assert httpx.get(f"{served.url}/api/v1/attachment/notacid").status_code == 400
    absent = "bafkreie43rmrkrsaa3d6wejceoptbb6eplcakj44pjyagbkuf6chzrf7nu"
    assert httpx.get(f"{served.url}/api/v1/attachment/{absent}").status_code == 404


def test_multipart_upload(served: Served) -> None:
    tok = token(served.node)
    data = gen(700_000, b"multipart")
    r = httpx.post(f"{served.url}/api/v1/add", files={"file": ("holiday.webm", data, "video/webm")},
                   data={"note": "ignored"}, headers=auth(tok))  # fmt: skip
    assert r.status_code == 201, r.text
    assert r.json()["cid"] == expected_cid(data) and r.json()["name"] == "holiday.webm"
    assert r.json()["attachment"]["digestMultibase"] == "z" + base58btc_encode(
        b"\x12\x20" + hashlib.sha256(data).digest()
    )


def test_bad_or_revoked_token_is_refused(served: Served) -> None:
    """Tried: no token, a made-up token, a revoked token, the wrong scheme."""
    before = served.node.snapshot()
    url = f"{served.url}/api/v1/add"
    assert httpx.post(url, content=b"x").status_code == 401
    assert httpx.post(url, content=b"x", headers=auth("mn_madeup")).status_code == 401
    tok = token(served.node, "old")
    served.node.ok("token", "revoke", "old")
    r = httpx.post(url, content=b"x", headers=auth(tok))
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["error"]
    assert httpx.post(url, content=b"x", headers={"Authorization": f"Basic {tok}"}).status_code == 401
    assert httpx.get(f"{served.url}/api/v1/pins").status_code == 401
    assert served.node.snapshot() == before


def test_upload_cut_off_mid_body_stores_nothing(served: Served) -> None:
    """Tried: a raw upload that promises 2 MiB and closes the connection after 600 KB."""
    tok = token(served.node)
    before = served.node.snapshot()
    head = (
        f"POST /api/v1/add HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\nContent-Length: {2 * MiB}\r\n\r\n"
    ).encode()
    raw_exchange(served, head + gen(600_000), read=True)
    assert httpx.get(f"{served.url}/metrics").status_code == 200  # the server is fine
    assert served.node.snapshot() == before


def test_truncated_multipart_stores_nothing(served: Served) -> None:
    """Tried: a multipart body whose closing boundary never comes."""
    tok = token(served.node)
    before = served.node.snapshot()
    body = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n\r\n' + gen(300_000)
    r = httpx.post(f"{served.url}/api/v1/add", content=body,
                   headers={**auth(tok), "Content-Type": "multipart/form-data; boundary=XyZ"})  # fmt: skip
    assert r.status_code == 400 and "boundary" in r.json()["error"]
    assert served.node.snapshot() == before


def test_non_utf8_filenames_are_refused(served: Served) -> None:
    """Tried: a multipart filename with a 0xFF byte, and ?filename=%FF on a raw upload."""
    tok = token(served.node)
    before = served.node.snapshot()
    body = b'--B\r\nContent-Disposition: form-data; name="file"; filename="\xff.mp4"\r\n\r\nabc\r\n--B--\r\n'
    r = httpx.post(f"{served.url}/api/v1/add", content=body,
                   headers={**auth(tok), "Content-Type": "multipart/form-data; boundary=B"})  # fmt: skip
    assert r.status_code == 400 and "UTF-8" in r.json()["error"]
    r = httpx.post(f"{served.url}/api/v1/add?filename=%FF", content=b"abc", headers=auth(tok))
    assert r.status_code == 400 and "UTF-8" in r.json()["error"]
    assert served.node.snapshot() == before


def test_size_limits(tmp_path: Path) -> None:
    """Tried: an upload over the node's per-upload limit (declared and undeclared length), and uploads
    past a token's allowance. Each is a 413 with a JSON error and nothing stored."""
    node = Node(tmp_path / "limited")
    node.ok("init")
    config = node.data_dir / "config.toml"
    config.write_text(config.read_text().replace('max_upload = "4GiB"', 'max_upload = "1MiB"'))
    small = token(node, "small", "--limit", "1500KB")
    big = token(node, "big")
    served = Served(node.data_dir)
    try:
        before = node.snapshot()
        url = f"{served.url}/api/v1/add"
        declared = httpx.post(url, content=gen(2 * MiB), headers=auth(big))
        assert declared.status_code == 413 and "limit" in declared.json()["error"]

        def chunks() -> object:
            for _ in range(3):
                yield gen(600_000)

        streamed = httpx.post(url, content=chunks(), headers=auth(big))  # chunked: no length up front
        assert streamed.status_code == 413
        assert node.snapshot() == before
        first = httpx.post(url, content=gen(900_000, b"1"), headers=auth(small))
        assert first.status_code == 201
        over = httpx.post(url, content=gen(900_000, b"2"), headers=auth(small))
        assert over.status_code == 413 and "small" in over.json()["error"]
        assert len(node.ok("pin", "ls", "--json").json["pins"]) == 1
    finally:
        assert served.stop() == 0


def test_resumable_upload_survives_a_broken_connection(served: Served, clip: bytes) -> None:
    tok = token(served.node)
    data = gen(3 * MiB + 11, b"resumable")
    create = httpx.post(f"{served.url}/api/v1/uploads", headers={
        **auth(tok), "Tus-Resumable": "1.0.0", "Upload-Length": str(len(data)),
        "Upload-Metadata": "filename " + base64.b64encode("clip één.mp4".encode()).decode(),
    })  # fmt: skip
    assert create.status_code == 201
    location = create.headers["location"]
    url = f"{served.url}{location}"
    patch = {**auth(tok), "Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream"}
    first = httpx.patch(url, content=data[:MiB], headers={**patch, "Upload-Offset": "0"})
    assert first.status_code == 204 and first.headers["upload-offset"] == str(MiB)
    # A PATCH from the wrong offset is refused with the right one.
    wrong = httpx.patch(url, content=b"x", headers={**patch, "Upload-Offset": "5"})
    assert wrong.status_code == 409 and wrong.headers["upload-offset"] == str(MiB)
    # The connection breaks 500 kB into the next PATCH: what arrived is kept.
    head = (
        f"PATCH {location} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\nTus-Resumable: 1.0.0\r\n"
        f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: {MiB}\r\n"
        f"Content-Length: {len(data) - MiB}\r\n\r\n"
    ).encode()
    raw_exchange(served, head + data[MiB : MiB + 500_000])
    assert served.node.snapshot()["pins"] == []  # nothing is in the store until the upload completes
    # The server lets the broken PATCH go once it sees the connection end; until then a resuming client
    # is told 409 (another PATCH in progress) and tries again, as tus clients do.
    deadline = time.monotonic() + 30
    while True:
        offset = int(httpx.head(url, headers=auth(tok)).headers["upload-offset"])
        assert MiB <= offset <= MiB + 500_000
        done = httpx.patch(url, content=data[offset:], headers={**patch, "Upload-Offset": str(offset)})
        if done.status_code != 409 or time.monotonic() > deadline:
            break
    assert done.status_code == 200, done.text
    assert done.json()["cid"] == expected_cid(data) and done.json()["name"] == "clip één.mp4"
    assert httpx.get(url, headers=auth(tok)).json()["cid"] == done.json()["cid"]
    assert httpx.get(done.json()["url"]).content == data
    # Another token cannot see or touch the upload.
    other = token(served.node, "other")
    assert httpx.head(url, headers=auth(other)).status_code == 404


def test_resumable_upload_limits(served: Served) -> None:
    tok = token(served.node)
    r = httpx.post(f"{served.url}/api/v1/uploads", headers={**auth(tok), "Upload-Length": str(10 * 1024**3)})
    assert r.status_code == 413
    r = httpx.post(f"{served.url}/api/v1/uploads", headers=auth(tok))
    assert r.status_code == 400
    create = httpx.post(f"{served.url}/api/v1/uploads", headers={**auth(tok), "Upload-Length": "10"})
    url = f"{served.url}{create.headers['location']}"
    patch = {**auth(tok), "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    assert httpx.patch(url, content=b"x" * 11, headers=patch).status_code == 413
    assert httpx.patch(url, content=b"x", headers={**patch, "Content-Type": "text/plain"}).status_code == 415


def test_pins_api(served: Served, tmp_path: Path) -> None:
    tok = token(served.node)
    (tmp_path / "f").write_bytes(b"pin me")
    cid = served.node.ok("add", str(tmp_path / "f"), "--no-pin", "--json").json["cid"]
    assert httpx.post(f"{served.url}/api/v1/pin/{cid}").status_code == 401
    assert httpx.post(f"{served.url}/api/v1/pin/{cid}", headers=auth(tok)).json() == {"cid": cid, "pinned": True}
    assert [p["cid"] for p in httpx.get(f"{served.url}/api/v1/pins", headers=auth(tok)).json()["pins"]] == [cid]
    assert httpx.delete(f"{served.url}/api/v1/pin/{cid}", headers=auth(tok)).status_code == 200
    assert httpx.delete(f"{served.url}/api/v1/pin/{cid}", headers=auth(tok)).status_code == 409
    assert httpx.post(f"{served.url}/api/v1/pin/notacid", headers=auth(tok)).status_code == 400
    absent = "bafkreie43rmrkrsaa3d6wejceoptbb6eplcakj44pjyagbkuf6chzrf7nu"
    assert httpx.post(f"{served.url}/api/v1/pin/{absent}", headers=auth(tok)).status_code == 404


def test_token_cli_prints_token_last(node: Node) -> None:
    created = node.ok("token", "create", "--name", "a.example", "--json").json
    assert created["name"] == "a.example" and created["token"].startswith("mn_")
    assert node.ok("token", "create", "--name", "b").text.strip().splitlines()[-1].startswith("mn_")
    assert [t["name"] for t in node.ok("token", "ls", "--json").json["tokens"]] == ["a.example", "b"]
    node.fails("token", "create", "--name", "b", match="exists")
    node.fails("token", "create", "--name", "bad name!", match="token name")
    node.ok("token", "revoke", "b")
    node.fails("token", "revoke", "b", match="no token")
