"""S3 entity tags and conditional requests, with no I/O (RFC 9110 section 13, formerly RFC 7232; S3's GetObject).

Participants: an S3 client (boto3, aws-sdk, Flysystem) that sends ``If-*`` or ``x-amz-copy-source-if-*``
headers, and the gateway that holds the object's ETag and Last-Modified time.

Goals: the ETags S3 gives (the hex MD5 of a simple object; for a multipart object the MD5 of the concatenated
binary MD5s of its parts, then ``-N`` for N parts), quoted on the wire; and the 304 / 412 decisions S3 makes.

Non-goals: weak ETags of our own (S3's are always strong), ranges (``If-Range`` is the range code's), and
the 409 ``ConditionalRequestConflict`` of racing conditional writes (the store's transaction decides that).

Requests: ``If-Match`` and ``If-None-Match`` carry ``*`` or a comma-separated list of entity tags (quoted, as
RFC 9110 asks, or bare, as many S3 users send them and S3 accepts); ``If-Modified-Since`` and
``If-Unmodified-Since`` carry an HTTP-date (IMF-fixdate, RFC 850 or asctime; an unparsable one is ignored).

Responses (``evaluate``): ``None`` to go on, or the status to answer with. Precedence is RFC 9110 13.2.2,
which is also what S3 documents for its pairs of headers:
1. ``If-Match`` present: false -> 412 (``If-Unmodified-Since`` is then not evaluated: S3's "If-Match true
   and If-Unmodified-Since false -> 200 OK").
2. otherwise ``If-Unmodified-Since``: modified after the date -> 412.
3. ``If-None-Match`` present: false -> 304 for GET and HEAD, 412 for other methods (``If-Modified-Since``
   is then not evaluated: S3's "If-None-Match false and If-Modified-Since true -> 304").
4. otherwise, for GET and HEAD only, ``If-Modified-Since``: not modified since the date -> 304.
The ``x-amz-copy-source-if-*`` headers of CopyObject and UploadPartCopy follow the same order, but every
failure is 412 (S3: copy-source-if-none-match false with copy-source-if-modified-since true -> 412).
A write (PutObject's ``If-None-Match: *`` / ``If-Match``) against a key that has no object: ``If-Match``
gives 404 (S3 answers NoSuchKey), ``If-None-Match: *`` succeeds. Times compare at whole seconds, since
Last-Modified is sent at that resolution.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

NOT_MODIFIED = 304
PRECONDITION_FAILED = 412
NO_SUCH_KEY = 404

_HEX_MD5 = re.compile(r"[0-9a-fA-F]{32}")


def quote_etag(etag: str) -> str:
    """The ETag as sent in headers and XML: in double quotes (an already quoted one is kept as it is)."""
    if len(etag) >= 2 and etag.startswith('"') and etag.endswith('"'):
        return etag
    return f'"{etag}"'


def unquote_etag(etag: str) -> str:
    """The opaque tag without its quotes and without a weak ``W/`` prefix; surrounding blanks dropped."""
    etag = etag.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    if len(etag) >= 2 and etag.startswith('"') and etag.endswith('"'):
        return etag[1:-1]
    return etag


def md5_etag(data: bytes) -> str:
    """The ETag of an object stored in one piece (PutObject, CopyObject): the hex MD5 of its bytes, unquoted."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def multipart_etag(part_etags: Iterable[str | bytes]) -> str:
    """The ETag S3 gives a completed multipart upload, unquoted: ``hex(md5(md5_1 || ... || md5_N))-N``.

    Each part is its ETag as UploadPart returned it (32 hex digits, quoted or not) or its 16-byte binary MD5.
    """
    digest = hashlib.md5(usedforsecurity=False)
    count = 0
    for part in part_etags:
        if isinstance(part, bytes):
            if len(part) != 16:
                raise ValueError("a part's binary MD5 is 16 bytes")
            digest.update(part)
        else:
            tag = unquote_etag(part)
            if not _HEX_MD5.fullmatch(tag):
                raise ValueError(f"not a part ETag (32 hex digits): {part!r}")
            digest.update(bytes.fromhex(tag))
        count += 1
    if count == 0:
        raise ValueError("a multipart upload has at least one part")
    return f"{digest.hexdigest()}-{count}"


