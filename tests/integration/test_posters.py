"""Posters on a real ``serve`` and the real CLI: every way a video is added (``medianode add``, the upload
API, tus, S3 PutObject and CompleteMultipartUpload) gives it a poster that is a decodable JPEG of 480 px on
its long side, with the CID ``medianode add`` gives its bytes; non-video and broken files get none and are
still stored; the poster is kept while its clip is and collected after it; it shows in the attachment
(``icon``), the feed, ``/api/v1/clip`` and ``/api/v1/poster``, and is never a clip of its own.
"""

from __future__ import annotations

import io
import os
import sqlite3
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import av
import httpx
import pytest

from conftest import Node, Served, huge_frame_mp4
from node.demo import HEIGHT, WIDTH, make_demo_clip
from node.storage.cid import CID

MiB = 1024 * 1024
T = TypeVar("T")


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Different clips (different CIDs) so each route is seen to make its own poster."""
    folder = tmp_path_factory.mktemp("clips")
    # Each at its own bitrate, so each has a picture (and a poster) of its own: made alike, the demo clips
    # would share one poster (which works too: a hold per clip).
    return {s: make_demo_clip(folder / f"clip{s}.mp4", seconds=int(s), video_kbps=150 * int(s)) for s in "2345"}


def token(node: Node) -> str:
    return node.ok("token", "create", "--name", "social.example").text.strip().splitlines()[-1]


def png_bytes() -> bytes:
    """A real 2x2 PNG: an image, not a video, so no poster."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    rows = b"".join(b"\0" + b"\xff\x00\x00" * 2 for _ in range(2))
    header = (2).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def check_jpeg(data: bytes) -> tuple[int, int]:
    """Decode the poster as FFmpeg would any JPEG; its size, which must be the clip's scaled to 480 px."""
    assert data[:3] == b"\xff\xd8\xff", "not a JPEG"
    with av.open(io.BytesIO(data)) as container:
        assert container.streams.video[0].codec_context.name == "mjpeg"
        frame = next(container.decode(video=0))
    assert max(frame.width, frame.height) == 480
    assert (frame.width, frame.height) == (round(WIDTH * 480 / HEIGHT), 480)  # the demo clip is 360x640
    return frame.width, frame.height


def cid_by_add(tmp_path: Path, data: bytes) -> str:
    """What ``medianode add`` prints for these bytes, in a store of its own."""
    (tmp_path / "poster.jpg").write_bytes(data)
    return str(Node(tmp_path / "other").ok("add", str(tmp_path / "poster.jpg"), "--json").json["cid"])


def check_poster(served: Served, poster_cid: str, tmp_path: Path) -> bytes:
    got = httpx.get(f"{served.url}/ipfs/{poster_cid}")
    assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg"
    check_jpeg(got.content)
    assert cid_by_add(tmp_path, got.content) == poster_cid
    return got.content


def poll(what: Callable[[], T | None], seconds: float = 60.0) -> T:
    deadline = time.monotonic() + seconds
    while True:
        value = what()
        if value is not None:
            return value
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.1)


def clip_facts(served: Served, cid: str) -> dict[str, Any]:
    got = httpx.get(f"{served.url}/api/v1/clip/{cid}")
    assert got.status_code == 200, got.text
    return got.json()  # type: ignore[no-any-return]


def test_cli_add_makes_a_poster_of_its_own_cid(node: Node, clips: dict[str, Path], tmp_path: Path) -> None:
    added = node.ok("add", str(clips["3"]), "--json").json
    poster = added["poster"]
    assert poster and poster.startswith("bafkrei")  # one raw block: a 480 px JPEG is well under a chunk
    data = node.ok("cat", poster).stdout
    check_jpeg(data)
    assert cid_by_add(tmp_path, data) == poster
    # A poster is a hold, not a pin: `pin ls` lists the clip alone.
    assert [p["cid"] for p in node.ok("pin", "ls", "--json").json["pins"]] == [added["cid"]]
    assert node.ok("stat", poster, "--json").json["pinned"] is True
    # The same clip again: the same poster, not another one.
    assert node.ok("add", str(clips["3"]), "--json").json["poster"] == poster


def test_pin_rm_then_gc_collects_the_poster_too(node: Node, clips: dict[str, Path]) -> None:
    """Unpinned by the CLI (not the API, which releases the poster itself): gc first releases posters whose
    clip nothing keeps, then collects both."""
    added = node.ok("add", str(clips["3"]), "--json").json
    node.ok("pin", "rm", added["cid"])
    node.ok("gc")
    assert node.run("stat", added["cid"]).code != 0 and node.run("stat", added["poster"]).code != 0


