"""The S3 listener on a real ``serve``, driven by boto3 (the SDK's own signing, checksums and transfers).

Objects are files in the store with the CIDs ``add`` gives; identical uploads share one copy; a
private or deleted object leaves every public path; each bad input is refused with S3's code and
leaves the store as it was. tests/integration/test_s3_clients.py runs the JavaScript and Ruby SDKs' flows.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import REPO, Served, gen

MiB = 1024 * 1024


def client(served: Served, key: dict[str, Any], **config: Any) -> Any:
    assert served.s3_url
    return boto3.client(
        "s3", endpoint_url=served.s3_url, region_name="us-east-1",
        aws_access_key_id=key["access_key_id"], aws_secret_access_key=key["secret_access_key"],
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **config),
    )  # fmt: skip


def new_key(served: Served, name: str, *limit: str) -> dict[str, Any]:
    return served.node.ok("s3", "key", "create", "--name", name, *limit, "--json").json  # type: ignore[no-any-return]


def code_of(call: Any) -> tuple[str, int]:
    with pytest.raises(ClientError) as raised:
        call()
    error = raised.value.response
    return error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]


def store_blocks(served: Served) -> int:
    return int(served.node.ok("repo", "stat", "--json").json["blocks"])


@pytest.fixture
def s3(served: Served) -> Iterator[tuple[Served, Any]]:
    yield served, client(served, new_key(served, "tenant-a"))


@pytest.mark.parametrize("checksums", ["when_supported", "when_required"])
def test_put_get_head_range_list_delete_with_boto3(s3: tuple[Served, Any], tmp_path: Path, checksums: str) -> None:
    """boto3's current default sends aws-chunked bodies with CRC32 trailers; ``when_required`` sends plain
    bodies. Either way the object is the file ``add`` would make, with its MD5 ETag and kept headers."""
    served, _ = s3
    c = client(served, new_key(served, f"k-{checksums}"), request_checksum_calculation=checksums)
    c.create_bucket(Bucket="media")
    data = gen(3 * MiB + 5, checksums.encode())
    put = c.put_object(
        Bucket="media", Key="accounts/1/clip.mp4", Body=data, ACL="public-read", ContentType="video/mp4",
        CacheControl="public, max-age=315576000, immutable", Metadata={"origin": "test"},
        ContentDisposition='inline; filename="clip.mp4"',
    )  # fmt: skip
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    head = c.head_object(Bucket="media", Key="accounts/1/clip.mp4")
    assert head["ContentLength"] == len(data) and head["ContentType"] == "video/mp4"
    assert head["CacheControl"] == "public, max-age=315576000, immutable" and head["Metadata"] == {"origin": "test"}
    assert head["ContentDisposition"] == 'inline; filename="clip.mp4"'
    cid = head["ResponseMetadata"]["HTTPHeaders"]["x-ipfs-roots"]
    (tmp_path / "clip.mp4").write_bytes(data)
    assert served.node.ok("add", str(tmp_path / "clip.mp4"), "--no-pin", "--json").json["cid"] == cid
    part = c.get_object(Bucket="media", Key="accounts/1/clip.mp4", Range="bytes=1000000-1999999")
    assert part["Body"].read() == data[1000000:2000000] and part["ContentRange"] == f"bytes 1000000-1999999/{len(data)}"
    with httpx.Client(timeout=30) as web:  # the same bytes on the IPFS gateway, and anonymously
        assert web.get(f"{served.url}/ipfs/{cid}").content == data
        public = web.get(f"{served.s3_url}/media/accounts/1/clip.mp4", headers={"Origin": "https://social.example"})
        assert public.status_code == 200 and public.content == data
        assert public.headers["access-control-allow-origin"] == "*" and public.headers["etag"] == put["ETag"]
    for i in range(5):
        c.put_object(Bucket="media", Key=f"accounts/{i % 2}/thumb-{i}.jpg", Body=f"thumb {i}".encode())
    v2 = c.list_objects_v2(Bucket="media", Prefix="accounts/0/", MaxKeys=2)
    assert [o["Key"] for o in v2["Contents"]] == ["accounts/0/thumb-0.jpg", "accounts/0/thumb-2.jpg"]
    more = c.list_objects_v2(Bucket="media", Prefix="accounts/0/", ContinuationToken=v2["NextContinuationToken"])
    assert [o["Key"] for o in more["Contents"]] == ["accounts/0/thumb-4.jpg"] and not more["IsTruncated"]
    v1 = c.list_objects(Bucket="media", Prefix="accounts/", Delimiter="/")
    assert [p["Prefix"] for p in v1["CommonPrefixes"]] == ["accounts/0/", "accounts/1/"]
    deleted = c.delete_objects(
        Bucket="media", Delete={"Objects": [{"Key": f"accounts/{i % 2}/thumb-{i}.jpg"} for i in range(5)]}
    )
    assert len(deleted["Deleted"]) == 5
    c.delete_object(Bucket="media", Key="accounts/1/clip.mp4")
    assert code_of(lambda: c.head_object(Bucket="media", Key="accounts/1/clip.mp4"))[1] == 404
    assert c.list_objects_v2(Bucket="media")["KeyCount"] == 0
    c.delete_bucket(Bucket="media")


def test_identical_uploads_share_one_copy_and_privacy_is_real(served: Served) -> None:
    """Two tenants upload the same video: one copy on disk. When the public one's key is privatised
    (PutObjectAcl private, as Mastodon does on suspension) while the other is private, the CID leaves the
    gateway, Bitswap and the viewer hub; deleting every key releases it to gc."""
    a = client(served, new_key(served, "mastodon.example"))
    b = client(served, new_key(served, "peertube.example"))
    a.create_bucket(Bucket="masto-media")
    b.create_bucket(Bucket="tube-media")
    data = gen(2 * MiB + 3, b"shared video")
    a.put_object(Bucket="masto-media", Key="cache/v.mp4", Body=data, ACL="public-read")
    blocks = store_blocks(served)
    b.put_object(Bucket="tube-media", Key="videos/v.mp4", Body=data)  # private
    assert store_blocks(served) == blocks
    cid = a.head_object(Bucket="masto-media", Key="cache/v.mp4")["ResponseMetadata"]["HTTPHeaders"]["x-ipfs-roots"]
    assert code_of(lambda: b.get_object(Bucket="masto-media", Key="cache/v.mp4")) == ("AccessDenied", 403)
    with httpx.Client(timeout=30) as web:
        assert web.get(f"{served.url}/ipfs/{cid}").status_code == 200
        a.put_object_acl(Bucket="masto-media", Key="cache/v.mp4", ACL="private")
        assert web.get(f"{served.url}/ipfs/{cid}").status_code == 410
        assert web.get(f"{served.s3_url}/masto-media/cache/v.mp4").status_code == 403
        assert a.get_object(Bucket="masto-media", Key="cache/v.mp4")["Body"].read() == data  # its owner still reads it
        a.put_object_acl(Bucket="masto-media", Key="cache/v.mp4", ACL="public-read")
        assert web.get(f"{served.url}/ipfs/{cid}").status_code == 200
    a.delete_object(Bucket="masto-media", Key="cache/v.mp4")
    b.delete_object(Bucket="tube-media", Key="videos/v.mp4")
    assert served.node.ok("gc", "--json").json["blocks_removed"] >= 9


def test_multipart_in_parallel_is_the_file_add_makes(s3: tuple[Served, Any], tmp_path: Path) -> None:
    """boto3's transfer manager, 5 MiB parts, 4 at once (as PeerTube's lib-storage): the object's CID is the
    one ``add`` gives the whole file and its ETag S3's multipart form; parts of 5,300,000 bytes (not a whole
    number of chunks) give the same CID too."""
    from boto3.s3.transfer import TransferConfig

    served, c = s3
    c.create_bucket(Bucket="videos")
    data = gen(23 * MiB + 17, b"multipart")
    (tmp_path / "v.mp4").write_bytes(data)
    expected = served.node.ok("add", str(tmp_path / "v.mp4"), "--no-pin", "--json").json["cid"]
    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=4)
    c.upload_file(str(tmp_path / "v.mp4"), "videos", "v.mp4", Config=config)
    head = c.head_object(Bucket="videos", Key="v.mp4")
    assert head["ResponseMetadata"]["HTTPHeaders"]["x-ipfs-roots"] == expected and head["ETag"].endswith('-5"')
    upload = c.create_multipart_upload(Bucket="videos", Key="odd.mp4")["UploadId"]
    parts = []
    for number, start in enumerate(range(0, len(data), 5_300_000), 1):
        etag = c.upload_part(Bucket="videos", Key="odd.mp4", UploadId=upload, PartNumber=number,
                             Body=data[start : start + 5_300_000])["ETag"]  # fmt: skip
        parts.append({"PartNumber": number, "ETag": etag})
    listed = c.list_parts(Bucket="videos", Key="odd.mp4", UploadId=upload)["Parts"]
    assert [p["PartNumber"] for p in listed] == list(range(1, len(parts) + 1))
    c.complete_multipart_upload(Bucket="videos", Key="odd.mp4", UploadId=upload, MultipartUpload={"Parts": parts})
    odd = c.head_object(Bucket="videos", Key="odd.mp4")
    assert odd["ResponseMetadata"]["HTTPHeaders"]["x-ipfs-roots"] == expected
    assert (
        c.get_object(Bucket="videos", Key="odd.mp4", Range="bytes=9999990-10000009")["Body"].read()
        == data[9999990:10000010]
    )
    assert c.list_multipart_uploads(Bucket="videos").get("Uploads", []) == []
    copied = c.copy_object(Bucket="videos", Key="copy.mp4", CopySource={"Bucket": "videos", "Key": "v.mp4"})
    assert copied["CopyObjectResult"]["ETag"] == head["ETag"]
    assert c.head_object(Bucket="videos", Key="copy.mp4")["ResponseMetadata"]["HTTPHeaders"]["x-ipfs-roots"] == expected


def test_bad_input_is_refused_with_s3_codes_and_stores_nothing(s3: tuple[Served, Any]) -> None:
    """Tried, each against a real serve: a wrong secret, an unknown key, a clock 20 minutes off, an expired
    presigned URL, a wrong Content-MD5, a wrong CRC32, a body shorter than its Content-Length, bucket names S3
    forbids, a key over 1024 bytes, a key that is not UTF-8, another tenant's bucket, a missing bucket or key,
    parts out of order, a wrong part ETag, a small non-last part, and a PUT past the key's quota."""
    served, c = s3
    c.create_bucket(Bucket="mine")
    blocks = store_blocks(served)
    key = new_key(served, "tenant-b", "--limit", "1MiB")
    wrong = dict(key, secret_access_key="not-the-secret")
    assert code_of(lambda: client(served, wrong).list_buckets()) == ("SignatureDoesNotMatch", 403)
    unknown = dict(key, access_key_id="MNNOSUCHKEY000000000")
    assert code_of(lambda: client(served, unknown).list_buckets()) == ("InvalidAccessKeyId", 403)
    skewed = _skewed_list_buckets(served, key, 20)
    assert skewed.status_code == 403 and "RequestTimeTooSkewed" in skewed.text
    assert _skewed_list_buckets(served, key, 5).status_code == 200
    url = c.generate_presigned_url("get_object", Params={"Bucket": "mine", "Key": "x"}, ExpiresIn=1)
    time.sleep(2)  # the URL's own expiry, not a wait for the server
    assert httpx.get(url, timeout=30).status_code == 403
    assert (
        code_of(lambda: c.put_object(Bucket="mine", Key="m", Body=b"abc", ContentMD5="1B2M2Y8AsgTpgAmY7PhCfg=="))[0]
        == "BadDigest"
    )
    assert (
        code_of(lambda: c.put_object(Bucket="mine", Key="m", Body=b"abc", ChecksumCRC32="AAAAAA=="))[0] == "BadDigest"
    )
    cutter = new_key(served, "tenant-c")
    client(served, cutter).create_bucket(Bucket="cut-short")
    assert _cut_short_put(served, cutter, "/cut-short/clip", declared=20, sent=10).startswith(b"HTTP/1.1 400")
    assert client(served, cutter).list_objects_v2(Bucket="cut-short")["KeyCount"] == 0
    for bad in ("ab", "Upper", "a..b", "192.168.1.1", "-dash", "x" * 64):
        assert code_of(lambda bad=bad: c.create_bucket(Bucket=bad))[0] == "InvalidBucketName"
    assert code_of(lambda: c.put_object(Bucket="mine", Key="k" * 1025, Body=b"x"))[0] == "KeyTooLongError"
    not_utf8 = httpx.put(f"{served.s3_url}/mine/clip%FF%FE.mp4", content=b"x", timeout=30)
    assert not_utf8.status_code == 400 and "InvalidURI" in not_utf8.text
    other = client(served, key)
    assert code_of(lambda: other.put_object(Bucket="mine", Key="x", Body=b"x")) == ("AccessDenied", 403)
    assert code_of(lambda: c.put_object(Bucket="nobucket", Key="x", Body=b"x")) == ("NoSuchBucket", 404)
    assert code_of(lambda: c.get_object(Bucket="mine", Key="absent")) == ("NoSuchKey", 404)
    upload = c.create_multipart_upload(Bucket="mine", Key="mp")["UploadId"]
    first = c.upload_part(Bucket="mine", Key="mp", UploadId=upload, PartNumber=1, Body=b"a" * 1000)["ETag"]
    second = c.upload_part(Bucket="mine", Key="mp", UploadId=upload, PartNumber=2, Body=b"b" * 1000)["ETag"]

    def complete(parts: list[dict[str, Any]]) -> Any:
        return c.complete_multipart_upload(Bucket="mine", Key="mp", UploadId=upload, MultipartUpload={"Parts": parts})

    assert (
        code_of(lambda: complete([{"PartNumber": 2, "ETag": second}, {"PartNumber": 1, "ETag": first}]))[0]
        == "InvalidPartOrder"
    )
    assert code_of(lambda: complete([{"PartNumber": 1, "ETag": second}]))[0] == "InvalidPart"
    assert (
        code_of(lambda: complete([{"PartNumber": 1, "ETag": first}, {"PartNumber": 2, "ETag": second}]))[0]
        == "EntityTooSmall"
    )
    c.abort_multipart_upload(Bucket="mine", Key="mp", UploadId=upload)
    other.create_bucket(Bucket="small-tenant")
    assert (
        code_of(lambda: other.put_object(Bucket="small-tenant", Key="big", Body=b"z" * (2 * MiB)))[0] == "QuotaExceeded"
    )
    served.node.ok("gc")
    assert store_blocks(served) == blocks
    assert c.list_objects_v2(Bucket="mine")["KeyCount"] == 0


