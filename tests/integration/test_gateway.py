"""The read side of the HTTP gateway against a real `medianode serve` on 127.0.0.1."""

from __future__ import annotations

import http.client
import io
import signal
import urllib.parse
from pathlib import Path

import httpx
import pytest

from conftest import Served, gen
from node.demo import make_demo_clip
from node.storage.car import read_car
from node.storage.cid import CID
from node.storage.layout import walk_file
from node.storage.reads import READ_WINDOW

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", seconds=2)


def add(served: Served, path: Path, *extra: str) -> str:
    return str(served.node.ok("add", str(path), "--json", *extra).json["cid"])


def raw_get(served: Served, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """A request whose path goes out exactly as written (httpx would normalise dot segments)."""
    parsed = urllib.parse.urlsplit(served.url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


def test_file_headers_and_body(served: Served, clip: Path) -> None:
    cid = add(served, clip)
    r = httpx.get(f"{served.url}/ipfs/{cid}")
    assert r.status_code == 200 and r.content == clip.read_bytes()
    assert r.headers["content-type"] == "video/mp4"
    assert r.headers["content-length"] == str(clip.stat().st_size)
    assert r.headers["etag"] == f'"{cid}"'
    assert r.headers["cache-control"] == "public, max-age=29030400, immutable"
    assert r.headers["x-ipfs-path"] == f"/ipfs/{cid}"
    assert r.headers["x-ipfs-roots"] == cid
    assert r.headers["accept-ranges"] == "bytes"
    head = httpx.head(f"{served.url}/ipfs/{cid}")
    assert (
        head.status_code == 200
        and head.content == b""
        and head.headers["content-length"] == r.headers["content-length"]
    )
    assert httpx.get(f"{served.url}/ipfs/{cid}", headers={"If-None-Match": f'"{cid}"'}).status_code == 304


def test_ranges(served: Served, tmp_path: Path) -> None:
    data = gen(3 * MiB + 17)
    (tmp_path / "f.bin").write_bytes(data)
    cid = add(served, tmp_path / "f.bin")
    url = f"{served.url}/ipfs/{cid}"
    size = len(data)
    for header, start, end in (
        ("bytes=0-0", 0, 0),
        ("bytes=262140-262150", 262140, 262150),
        ("bytes=1048576-", 1048576, size - 1),
        ("bytes=-100", size - 100, size - 1),
        ("bytes=5-99999999", 5, size - 1),
    ):
        r = httpx.get(url, headers={"Range": header})
        assert r.status_code == 206, header
        assert r.headers["content-range"] == f"bytes {start}-{end}/{size}"
        assert r.content == data[start : end + 1]
    # Bad ranges, each a clear 4xx with the reason in the body (tried: past the end, reversed, junk, two ranges).
    past = httpx.get(url, headers={"Range": f"bytes={size}-"})
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{size}"
    for header, status in (("bytes=9-3", 400), ("bytes=abc", 400), ("bytes=0-1,5-6", 416), ("bytes=-0", 416)):
        r = httpx.get(url, headers={"Range": header})
        assert r.status_code == status, header
        assert r.text.strip() and "\n" not in r.text.strip()
    # A unit we do not know is ignored, as RFC 9110 requires.
    assert httpx.get(url, headers={"Range": "items=0-1"}).status_code == 200


def test_large_ranges_read_back_exactly_across_read_windows(served: Served, tmp_path: Path) -> None:
    """Bodies sent from the pack file (sendfile): a file over one 16 MiB read window, asked for whole,
    across the window's edge, at its last byte, and the same 1 MiB range twice (the second planned from
    memory). Every body is byte for byte the file's."""
    data = gen(READ_WINDOW + 2 * MiB + 3)
    (tmp_path / "big.bin").write_bytes(data)
    cid = add(served, tmp_path / "big.bin")
    url = f"{served.url}/ipfs/{cid}"
    whole = httpx.get(url, timeout=30)
    assert whole.status_code == 200 and whole.content == data
    for start, end in ((READ_WINDOW - 5, READ_WINDOW + 5), (len(data) - 1, len(data) - 1),
                       (3 * MiB, 4 * MiB - 1), (3 * MiB, 4 * MiB - 1), (0, READ_WINDOW + MiB)):  # fmt: skip
        r = httpx.get(url, headers={"Range": f"bytes={start}-{end}"}, timeout=30)
        assert r.status_code == 206 and r.content == data[start : end + 1], (start, end)


def test_filename_and_download(served: Served, clip: Path) -> None:
    cid = add(served, clip)
    r = httpx.get(f"{served.url}/ipfs/{cid}", params={"filename": "été.mp4", "download": "true"})
    assert r.headers["content-disposition"] == "attachment; filename=\"_t_.mp4\"; filename*=UTF-8''%C3%A9t%C3%A9.mp4"
    inline = httpx.head(f"{served.url}/ipfs/{cid}?filename=a.mp4")
    assert inline.headers["content-disposition"].startswith("inline;")
    # Tried: a filename that is not UTF-8 (a lone 0xFF byte).
    bad = httpx.get(f"{served.url}/ipfs/{cid}?filename=%FF.mp4")
    assert bad.status_code == 400 and "UTF-8" in bad.text


def test_directories(served: Served, tmp_path: Path) -> None:
    top = tmp_path / "site"
    (top / "sub").mkdir(parents=True)
    (top / "a.txt").write_bytes(b"hello")
    (top / "sub" / "index.html").write_bytes(b"<!doctype html><p>index")
    cid = add(served, top, "-r")
    redirect = httpx.get(f"{served.url}/ipfs/{cid}?x=1")
    assert redirect.status_code == 301 and redirect.headers["location"] == f"/ipfs/{cid}/?x=1"
    listing = httpx.get(f"{served.url}/ipfs/{cid}/")
    assert listing.status_code == 200 and listing.headers["content-type"].startswith("text/html")
    assert 'href="a.txt"' in listing.text and 'href="sub/"' in listing.text
    file = httpx.get(f"{served.url}/ipfs/{cid}/a.txt")
    assert file.text == "hello" and file.headers["content-type"].startswith("text/plain")
    assert file.headers["x-ipfs-path"] == f"/ipfs/{cid}/a.txt"
    assert file.headers["x-ipfs-roots"].split(",")[0] == cid and len(file.headers["x-ipfs-roots"].split(",")) == 2
    index = httpx.get(f"{served.url}/ipfs/{cid}/sub/")
    assert index.text.endswith("index") and index.headers["content-type"].startswith("text/html")
    assert httpx.get(f"{served.url}/ipfs/{cid}/missing").status_code == 404
    assert httpx.get(f"{served.url}/ipfs/{cid}/a.txt/deeper").status_code == 404


def test_bad_requests_are_4xx_never_5xx(served: Served, clip: Path) -> None:
    """Tried: path traversal (raw and percent-encoded), an overlong path, malformed CIDs, no CID, an
    unsupported ?format and an Accept the gateway cannot satisfy; and a CID nobody has (a 504)."""
    cid = add(served, clip)
    assert raw_get(served, f"/ipfs/{cid}/../../etc/passwd")[0] in (400, 404)
    assert raw_get(served, f"/ipfs/{cid}/%2e%2e/%2e%2e/etc/passwd")[0] == 400
    assert raw_get(served, f"/ipfs/{cid}/" + "a/" * 3000)[0] == 414
    for bad in ("notacid", "bafy!!", "Qm123", "zzzz"):
        r = httpx.get(f"{served.url}/ipfs/{bad}")
        assert r.status_code == 400 and "invalid CID" in r.text
    absent = "bafkreie43rmrkrsaa3d6wejceoptbb6eplcakj44pjyagbkuf6chzrf7nu"
    lacking = httpx.get(f"{served.url}/ipfs/{absent}")  # not stored, and no peer to fetch it from
    assert lacking.status_code == 504 and lacking.headers["retry-after"] == "10"
    assert httpx.get(f"{served.url}/ipfs/").status_code == 400
    assert httpx.get(f"{served.url}/ipfs/{cid}?format=tar").status_code == 400
    dag_json = httpx.get(f"{served.url}/ipfs/{cid}", headers={"Accept": "application/vnd.ipld.dag-json"})
    assert dag_json.status_code == 406
    assert httpx.get(f"{served.url}/ipfs/{cid}?format=car&dag-scope=bogus").status_code == 400
    assert httpx.get(f"{served.url}/ipfs/{cid}?format=car&entity-bytes=1:x").status_code == 400
    # Digits of another script: int() reads "٣" as 3, the spec's grammar does not.
    assert httpx.get(f"{served.url}/ipfs/{cid}?format=car&dag-scope=entity&entity-bytes=٣:5").status_code == 400


def test_trustless_raw_blocks_verify(served: Served, tmp_path: Path) -> None:
    data = gen(MiB + 5)
    (tmp_path / "f").write_bytes(data)
    cid = CID.parse(add(served, tmp_path / "f"))
    blocks: dict[CID, bytes] = {}

    def fetch(c: CID) -> bytes:
        r = httpx.get(f"{served.url}/ipfs/{c}", headers={"Accept": "application/vnd.ipld.raw"})
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/vnd.ipld.raw"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert c.verifies(r.content), f"block {c} does not match its CID"
        blocks[c] = r.content
        return r.content

    layout = walk_file(cid, fetch)  # a client that trusts nothing rebuilds the file block by block
    assert b"".join(fetch(leaf.cid) for leaf in layout.leaves) == data
    via_query = httpx.get(f"{served.url}/ipfs/{cid}?format=raw")
    assert via_query.content == blocks[cid]
    probe = httpx.get(f"{served.url}/ipfs/bafkqaaa", headers={"Accept": "application/vnd.ipld.raw"})
    assert probe.status_code == 200 and probe.content == b""


def car_of(response: httpx.Response) -> tuple[list[CID], dict[CID, bytes], list[CID]]:
    roots, blocks = read_car(io.BytesIO(response.content))
    found: dict[CID, bytes] = {}
    order = []
    for c, data in blocks:
        assert c.verifies(data), f"CAR block {c} does not match its CID"
        assert c not in found, "dups=n promised no duplicate blocks"
        found[c] = data
        order.append(c)
    return roots, found, order


def test_trustless_car_scopes(served: Served, tmp_path: Path) -> None:
    data = gen(4 * MiB + 3)
    top = tmp_path / "d"
    top.mkdir()
    (top / "clip.bin").write_bytes(data)
    root = CID.parse(add(served, top, "-r"))
    url = f"{served.url}/ipfs/{root}/clip.bin"
    whole = httpx.get(url, params={"format": "car"})
    assert whole.status_code == 200
    assert whole.headers["content-type"] == "application/vnd.ipld.car; version=1; order=dfs; dups=n"
    assert whole.headers["x-content-type-options"] == "nosniff"
    assert "attachment" in whole.headers["content-disposition"]
    roots, blocks, order = car_of(whole)
    assert roots == [root] and order[0] == root  # the path's blocks come first
    file_cid = CID.parse(whole.headers["x-ipfs-roots"].split(",")[-1])
    layout = walk_file(file_cid, blocks.__getitem__)
    assert b"".join(blocks[leaf.cid] for leaf in layout.leaves) == data
    block_only = car_of(httpx.get(url, params={"format": "car", "dag-scope": "block"}))[1]
    assert list(block_only) == [root, file_cid]
    # entity-bytes: just the blocks under bytes [1 MiB, 1 MiB + 10], enough to rebuild that range.
    ranged = httpx.get(url, params={"format": "car", "dag-scope": "entity", "entity-bytes": f"{MiB}:{MiB + 10}"},
                       headers={"Accept": "application/vnd.ipld.car"})  # fmt: skip
    _, part, _ = car_of(ranged)
    leaves = [leaf for leaf in layout.leaves if leaf.cid in part]
    assert len(leaves) == 1 and leaves[0].offset <= MiB < leaves[0].offset + leaves[0].size
    negative = car_of(httpx.get(url, params={"format": "car", "dag-scope": "entity", "entity-bytes": "-10:*"}))[1]
    assert layout.leaves[-1].cid in negative and layout.leaves[0].cid not in negative


def test_metrics(served: Served, clip: Path) -> None:
    cid = add(served, clip)
    httpx.get(f"{served.url}/ipfs/{cid}")
    httpx.get(f"{served.url}/ipfs/notacid")
    text = httpx.get(f"{served.url}/metrics").text
    assert 'medianode_http_requests_total{method="GET",route="ipfs",status="200"} 1.0' in text
    assert 'medianode_http_requests_total{method="GET",route="ipfs",status="400"} 1.0' in text
    assert f"medianode_http_bytes_served_total {float(clip.stat().st_size)}" in text
    assert "medianode_store_blocks " in text and "medianode_store_pins 1.0" in text


def test_sigint_stops_cleanly(tmp_path: Path) -> None:
    server = Served(tmp_path / "n")
    assert httpx.get(f"{server.url}/metrics").status_code == 200
    assert server.stop(signal.SIGINT) == 0