@pytest.mark.parametrize(
    "name, data",
    [
        ("noise.mp4", os.urandom(300_000)),  # random bytes named as a video
        ("image.png", png_bytes()),
        ("notes.txt", b"not a video\n" * 100),
        ("empty.mp4", b""),
    ],
)
def test_cli_add_of_what_is_not_video_has_no_poster(node: Node, tmp_path: Path, name: str, data: bytes) -> None:
    (tmp_path / name).write_bytes(data)
    added = node.ok("add", str(tmp_path / name), "--json").json
    assert "poster" not in added
    assert [p["cid"] for p in node.ok("pin", "ls", "--json").json["pins"]] == [added["cid"]]


def test_upload_api_and_tus_give_the_attachment_an_icon(served: Served, clips: dict[str, Path], tmp_path: Path) -> None:
    tok = {"Authorization": f"Bearer {token(served.node)}"}
    raw = httpx.post(f"{served.url}/api/v1/add?filename=clip.mp4", content=clips["2"].read_bytes(), headers=tok)
    assert raw.status_code == 201, raw.text
    files = {"file": ("clip.mp4", clips["3"].read_bytes(), "video/mp4")}
    form = httpx.post(f"{served.url}/api/v1/add", files=files, headers=tok)
    assert form.status_code == 201, form.text

    data = clips["4"].read_bytes()
    created = httpx.post(f"{served.url}/api/v1/uploads", headers={**tok, "Upload-Length": str(len(data)),
                                                                   "Tus-Resumable": "1.0.0"})  # fmt: skip
    assert created.status_code == 201, created.text
    tus = httpx.patch(
        served.url + created.headers["location"], content=data,
        headers={**tok, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0",
                 "Tus-Resumable": "1.0.0"},
    )  # fmt: skip
    assert tus.status_code == 200, tus.text

    for result in (raw.json(), form.json(), tus.json()):
        icon = result["attachment"]["icon"]
        assert icon["type"] == "Image" and icon["mediaType"] == "image/jpeg"
        assert (icon["width"], icon["height"]) == (270, 480)
        prefix = result["url"].rsplit("/ipfs/", 1)[0]  # the same public URL as the clip's
        assert icon["url"].startswith(prefix + "/ipfs/bafkrei")
        poster = icon["url"].rsplit("/", 1)[1]
        check_poster(served, poster, tmp_path)
        # GET /api/v1/attachment gives the same icon, and /api/v1/clip the same poster.
        again = httpx.get(f"{served.url}/api/v1/attachment/{result['cid']}").json()
        assert again["icon"] == icon
        facts = clip_facts(served, result["cid"])
        assert facts["poster"] == f"/ipfs/{poster}"
        assert (facts["width"], facts["height"], facts["type"]) == (WIDTH, HEIGHT, "video/mp4")