def _cut_short_put(served: Served, key: dict[str, Any], path: str, declared: int, sent: int) -> bytes:
    """A signed PUT whose body stops after ``sent`` of the ``declared`` bytes and whose sender then hangs up."""
    import socket
    from urllib.parse import urlsplit

    import botocore.auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    assert served.s3_url
    request = AWSRequest(method="PUT", url=f"{served.s3_url}{path}", data=b"x" * declared)
    request.headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
    request.headers["Content-Length"] = str(declared)
    botocore.auth.S3SigV4Auth(Credentials(key["access_key_id"], key["secret_access_key"]), "s3", "us-east-1").add_auth(
        request
    )
    where = urlsplit(served.s3_url)
    head = f"PUT {path} HTTP/1.1\r\nHost: {where.netloc}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in request.headers.items() if name.lower() != "host"
    )
    with socket.create_connection((where.hostname, where.port), timeout=30) as sock:
        sock.sendall(head.encode() + b"\r\n" + b"x" * sent)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def _skewed_list_buckets(served: Served, key: dict[str, Any], minutes: int) -> httpx.Response:
    """ListBuckets signed by botocore as a client whose clock is ``minutes`` fast would sign it."""
    import datetime as dt
    from unittest import mock

    import botocore.auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="GET", url=f"{served.s3_url}/")
    fast = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(minutes=minutes)
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=fast):  # the client's clock
        botocore.auth.S3SigV4Auth(
            Credentials(key["access_key_id"], key["secret_access_key"]), "s3", "us-east-1"
        ).add_auth(request)
    return httpx.get(request.url, headers=dict(request.headers.items()), timeout=30)


