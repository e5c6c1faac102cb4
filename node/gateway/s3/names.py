"""S3 bucket names, object keys, and where a request names them (path-style or virtual-hosted), with no I/O.

Participants: an S3 client (Mastodon's aws-sdk-s3, PeerTube's @aws-sdk/client-s3, Flysystem, boto3) and the
gateway's router, which hands us the ``Host`` header and the request path exactly as it came on the wire.

Goals: refuse, as S3 does, bucket names S3 would refuse at CreateBucket (400 ``InvalidBucketName``), keys over
1024 UTF-8 bytes (400 ``KeyTooLongError``) and paths that do not decode to UTF-8 (400 ``InvalidURI``); find the
bucket and key of a request in either addressing style:
- path-style: ``Host: s3.example``, ``/bucket/key`` (``/bucket`` or ``/bucket/`` name the bucket alone);
- virtual-hosted: ``Host: bucket.s3.example``, ``/key``.
The key is percent-decoded exactly once (``%2F`` is a slash inside the key, ``%252F`` stays ``%2F``; ``+`` is
a plus: paths are not form-encoded), so a key's ``//``, ``..`` and trailing ``/`` are all kept as S3 keeps them.

Non-goals: legacy us-east-1 bucket names (capitals, underscores: CreateBucket refuses them today), access
points, ``s3-website`` and dual-stack host names, and DNS: a host that is neither the base host nor one of its
subdomains is taken as path-style, so a client that reaches us by another name (an IP address, ``localhost``)
still works.

Requests: ``parse_address(host, raw_path, base_host)``; ``raw_path`` without the query (a raw ``?`` ends it:
inside a key it arrives as ``%3F``). Responses: ``(bucket | None, key | None)``, or ``S3Error``.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from .errors import S3Error

MAX_KEY_BYTES = 1024
_BUCKET_CHARS = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4_FORM = re.compile(r"\d+\.\d+\.\d+\.\d+")
RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")  # sthree-configurator is covered by sthree-
RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def _invalid_bucket(name: str) -> S3Error:
    return S3Error("InvalidBucketName", 400, "The specified bucket is not valid.")


def bucket_name_problem(name: str) -> str | None:
    """Why S3 would refuse ``name`` for a new bucket, or ``None`` if it is valid."""
    if not 3 <= len(name) <= 63:
        return "must be 3 to 63 characters long"
    if not _BUCKET_CHARS.fullmatch(name):
        return "may hold only lowercase letters, digits, dots and hyphens, and begins and ends with a letter or digit"
    if ".." in name:
        return "must not contain two adjacent dots"
    if ".-" in name or "-." in name:  # every dot-separated label begins and ends with a letter or digit (DNS)
        return "must not have a hyphen next to a dot"
    if _IPV4_FORM.fullmatch(name):
        return "must not be formatted as an IP address"
    for prefix in RESERVED_PREFIXES:
        if name.startswith(prefix):
            return f"must not start with {prefix!r}"
    for suffix in RESERVED_SUFFIXES:
        if name.endswith(suffix):
            return f"must not end with {suffix!r}"
    return None


def is_valid_bucket_name(name: str) -> bool:
    return bucket_name_problem(name) is None


def validate_bucket_name(name: str) -> str:
    """``name`` if S3 would accept it at CreateBucket; else ``S3Error`` 400 ``InvalidBucketName``."""
    if bucket_name_problem(name) is not None:
        raise _invalid_bucket(name)
    return name


def validate_key(key: str) -> str:
    """``key`` if S3 would store it: at most 1024 bytes in UTF-8 (400 ``KeyTooLongError``), and encodable
    (a lone surrogate, which no UTF-8 request can carry, is 400 ``InvalidURI``). Any other character is
    allowed, control characters included, as in S3; an empty key names no object and is the caller's to refuse.
    """
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise S3Error("InvalidURI", 400, "Couldn't parse the specified URI.") from None
    if size > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError", 400, "Your key is too long")
    return key


def percent_decode(raw: str | bytes) -> str:
    """Percent-decode once, then UTF-8 strictly; bytes that are not UTF-8 are S3's 400 ``InvalidURI``."""
    data = unquote_to_bytes(raw)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise S3Error("InvalidURI", 400, "Couldn't parse the specified URI.") from None


def _split_host(host: str) -> tuple[str, str | None]:
    """``(hostname, port)`` of a Host value, lowercased, without a trailing root dot; IPv6 brackets kept."""
    host = host.strip().lower()
    if host.startswith("["):
        close = host.find("]")
        if close > 0:
            rest = host[close + 1 :]
            return host[: close + 1], rest[1:] if rest.startswith(":") and rest[1:] else None
        return host, None
    name, sep, port = host.rpartition(":")
    if sep and port.isascii() and port.isdigit():
        host = name
    else:
        port = ""
    return host.rstrip("."), port or None


def bucket_from_host(host: str | None, base_host: str) -> str | None:
    """The bucket a virtual-hosted ``Host`` names (``bucket.<base_host>``), else ``None``.

    Ports: when ``base_host`` has one, a Host with a different port is not ours; a Host without a port matches
    any (a proxy may have dropped it).
    """
    if not host:
        return None
    name, port = _split_host(host)
    base_name, base_port = _split_host(base_host)
    if base_port is not None and port is not None and port != base_port:
        return None
    if name.endswith("." + base_name) and len(name) > len(base_name) + 1 and not base_name.startswith("["):
        return name[: -len(base_name) - 1]
    return None


def parse_address(host: str | None, raw_path: str | bytes, base_host: str) -> tuple[str | None, str | None]:
    """``(bucket, key)`` named by a request: ``(None, None)`` is the service (ListBuckets), ``(b, None)`` a
    bucket, ``(b, k)`` an object. ``raw_path`` is the path as received (ASGI ``raw_path``), still
    percent-encoded; bucket and key are decoded once here, and the key is checked with ``validate_key``.
    """
    path = raw_path.decode("latin-1") if isinstance(raw_path, bytes) else raw_path
    path = path.split("?", 1)[0]
    if path.startswith("/"):
        path = path[1:]
    bucket = bucket_from_host(host, base_host)
    if bucket is not None:
        key = percent_decode(path) if path else None
    else:
        bucket_raw, _, key_raw = path.partition("/")
        bucket = percent_decode(bucket_raw) if bucket_raw else None
        key = percent_decode(key_raw) if bucket is not None and key_raw else None
    if key is not None:
        validate_key(key)
    return bucket, key