def test_upload_api_stores_broken_and_hostile_videos(served: Served, clips: dict[str, Path], tmp_path: Path) -> None:
    """Tried: the demo clip cut to its first half (its moov is at the front, so it opens and its first
    frames decode: a poster of what is there), its last 60% (no moov at all), random bytes named .mp4, a
    PNG and a text file; and a real MP4 whose one frame is 7000x7000 (49 Mpx, over what a poster decodes).
    Each is stored as sent (201, its CID as `add` gives it), only the cut clip has a poster, and serve
    goes on answering."""
    tok = {"Authorization": f"Bearer {token(served.node)}"}
    clip = clips["5"].read_bytes()
    huge = huge_frame_mp4(tmp_path / "huge.mp4")
    samples = {
        "head.mp4": (clip[: len(clip) // 2], True),
        "tail.mp4": (clip[len(clip) * 2 // 5 :], False),
        "noise.mp4": (os.urandom(200_000), False),
        "image.png": (png_bytes(), False),
        "notes.txt": (b"hello\n", False),
        "huge.mp4": (huge.read_bytes(), False),
    }
    for name, (data, has_poster) in samples.items():
        got = httpx.post(f"{served.url}/api/v1/add?filename={name}", content=data, headers=tok, timeout=60)
        assert got.status_code == 201, (name, got.text)
        body = got.json()
        assert ("icon" in body["attachment"]) == has_poster, name
        poster = clip_facts(served, body["cid"])["poster"]
        assert httpx.get(f"{served.url}/api/v1/poster/{body['cid']}").status_code == (307 if has_poster else 404)
        if has_poster:
            check_poster(served, poster.removeprefix("/ipfs/"), tmp_path)
        else:
            assert poster is None, name
        assert httpx.get(f"{served.url}/ipfs/{body['cid']}").content == data, name
        (tmp_path / name).write_bytes(data)
        assert Node(tmp_path / "other").ok("add", str(tmp_path / name), "--json").json["cid"] == body["cid"]


def test_s3_put_and_multipart_objects_get_posters(served: Served, tmp_path: Path) -> None:
    import boto3
    from botocore.config import Config

    key = served.node.ok("s3", "key", "create", "--name", "peertube", "--bucket", "media", "--json").json
    s3 = boto3.client(
        "s3", endpoint_url=served.s3_url, region_name="us-east-1",
        aws_access_key_id=key["access_key_id"], aws_secret_access_key=key["secret_access_key"],
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )  # fmt: skip
    small = make_demo_clip(tmp_path / "small.mp4", seconds=2).read_bytes()
    put = s3.put_object(Bucket="media", Key="web-videos/small.mp4", Body=small, ACL="public-read")
    put_cid = put["ResponseMetadata"]["HTTPHeaders"]["x-ipfs-roots"]

    # Over 5 MiB, so it goes in two parts (a constant-bitrate clip is padded to its size).
    big = make_demo_clip(tmp_path / "big.mp4", seconds=8, video_kbps=7000).read_bytes()
    assert len(big) > 5 * MiB
    upload = s3.create_multipart_upload(Bucket="media", Key="web-videos/big.mp4", ACL="public-read")
    parts = []
    for number, start in enumerate(range(0, len(big), 5 * MiB), 1):
        part = s3.upload_part(Bucket="media", Key="web-videos/big.mp4", UploadId=upload["UploadId"],
                              PartNumber=number, Body=big[start : start + 5 * MiB])  # fmt: skip
        parts.append({"PartNumber": number, "ETag": part["ETag"]})
    assert len(parts) == 2
    done = s3.complete_multipart_upload(Bucket="media", Key="web-videos/big.mp4", UploadId=upload["UploadId"],
                                        MultipartUpload={"Parts": parts})  # fmt: skip
    big_cid = done["ResponseMetadata"]["HTTPHeaders"]["x-ipfs-roots"]

    private = s3.put_object(
        Bucket="media", Key="private.mp4", Body=make_demo_clip(tmp_path / "p.mp4", 3, 333).read_bytes()
    )
    private_cid = private["ResponseMetadata"]["HTTPHeaders"]["x-ipfs-roots"]

    for cid in (put_cid, big_cid):
        facts = clip_facts(served, cid)
        assert facts["poster"], facts
        check_poster(served, facts["poster"].removeprefix("/ipfs/"), tmp_path)
        redirect = httpx.get(f"{served.url}/api/v1/poster/{cid}")
        assert redirect.status_code == 307 and redirect.headers["location"] == facts["poster"]
    # A private object's poster was made too, and is as private as the clip: no public path serves it
    # (its bitrate is its own, so no public clip shares its picture and poster).
    assert served.node.ok("stat", private_cid, "--json").json["pinned"] is True  # held by its key
    assert httpx.get(f"{served.url}/api/v1/clip/{private_cid}").status_code == 410
    assert httpx.get(f"{served.url}/api/v1/poster/{private_cid}").status_code == 410
    with sqlite3.connect(served.data_dir / "gateway.sqlite") as db:
        row = db.execute("SELECT poster FROM posters WHERE clip = ?", (bytes(CID.parse(private_cid)),)).fetchone()
    assert row and row[0]
    assert httpx.get(f"{served.url}/ipfs/{CID.from_bytes(row[0])}").status_code == 410


def test_poster_is_kept_with_its_clip_and_collected_after_it(served: Served, clips: dict[str, Path]) -> None:
    node = served.node
    added = node.ok("add", str(clips["2"]), "--json").json
    clip, poster = added["cid"], added["poster"]
    tok = {"Authorization": f"Bearer {token(node)}"}
    node.ok("gc")
    assert node.ok("stat", poster, "--json").json["pinned"] is True
    assert httpx.get(f"{served.url}/ipfs/{poster}").status_code == 200
    assert httpx.delete(f"{served.url}/api/v1/pin/{clip}", headers=tok).status_code == 200
    node.ok("gc")
    assert node.run("stat", clip).code != 0 and node.run("stat", poster).code != 0
    assert httpx.get(f"{served.url}/api/v1/poster/{clip}").status_code == 404
    # Added again (the blocks were collected): the poster is made again, with the same CID.
    assert node.ok("add", str(clips["2"]), "--json").json["poster"] == poster
    assert httpx.get(f"{served.url}/api/v1/poster/{clip}").headers["location"] == f"/ipfs/{poster}"
    node.ok("gc")
    assert httpx.get(f"{served.url}/ipfs/{poster}").status_code == 200


def test_feed_and_pins_list_clips_not_posters(served: Served, clips: dict[str, Path], tmp_path: Path) -> None:
    node = served.node
    tok = {"Authorization": f"Bearer {token(node)}"}
    added = [node.ok("add", str(clips[s]), "--json").json for s in "23"]
    (tmp_path / "notes.txt").write_text("not a clip\n")
    node.ok("add", str(tmp_path / "notes.txt"))
    # Someone pins a poster explicitly: still not a clip in the feed; the pin list says whose it is.
    assert httpx.post(f"{served.url}/api/v1/pin/{added[0]['poster']}", headers=tok).status_code == 200

    feed = httpx.get(f"{served.url}/api/v1/feed").json()["clips"]
    assert [item["cid"] for item in feed] == [a["cid"] for a in reversed(added)]
    for item, clip in zip(feed, reversed(added), strict=True):
        assert item["poster"] == f"/ipfs/{clip['poster']}"
        seconds = float(clip["name"][len("clip")])
        assert (item["duration"], item["width"], item["height"]) == (pytest.approx(seconds, abs=0.1), WIDTH, HEIGHT)
    pins = {p["cid"]: p for p in httpx.get(f"{served.url}/api/v1/pins", headers=tok).json()["pins"]}
    assert pins[added[0]["poster"]]["poster_of"] == added[0]["cid"]
    assert pins[added[1]["cid"]]["poster"] == f"/ipfs/{added[1]['poster']}"
    assert pins[added[1]["cid"]]["poster_of"] is None
    assert added[1]["poster"] not in pins  # posters are holds, not pins


def test_a_clip_from_before_posters_gets_one_when_first_asked(served: Served, clips: dict[str, Path],
                                                              tmp_path: Path) -> None:  # fmt: skip
    """A clip that arrives without a poster (here: a CAR import, as from a node before this change) gets
    one the first time its facts are asked for, and the feed fills it in."""
    other = Node(tmp_path / "old")
    cid = other.ok("add", str(clips["4"]), "--json").json["cid"]
    other.ok("export", cid, "-o", str(tmp_path / "clip.car"))
    served.node.ok("import", str(tmp_path / "clip.car"))
    item = poll(lambda: next((i for i in httpx.get(f"{served.url}/api/v1/feed").json()["clips"]
                              if i["cid"] == cid and i["poster"]), None))  # fmt: skip
    check_poster(served, item["poster"].removeprefix("/ipfs/"), tmp_path)
    assert clip_facts(served, cid)["poster"] == item["poster"]


def test_clip_endpoint_shapes_and_refusals(served: Served, clips: dict[str, Path], tmp_path: Path) -> None:
    added = served.node.ok("add", str(clips["3"]), "--json").json
    facts = clip_facts(served, added["cid"])
    assert facts == {"cid": added["cid"], "name": "clip3.mp4", "size": added["size"], "type": "video/mp4",
                     "duration": pytest.approx(3.0, abs=0.1), "width": WIDTH, "height": HEIGHT,
                     "poster": f"/ipfs/{added['poster']}"}  # fmt: skip
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "clip.mp4").write_bytes(clips["3"].read_bytes())
    folder = served.node.ok("add", "-r", str(tmp_path / "folder"), "--json").json["cid"]
    unknown = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"  # the CID of b"hello world"
    for path, status in ((f"/api/v1/clip/{folder}", 400), (f"/api/v1/poster/{folder}", 400),
                         (f"/api/v1/clip/{unknown}", 404), ("/api/v1/clip/not-a-cid", 400),
                         (f"/api/v1/poster/{unknown}", 404), ("/api/v1/poster/not-a-cid", 400)):  # fmt: skip
        got = httpx.get(served.url + path)
        assert got.status_code == status, (path, got.text)
        assert "error" in got.json()