def test_a_multipart_upload_survives_kill_9_of_serve(tmp_path: Path) -> None:
    """serve is SIGKILLed after two parts: after a restart the parts are there, the upload completes, the
    object reads back exact and verify finds nothing wrong."""
    served = Served(tmp_path / "node")
    key = new_key(served, "crash")
    c = client(served, key)
    c.create_bucket(Bucket="crash-bucket")
    data = gen(12 * MiB + 1, b"crash")
    upload = c.create_multipart_upload(Bucket="crash-bucket", Key="v")["UploadId"]
    parts = [
        {"PartNumber": n, "ETag": c.upload_part(Bucket="crash-bucket", Key="v", UploadId=upload, PartNumber=n,
                                                 Body=data[(n - 1) * 5 * MiB : n * 5 * MiB])["ETag"]}
        for n in (1, 2)
    ]  # fmt: skip
    served.proc.send_signal(signal.SIGKILL)
    served.proc.wait(timeout=30)
    again = Served(tmp_path / "node")
    try:
        c = client(again, key)
        assert [p["PartNumber"] for p in c.list_parts(Bucket="crash-bucket", Key="v", UploadId=upload)["Parts"]] == [
            1,
            2,
        ]
        last = c.upload_part(Bucket="crash-bucket", Key="v", UploadId=upload, PartNumber=3, Body=data[10 * MiB :])[
            "ETag"
        ]
        c.complete_multipart_upload(Bucket="crash-bucket", Key="v", UploadId=upload,
                                    MultipartUpload={"Parts": [*parts, {"PartNumber": 3, "ETag": last}]})  # fmt: skip
        assert c.get_object(Bucket="crash-bucket", Key="v")["Body"].read() == data
    finally:
        assert again.stop() == 0
    assert again.node.ok("verify", "--json").json["corrupt"] == []


