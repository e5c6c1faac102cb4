"""Laravel's S3 disk calls, made in the order Laravel makes them, against any S3 endpoint.

PHP is not available on these machines: this is an EMULATION. boto3 sends the same S3 operations with
the same parameters as Laravel's `Storage::disk('s3')` (Illuminate\\Filesystem\\AwsS3V3Adapter over
league/flysystem-aws-s3-v3's AwsS3V3Adapter over aws-sdk-php's S3Client); the bytes on the wire are
boto3's, not aws-sdk-php's (no `aws-sdk-php` User-Agent, boto3's own checksum and Expect choices).
Where each call comes from (league/flysystem src/AwsS3V3/AwsS3V3Adapter.php, 3.x, unless noted):

  Storage::put($path, $contents, 'public')   write() -> upload() -> S3Client::upload() (aws-sdk-php
        src/S3/ObjectUploader.php): under mup_threshold (16 MiB) one PutObject {ACL: determineAcl()
        = PortableVisibilityConverter 'public-read' | 'private', ContentType: finfo's guess}
  Storage::writeStream($path, $big)          the same upload(): at or above 16 MiB a
        MultipartUploader (src/S3/MultipartUploader.php): CreateMultipartUpload {ACL, ContentType},
        UploadPart of 5 MiB parts, 3 at a time (ObjectUploader 'concurrency' => 3),
        CompleteMultipartUpload
  Storage::exists($path)                     fileExists() -> S3Client::doesObjectExistV2 -> HeadObject
        (a 404 means "no"; aws-sdk-php counts an AccessDenied as "exists")
  Storage::directoryExists($dir)             directoryExists() -> ListObjectsV2 {Prefix: 'dir/',
        MaxKeys: 1, Delimiter: '/'}
  Storage::files($dir) / directories($dir)   listContents($dir, deep: false) -> the ListObjectsV2
        paginator {Prefix: 'dir/', Delimiter: '/'}; Flysystem 1.x-2.x (Laravel <= 8) and the
        3.0 releases used the ListObjects (v1) paginator with the same parameters: both are sent
  Storage::allFiles($dir)                    listContents($dir, deep: true): no Delimiter
  Storage::getVisibility($path)              visibility() -> GetObjectAcl; public when a grant gives
        READ to http://acs.amazonaws.com/groups/global/AllUsers (PortableVisibilityConverter)
  Storage::copy($from, $to)                  copy() -> visibility($from) (GetObjectAcl), then
        S3Client::copy() (src/S3/ObjectCopier.php): HeadObject of the source, then CopyObject
        {ACL: the source's, MetadataDirective: 'COPY', CopySource: '/bucket/' . rawurlencode($key)}
        -- note the leading slash and the key's "/" sent as %2F; this harness puts that exact header
  Storage::move($from, $to)                  move() -> copy() then delete() (DeleteObject)
  Storage::setVisibility($path, 'private')   setVisibility() -> PutObjectAcl {ACL}
  Storage::get / readStream                  read()/readStream() -> GetObject
  Storage::size / mimeType / lastModified / checksum
                                             fetchFileMetadata() -> HeadObject (checksum = the ETag)
  Storage::url($path)                        publicUrl() -> S3Client::getObjectUrl (path or virtual
        style by use_path_style_endpoint)
  Storage::temporaryUrl($path, $exp, ['ResponseContentDisposition' => ...])
                                             Illuminate AwsS3V3Adapter::temporaryUrl ->
        createPresignedRequest(GetObject + options)
  Storage::temporaryUploadUrl($path, $exp)   Illuminate AwsS3V3Adapter::temporaryUploadUrl ->
        createPresignedRequest(PutObject)
  Storage::makeDirectory($dir)               createDirectory() -> upload('dir/', '') -> PutObject of
        an empty body
  Storage::deleteDirectory($dir)             deleteDirectory() -> S3Client::deleteMatchingObjects
        (src/S3/S3ClientTrait.php): ListObjects (v1) {Prefix} iterator -> src/S3/BatchDelete.php:
        DeleteObjects {Delete: {Objects: [{Key}]}} in batches of 1000
  Storage::delete($path)                     delete() -> DeleteObject

Then, outside Laravel, boto3's own checksum behaviour on PutObject/UploadPart, in the mode given by
--checksum: when_supported (botocore's default: a CRC32 in x-amz-checksum-crc32 over http; over https,
for streaming bodies, aws-chunked with the CRC32 in a trailer) or when_required. The "aws-chunked"
step makes botocore take its https choice over plain http, so a server behind a TLS-terminating
proxy is covered.

Usage (or the S3_* environment variables of the same names):
    python s3_laravel.py --endpoint http://127.0.0.1:9000 --region us-east-1 --access-key-id K
        --secret-access-key S --bucket B --workdir DIR [--checksum when_supported|when_required]
        [--addressing path|virtual] [--public-base URL] [--origin https://laravel.example] [--size-mib 20]
--addressing virtual is use_path_style_endpoint false (Laravel's default); it needs a host name
endpoint (http://s3.localhost:9000); names under .localhost resolve to 127.0.0.1 in this process.
Prints one JSON line; exits 1 with "FAIL <step>: <why>" on stderr at the first failure.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import ipaddress
import json
import os
import secrets
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import boto3
import botocore
from botocore.config import Config
from botocore.exceptions import ClientError

MiB = 1024 * 1024
MUP_THRESHOLD = 16777216  # ObjectUploader::DEFAULT_MULTIPART_THRESHOLD
PART_SIZE = 5 * MiB  # MultipartUploader::PART_MIN_SIZE, its default part size
ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"

# *.localhost is loopback (RFC 6761); the system resolver here does not know it.
_getaddrinfo = socket.getaddrinfo


def _loopback_getaddrinfo(host, *args, **kwargs):
    if isinstance(host, str) and host.endswith(".localhost"):
        host = "127.0.0.1"
    return _getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _loopback_getaddrinfo


class Failure(Exception):
    pass


def check(step: str, cond: object, why) -> None:
    if not cond:
        raise Failure(f"{step}: {why() if callable(why) else why}")


DEVIATIONS: list[str] = []


def soft(step: str, cond: object, why) -> None:
    """A departure from S3 that none of Laravel's calls depends on: recorded, not fatal."""
    if not cond:
        DEVIATIONS.append(f"{step}: {why() if callable(why) else why}")