def parse_etag_list(value: str) -> list[tuple[bool, str]] | None:
    """An ``If-Match`` / ``If-None-Match`` value as ``[(weak, opaque_tag), ...]``; ``None`` stands for ``*``.

    Quoted tags may hold commas (RFC 9110 allows them); a bare token runs to the next comma. A quote left open
    ends the list.
    """
    value = value.strip()
    if value == "*":
        return None
    tags: list[tuple[bool, str]] = []
    i, n = 0, len(value)
    while i < n:
        while i < n and value[i] in " \t,":
            i += 1
        if i >= n:
            break
        weak = value.startswith("W/", i)
        if weak:
            i += 2
        if i < n and value[i] == '"':
            close = value.find('"', i + 1)
            if close < 0:
                break
            tags.append((weak, value[i + 1 : close]))
            i = close + 1
        else:
            comma = value.find(",", i)
            end = n if comma < 0 else comma
            token = value[i:end].strip()
            if token:
                tags.append((weak, token))
            i = end
    return tags


def etag_matches(value: str, etag: str | None, *, weak: bool) -> bool:
    """Whether an If-Match (``weak=False``: strong comparison) or If-None-Match (``weak=True``) list matches.

    ``etag`` is the current object's ETag (quoted or not), ``None`` when there is no object: then only
    nothing matches, not even ``*``.
    """
    if etag is None:
        return False
    tags = parse_etag_list(value)
    if tags is None:
        return True
    current = unquote_etag(etag)
    return any(tag == current and (weak or not is_weak) for is_weak, tag in tags)


def parse_http_date(value: str) -> float | None:
    """An HTTP-date as epoch seconds, or ``None`` if it is not one (the condition is then ignored)."""
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # asctime and zone-less forms are GMT in HTTP
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


@dataclass(frozen=True)
class Conditions:
    """The four conditional headers of one request (``None`` where absent)."""

    if_match: str | None = None
    if_none_match: str | None = None
    if_modified_since: str | None = None
    if_unmodified_since: str | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> Conditions:
        """From ``If-Match``, ``If-None-Match``, ``If-Modified-Since``, ``If-Unmodified-Since``.

        ``headers`` is looked up with lowercase names (Starlette's ``Headers`` is case-insensitive anyway).
        """
        return cls(
            headers.get("if-match"),
            headers.get("if-none-match"),
            headers.get("if-modified-since"),
            headers.get("if-unmodified-since"),
        )

    @classmethod
    def from_copy_source_headers(cls, headers: Mapping[str, str]) -> Conditions:
        """From the ``x-amz-copy-source-if-*`` headers of CopyObject and UploadPartCopy."""
        return cls(
            headers.get("x-amz-copy-source-if-match"),
            headers.get("x-amz-copy-source-if-none-match"),
            headers.get("x-amz-copy-source-if-modified-since"),
            headers.get("x-amz-copy-source-if-unmodified-since"),
        )

    def present(self) -> bool:
        return any(
            v is not None for v in (self.if_match, self.if_none_match, self.if_modified_since, self.if_unmodified_since)
        )


def evaluate(
    conditions: Conditions,
    etag: str | None,
    last_modified: float | None,
    *,
    method: str = "GET",
    copy_source: bool = False,
) -> int | None:
    """``None`` to proceed, else the status S3 answers with: 304, 412, or 404 (If-Match on a missing key).

    ``etag`` and ``last_modified`` (epoch seconds) describe the current object; both ``None`` when there is
    none. ``method`` is the HTTP method; ``copy_source`` turns every failure into 412 (copy conditions).
    """
    read = method.upper() in ("GET", "HEAD")
    lm = None if last_modified is None else math.floor(last_modified)
    if conditions.if_match is not None:
        if etag is None and not read and not copy_source:
            return NO_SUCH_KEY
        if not etag_matches(conditions.if_match, etag, weak=False):
            return PRECONDITION_FAILED
    elif conditions.if_unmodified_since is not None and lm is not None:
        since = parse_http_date(conditions.if_unmodified_since)
        if since is not None and lm > since:
            return PRECONDITION_FAILED
    if conditions.if_none_match is not None:
        if etag_matches(conditions.if_none_match, etag, weak=True):
            return NOT_MODIFIED if read and not copy_source else PRECONDITION_FAILED
    elif conditions.if_modified_since is not None and lm is not None and (read or copy_source):
        since = parse_http_date(conditions.if_modified_since)
        if since is not None and lm <= since:
            return PRECONDITION_FAILED if copy_source else NOT_MODIFIED
    return None