def test_s3_listener_addresses_and_off_switch(tmp_path: Path) -> None:
    """Virtual-host-style addressing works with ``[s3] domain``; ``--no-s3`` runs no listener."""
    (tmp_path / "n").mkdir()
    (tmp_path / "n" / "config.toml").write_text('[s3]\ndomain = "s3.localhost"\n')
    served = Served(tmp_path / "n")
    try:
        key = new_key(served, "vhost")
        assert served.s3_url
        port = served.s3_url.rsplit(":", 1)[1]
        c = boto3.client(
            "s3", endpoint_url=f"http://s3.localhost:{port}", region_name="us-east-1",
            aws_access_key_id=key["access_key_id"], aws_secret_access_key=key["secret_access_key"],
            config=Config(signature_version="s3v4", s3={"addressing_style": "virtual"}),
        )  # fmt: skip
        seen: list[str] = []
        c.meta.events.register("before-send", lambda request, **_: seen.append(request.url))
        c.meta.events.register("before-send", _to_loopback)
        c.create_bucket(Bucket="vbucket")
        c.put_object(Bucket="vbucket", Key="k", Body=b"hello")
        assert c.get_object(Bucket="vbucket", Key="k")["Body"].read() == b"hello"
        assert seen[0].startswith(f"http://vbucket.s3.localhost:{port}/")
    finally:
        assert served.stop() == 0
    off = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "serve", "--gateway", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0",
         "--no-s3", "--no-dht", "--workers", "1", "--json"],
        stdout=subprocess.PIPE, env={**os.environ, "MEDIANODE_DATA": str(tmp_path / "off")}, cwd=REPO,
    )  # fmt: skip
    try:
        assert off.stdout is not None
        assert json.loads(off.stdout.readline())["s3"] is None
    finally:
        off.terminate()
        assert off.wait(timeout=30) == 0


def _to_loopback(request: Any, **_: Any) -> None:
    """bucket.s3.localhost resolves nowhere on this machine: send to 127.0.0.1, keeping the Host header."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(request.url)
    request.headers["Host"] = parts.netloc
    request.url = urlunsplit(parts._replace(netloc=f"127.0.0.1:{parts.port}"))