def gen(size: int, seed: str) -> bytes:
    """Deterministic bytes that do not compress: a SHA-256 counter stream."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def md5_etag(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


def multipart_etag(data: bytes, part_size: int) -> str:
    digests = [hashlib.md5(data[o : o + part_size]).digest() for o in range(0, len(data), part_size)]
    return f'"{hashlib.md5(b"".join(digests)).hexdigest()}-{len(digests)}"'


def expect_error(step: str, fn, status: int, codes: tuple[str, ...] | None = None, lenient: bool = False):
    try:
        fn()
    except ClientError as exc:
        got = exc.response["ResponseMetadata"]["HTTPStatusCode"]
        code = exc.response.get("Error", {}).get("Code")
        (soft if lenient else check)(
            step,
            got == status and (codes is None or code in codes),
            f"expected HTTP {status} {codes or ''}, got {got} {code}",
        )
        return exc
    raise Failure(f"{step}: expected HTTP {status}, the call succeeded")


WIRE_HEADERS = [
    "content-length",
    "content-encoding",
    "content-md5",
    "content-type",
    "transfer-encoding",
    "expect",
    "x-amz-content-sha256",
    "x-amz-decoded-content-length",
    "x-amz-trailer",
    "x-amz-sdk-checksum-algorithm",
    "x-amz-checksum-crc32",
    "x-amz-checksum-crc32c",
    "x-amz-checksum-mode",
    "x-amz-acl",
    "range",
    "x-amz-copy-source",
    "x-amz-metadata-directive",
]
WIRE: dict[str, dict] = {}


def record_wire(request, **kwargs) -> None:
    """before-send: the request as botocore finished it (signed), one summary per operation."""
    headers = {k.lower(): (v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()}
    seen = {}
    for name in WIRE_HEADERS:
        if name in headers:
            seen[name] = (
                "(present)" if name == "content-md5" or name.startswith("x-amz-checksum-crc") else headers[name]
            )
    auth = headers.get("authorization", "")
    if "SignedHeaders=" in auth:
        seen["signed_headers"] = auth.split("SignedHeaders=", 1)[1].split(",", 1)[0]
    url = urllib.parse.urlsplit(request.url)
    seen["host"] = url.netloc
    seen["path"] = url.path
    if url.query:
        seen["query"] = url.query
    operation = kwargs.get("event_name", "").rsplit(".", 1)[-1]
    chunked = "aws-chunked" in headers.get("content-encoding", "")
    WIRE.setdefault(operation + (" (aws-chunked body)" if chunked else ""), seen)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Laravel Storage::disk('s3') call sequences via boto3")
    env = os.environ.get
    parser.add_argument("--endpoint", default=env("S3_ENDPOINT"))
    parser.add_argument("--region", default=env("S3_REGION"))
    parser.add_argument("--access-key-id", default=env("S3_ACCESS_KEY_ID"))
    parser.add_argument("--secret-access-key", default=env("S3_SECRET_ACCESS_KEY"))
    parser.add_argument("--bucket", default=env("S3_BUCKET"))
    parser.add_argument("--workdir", default=env("S3_WORKDIR"))
    parser.add_argument(
        "--checksum", default=env("S3_CHECKSUM", "when_supported"), choices=("when_supported", "when_required")
    )
    parser.add_argument("--addressing", default=env("S3_ADDRESSING", "path"), choices=("path", "virtual"))
    parser.add_argument("--public-base", default=env("S3_PUBLIC_BASE"))
    parser.add_argument("--origin", default=env("S3_ORIGIN", "https://laravel.example"))
    parser.add_argument("--size-mib", type=float, default=float(env("S3_SIZE_MIB", "20")))
    args = parser.parse_args(argv)
    for need in ("endpoint", "region", "access_key_id", "secret_access_key", "bucket", "workdir"):
        if not getattr(args, need):
            raise Failure(f"arguments: --{need.replace('_', '-')} (or S3_{need.upper()}) is required")
    host = urllib.parse.urlsplit(args.endpoint).hostname or ""
    try:
        ipaddress.ip_address(host)
        is_ip = True
    except ValueError:
        is_ip = False
    if args.addressing == "virtual" and is_ip:
        raise Failure(
            "arguments: --addressing virtual needs a host name endpoint (http://s3.localhost:PORT): "
            "botocore cannot put a bucket in front of an IP address"
        )
    return args


def main(argv: list[str]) -> dict:
    args = parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    bucket = args.bucket
    run = secrets.token_hex(4)
    prefix = f"laravel-{args.checksum.replace('_', '-')}-{run}/"
    steps: list[str] = []
    measured: dict = {}
    t0 = time.monotonic()

    def step(name: str, fn):
        start = time.monotonic()
        result = fn()
        steps.append(name)
        measured[f"{name}_ms"] = round((time.monotonic() - start) * 1000)
        return result

    # config/filesystems.php 's3' disk: key, secret, region, bucket, endpoint, use_path_style_endpoint
    config = Config(
        signature_version="s3v4",  # aws-sdk-php signs everything, presigned URLs too, with SigV4 (boto3: SigV2 URLs)
        s3={"addressing_style": args.addressing},
        request_checksum_calculation=args.checksum,
        response_checksum_validation=args.checksum,
        retries={"max_attempts": 1, "mode": "standard"},
    )
    s3 = boto3.client(
        "s3",
        endpoint_url=args.endpoint,
        region_name=args.region,
        aws_access_key_id=args.access_key_id,
        aws_secret_access_key=args.secret_access_key,
        config=config,
    )
    s3.meta.events.register("before-send.s3.*", record_wire)

    endpoint = urllib.parse.urlsplit(args.endpoint)
    # S3Client::getObjectUrl
    if args.public_base:
        public_base = args.public_base.rstrip("/") + "/"
    elif args.addressing == "path":
        public_base = f"{endpoint.scheme}://{endpoint.netloc}/{bucket}/"
    else:
        public_base = f"{endpoint.scheme}://{bucket}.{endpoint.netloc}/"

    def public_url(key: str) -> str:
        return public_base + urllib.parse.quote(key, safe="/")

    def http(step_name: str, url: str, *, method="GET", headers=None, data=None) -> tuple[int, dict, bytes]:
        request = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()

    def anonymous(step_name: str, key: str, status: int, *, range_=None, cors=True, data=None):
        headers = {"Origin": args.origin}
        if range_:
            headers["Range"] = range_
        got, headers_back, body = http(step_name, public_url(key), headers=headers)
        check(
            step_name,
            got == status,
            lambda: f"anonymous GET {public_url(key)} {range_ or ''}: HTTP {got}, expected {status}: {body[:200]!r}",
        )
        if cors:
            allow = headers_back.get("access-control-allow-origin")
            check(step_name, allow in ("*", args.origin), f"Access-Control-Allow-Origin {allow!r} on the anonymous GET")
        if data is not None:
            check(step_name, body == data, "anonymous GET bytes differ")
        return headers_back

    def visibility(key: str) -> str:
        grants = s3.get_object_acl(Bucket=bucket, Key=key)["Grants"]
        public = any(g["Grantee"].get("URI") == ALL_USERS and g["Permission"] == "READ" for g in grants)
        return "public" if public else "private"

    def acl(vis: str) -> str:
        return "public-read" if vis == "public" else "private"

    def upload(key: str, body: bytes, vis: str, content_type: str):
        """ObjectUploader: PutObject below 16 MiB, MultipartUploader at or above it."""
        if len(body) < MUP_THRESHOLD:
            return s3.put_object(Bucket=bucket, Key=key, Body=body, ACL=acl(vis), ContentType=content_type)
        created = s3.create_multipart_upload(Bucket=bucket, Key=key, ACL=acl(vis), ContentType=content_type)
        upload_id = created["UploadId"]

        def part(number: int) -> dict:
            chunk = body[(number - 1) * PART_SIZE : number * PART_SIZE]
            etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk)["ETag"]
            check("upload_multipart", etag == md5_etag(chunk), f"UploadPart {number} ETag {etag}")
            return {"PartNumber": number, "ETag": etag}

        count = (len(body) + PART_SIZE - 1) // PART_SIZE
        with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
            parts = list(pool.map(part, range(1, count + 1)))
        return s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )

    def copy(source: str, destination: str) -> None:
        """Flysystem copy(): visibility() of the source, then ObjectCopier."""
        source_acl = acl(visibility(source))
        s3.head_object(Bucket=bucket, Key=source)
        php_copy_source = f"/{bucket}/" + urllib.parse.quote(source, safe="-_.~")  # rawurlencode($key)

        def put_php_copy_source(request, **kwargs):
            # Replace, not add: botocore's headers keep duplicates, and it would sign both values.
            del request.headers["x-amz-copy-source"]
            request.headers["x-amz-copy-source"] = php_copy_source

        s3.meta.events.register_first("before-sign.s3.CopyObject", put_php_copy_source, unique_id="php-copy-source")
        try:
            result = s3.copy_object(
                Bucket=bucket, Key=destination, CopySource=php_copy_source, ACL=source_acl, MetadataDirective="COPY"
            )
        finally:
            s3.meta.events.unregister("before-sign.s3.CopyObject", unique_id="php-copy-source")
        measured.setdefault("copy_source_header", php_copy_source)
        return result

    disk = f"{prefix}uploads/"
    avatar = gen(180 * 1024 + 11, f"avatar-{run}")
    doc = b"%PDF-1.4\n" + gen(40 * 1024, f"doc-{run}")
    files = {
        f"{disk}avatars/{run}.jpg": (avatar, "image/jpeg", "public"),
        f"{disk}avatars/{run}-thumb.jpg": (avatar[: 20 * 1024], "image/jpeg", "public"),
        f"{disk}invoices/{run}.pdf": (doc, "application/pdf", "private"),
    }

    # ---- Storage::put($path, $contents, $visibility) ----
    def put_files():
        for key, (data, content_type, vis) in files.items():
            result = upload(key, data, vis, content_type)
            check("put_with_acl", result["ETag"] == md5_etag(data), f"PutObject ETag {result['ETag']} for {key}")

    step("put_with_acl", put_files)

    # ---- Storage::makeDirectory ----
    step("make_directory", lambda: upload(f"{disk}empty-dir/", b"", "public", "application/x-directory"))

    # ---- Storage::writeStream of a big file: multipart ----
    video_size = int(args.size_mib * MiB) + 999
    video = gen(video_size, f"video-{run}")
    video_key = f"{disk}videos/{run}.mp4"
    result = step("upload_multipart", lambda: upload(video_key, video, "public", "video/mp4"))
    measured["upload_bytes"] = video_size
    measured["upload_mib_s"] = round(video_size / MiB / (measured["upload_multipart_ms"] / 1000), 1)
    check(
        "upload_multipart",
        result["ETag"] == multipart_etag(video, PART_SIZE),
        f"ETag {result['ETag']}, expected {multipart_etag(video, PART_SIZE)}",
    )
    measured["multipart_etag"] = result["ETag"]

    # ---- Storage::exists / size / mimeType / lastModified / checksum ----
    def exists_and_metadata():
        for key, (data, content_type, _) in files.items():
            head = s3.head_object(Bucket=bucket, Key=key)
            check("head_object", head["ContentLength"] == len(data), f"{key}: ContentLength {head['ContentLength']}")
            check("head_object", head["ContentType"] == content_type, f"{key}: ContentType {head['ContentType']}")
            check("head_object", head["ETag"] == md5_etag(data), f"{key}: ETag {head['ETag']}")
            check("head_object", head.get("LastModified") is not None, f"{key}: no Last-Modified")
        expect_error("head_object_missing", lambda: s3.head_object(Bucket=bucket, Key=f"{disk}nope.jpg"), 404, ("404",))

    step("exists_head_object", exists_and_metadata)

    # ---- Storage::directoryExists / files / directories / allFiles ----
    def listings():
        probe = s3.list_objects_v2(Bucket=bucket, Prefix=f"{disk}avatars/", MaxKeys=1, Delimiter="/")
        check(
            "list_directory_exists",
            "Contents" in probe or "CommonPrefixes" in probe,
            "directoryExists() would be false",
        )
        check(
            "list_directory_exists",
            probe["KeyCount"] == 1 and probe["IsTruncated"] is True,
            f"KeyCount {probe.get('KeyCount')} IsTruncated {probe.get('IsTruncated')}",
        )
        gone = s3.list_objects_v2(Bucket=bucket, Prefix=f"{disk}nothing/", MaxKeys=1, Delimiter="/")
        check(
            "list_directory_exists",
            "Contents" not in gone and "CommonPrefixes" not in gone,
            "a missing directory exists",
        )
        expected_files = sorted([f"{disk}avatars/{run}-thumb.jpg", f"{disk}avatars/{run}.jpg"])
        expected_dirs = sorted(f"{disk}{d}/" for d in ("avatars", "empty-dir", "invoices", "videos"))
        for version in ("v2", "v1"):
            paginator = s3.get_paginator("list_objects_v2" if version == "v2" else "list_objects")
            prefixes, contents = [], []
            for page in paginator.paginate(Bucket=bucket, Prefix=disk, Delimiter="/"):
                prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
                contents += [c["Key"] for c in page.get("Contents", [])]
                check(
                    "list_objects_" + version,
                    page.get("Delimiter") == "/",
                    f"Delimiter echoed as {page.get('Delimiter')!r}",
                )
            check(
                "list_objects_" + version,
                sorted(prefixes) == expected_dirs and contents == [],
                f"directories {prefixes}, files {contents}",
            )
            page = paginator.paginate(Bucket=bucket, Prefix=f"{disk}avatars/", Delimiter="/").build_full_result()
            keys = [c["Key"] for c in page.get("Contents", [])]
            check("list_objects_" + version, keys == expected_files, f"files {keys} (key order)")
            deep = paginator.paginate(Bucket=bucket, Prefix=disk).build_full_result()
            all_keys = [c["Key"] for c in deep.get("Contents", [])]
            check(
                "list_objects_" + version,
                sorted(all_keys) == sorted([*files, video_key, f"{disk}empty-dir/"]) and all_keys == sorted(all_keys),
                f"allFiles {all_keys}",
            )
            sizes = {c["Key"]: c["Size"] for c in deep["Contents"]}
            check("list_objects_" + version, sizes[video_key] == video_size, f"Size {sizes[video_key]}")
        # v1 pagination by Marker, as the aws-sdk-php ListObjects iterator does it
        marker, seen, pages = None, [], 0
        while True:
            kwargs = {"Bucket": bucket, "Prefix": disk, "MaxKeys": 2}
            if marker:
                kwargs["Marker"] = marker
            page = s3.list_objects(**kwargs)
            pages += 1
            keys = [c["Key"] for c in page.get("Contents", [])]
            seen += keys
            if not page.get("IsTruncated"):
                break
            marker = page.get("NextMarker") or keys[-1]
            check("list_objects_v1", pages < 20, "pagination does not end")
        check("list_objects_v1", seen == sorted([*files, video_key, f"{disk}empty-dir/"]), f"Marker pages gave {seen}")
        measured["list_v1_pages"] = pages

    step("list_contents", listings)

    # ---- Storage::get / readStream, and a Range read ----
    def reads():
        body = s3.get_object(Bucket=bucket, Key=video_key)["Body"].read()
        check("get_object", hashlib.sha256(body).hexdigest() == hashlib.sha256(video).hexdigest(), "bytes differ")
        ranged = s3.get_object(Bucket=bucket, Key=video_key, Range="bytes=6000000-6000099")
        check(
            "get_object",
            ranged["ContentRange"] == f"bytes 6000000-6000099/{video_size}",
            f"ContentRange {ranged['ContentRange']}",
        )
        check("get_object", ranged["Body"].read() == video[6000000:6000100], "ranged bytes differ")

    step("get_object", reads)

    # ---- Storage::url + a browser ----
    def public_reads():
        key = next(iter(files))
        anonymous("anonymous_get_public", key, 200, data=avatar)
        back = anonymous("anonymous_get_public", video_key, 206, range_="bytes=0-9", data=video[:10])
        check(
            "anonymous_get_public",
            back.get("content-range") == f"bytes 0-9/{video_size}",
            f"Content-Range {back.get('content-range')}",
        )
        anonymous("anonymous_get_public", f"{disk}invoices/{run}.pdf", 403, cors=False)

    step("anonymous_get_public", public_reads)

    # ---- Storage::getVisibility / setVisibility ----
    def visibilities():
        key = next(iter(files))
        check("visibility", visibility(key) == "public", "a public-read object reads as private")
        check("visibility", visibility(f"{disk}invoices/{run}.pdf") == "private", "a private object reads as public")
        s3.put_object_acl(Bucket=bucket, Key=key, ACL="private")
        check("visibility", visibility(key) == "private", "still public after PutObjectAcl private")
        anonymous("set_visibility_private", key, 403, cors=False)
        s3.put_object_acl(Bucket=bucket, Key=key, ACL="public-read")
        anonymous("set_visibility_public", key, 200, data=avatar)

    step("get_set_visibility", visibilities)

    # ---- Storage::copy / move ----
    def copies():
        source = next(iter(files))
        copied = f"{disk}avatars/copies/{run} copy.jpg"
        result = copy(source, copied)
        check(
            "copy_object",
            result["CopyObjectResult"]["ETag"] == md5_etag(avatar),
            f"CopyObjectResult ETag {result['CopyObjectResult']['ETag']}",
        )
        head = s3.head_object(Bucket=bucket, Key=copied)
        check(
            "copy_object",
            head["ContentType"] == "image/jpeg" and head["ContentLength"] == len(avatar),
            f"copy metadata {head['ContentType']} {head['ContentLength']}",
        )
        anonymous("copy_object", copied, 200, data=avatar)  # the source's ACL, passed on by Flysystem
        private_copy = f"{disk}invoices/{run}-copy.pdf"
        copy(f"{disk}invoices/{run}.pdf", private_copy)
        anonymous("copy_object", private_copy, 403, cors=False)
        moved = f"{disk}avatars/{run}-moved.jpg"
        copy(copied, moved)
        s3.delete_object(Bucket=bucket, Key=copied)
        check("move", s3.list_objects_v2(Bucket=bucket, Prefix=copied)["KeyCount"] == 0, "move left the source")
        check("move", s3.get_object(Bucket=bucket, Key=moved)["Body"].read() == avatar, "moved bytes differ")

    step("copy_move", copies)

    # ---- Storage::temporaryUrl / temporaryUploadUrl ----
    def presigned():
        disposition = 'attachment; filename="invoice 2026.pdf"'
        url = s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": bucket, "Key": f"{disk}invoices/{run}.pdf", "ResponseContentDisposition": disposition},
            ExpiresIn=300,
        )
        status, headers, body = http("temporary_url", url)
        check("temporary_url", status == 200 and body == doc, f"HTTP {status}: {body[:200]!r}")
        check(
            "temporary_url",
            headers.get("content-disposition") == disposition,
            f"Content-Disposition {headers.get('content-disposition')!r}",
        )
        tampered = url.replace("X-Amz-Signature=", "X-Amz-Signature=0000", 1)
        bad, _, _ = http("temporary_url", tampered)
        measured["presigned_tampered_status"] = bad
        soft("temporary_url", bad == 403, f"a presigned URL with a wrong signature got HTTP {bad}")
        upload_key = f"{disk}incoming/{run}.bin"
        payload = gen(300 * 1024 + 1, f"presigned-put-{run}")
        put_url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": upload_key}, ExpiresIn=300)
        # a plain HTTP PUT, with a Content-Type (urllib's default one, a form, makes moto_server hang)
        status, _, body = http(
            "temporary_upload_url",
            put_url,
            method="PUT",
            data=payload,
            headers={"Content-Type": "application/octet-stream"},
        )
        check("temporary_upload_url", status == 200, f"HTTP {status}: {body[:200]!r}")
        check(
            "temporary_upload_url",
            s3.get_object(Bucket=bucket, Key=upload_key)["Body"].read() == payload,
            "bytes differ",
        )
        anonymous("temporary_upload_url", upload_key, 403, cors=False)

    step("presigned_urls", presigned)

    # ---- boto3's own checksums (not Laravel): PutObject with a file body, header or aws-chunked trailer ----
    def boto3_checksums():
        data = gen(3 * MiB + 5, f"chk-{run}")
        path = workdir / "chk.bin"
        path.write_bytes(data)
        for label, force_trailer in (("header", False), ("aws_chunked", True)):
            key = f"{prefix}checksums/{label}.bin"

            def trailer_as_over_tls(params, **kwargs):
                algorithm = params.get("context", {}).get("checksum", {}).get("request_algorithm")
                if isinstance(algorithm, dict):
                    algorithm["in"] = "trailer"

            if force_trailer:
                s3.meta.events.register("before-call.s3.PutObject", trailer_as_over_tls, unique_id="force-trailer")
            try:
                with path.open("rb") as body:
                    put = s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/octet-stream")
            finally:
                s3.meta.events.unregister("before-call.s3.PutObject", unique_id="force-trailer")
            check("put_object_" + label, put["ETag"] == md5_etag(data), f"ETag {put['ETag']}")
            if args.checksum == "when_supported":
                soft("put_object_" + label, "ChecksumCRC32" in put, "no x-amz-checksum-crc32 in the PutObject answer")
                measured[f"put_{label}_crc32"] = put.get("ChecksumCRC32")
            got = s3.get_object(
                Bucket=bucket, Key=key, **({"ChecksumMode": "ENABLED"} if args.checksum == "when_supported" else {})
            )
            check("put_object_" + label, got["Body"].read() == data, "read back differs (aws-chunked framing stored?)")
            check("put_object_" + label, got["ContentLength"] == len(data), f"ContentLength {got['ContentLength']}")
        transfer = f"{prefix}checksums/upload_file.bin"
        s3.upload_file(str(path), bucket, transfer)  # s3transfer: one PutObject below its 8 MiB threshold
        check("upload_file", s3.head_object(Bucket=bucket, Key=transfer)["ContentLength"] == len(data), "size")
        s3.delete_objects(
            Bucket=bucket,
            Delete={
                "Objects": [{"Key": f"{prefix}checksums/{n}.bin"} for n in ("header", "aws_chunked", "upload_file")]
            },
        )

    step("boto3_checksums", boto3_checksums)

    # ---- Storage::deleteDirectory: ListObjects (v1) + DeleteObjects ----
    def delete_directory():
        keys = []
        for page in s3.get_paginator("list_objects").paginate(Bucket=bucket, Prefix=f"{disk}avatars/"):
            keys += [c["Key"] for c in page.get("Contents", [])]
        check("delete_directory", len(keys) == 3, f"listed {keys}")
        result = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys]})
        check("delete_directory", not result.get("Errors"), f"Errors {result.get('Errors')}")
        check(
            "delete_directory",
            sorted(d["Key"] for d in result.get("Deleted", [])) == sorted(keys),
            f"Deleted {result.get('Deleted')}",
        )
        left = s3.list_objects(Bucket=bucket, Prefix=f"{disk}avatars/")
        check("delete_directory", not left.get("Contents"), f"left {left.get('Contents')}")

    step("delete_directory", delete_directory)

    # ---- Storage::delete, one by one, then nothing is left ----
    def delete_rest():
        rest = [c["Key"] for c in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
        for key in rest:
            answer = s3.delete_object(Bucket=bucket, Key=key)
            check(
                "delete_object",
                answer["ResponseMetadata"]["HTTPStatusCode"] == 204,
                f"HTTP {answer['ResponseMetadata']['HTTPStatusCode']}",
            )
        check("delete_object", s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["KeyCount"] == 0, "objects left")
        expect_error("delete_object", lambda: s3.head_object(Bucket=bucket, Key=video_key), 404, ("404",))
        check(
            "delete_object",
            s3.delete_object(Bucket=bucket, Key=video_key)["ResponseMetadata"]["HTTPStatusCode"] == 204,
            "DeleteObject of a gone key is not 204",
        )

    step("delete_object", delete_rest)

    effective = "virtual" if any(w["host"].startswith(f"{bucket}.") for w in WIRE.values()) else "path"
    return {
        "harness": "s3_laravel",
        "ok": True,
        "emulates": "Laravel Storage::disk('s3') (Flysystem AwsS3V3Adapter + aws-sdk-php helpers), replayed with boto3",
        "sdk": {"boto3": boto3.__version__, "botocore": botocore.__version__},
        "python": sys.version.split()[0],
        "endpoint": args.endpoint,
        "addressing": args.addressing,
        "effective_addressing": effective,
        "checksum": args.checksum,
        "bucket": bucket,
        "prefix": prefix,
        "public_base": public_base,
        "steps": steps,
        "measured": measured,
        "total_ms": round((time.monotonic() - t0) * 1000),
        "deviations": list(dict.fromkeys(DEVIATIONS)),
        "wire": WIRE,
    }


if __name__ == "__main__":
    try:
        print(json.dumps(main(sys.argv[1:])), flush=True)
    except Failure as failure:
        print(f"FAIL {failure}", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:
        import traceback

        print(f"FAIL uncaught: {type(exc).__name__}: {exc}", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
