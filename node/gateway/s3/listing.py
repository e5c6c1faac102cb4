"""S3 listings computed from a sorted key source, with no I/O: ListObjects (v1), ListObjectsV2,
ListMultipartUploads and ListParts pages.

Participants: an S3 client paging through a bucket (boto3 and @aws-sdk/client-s3 with ListObjectsV2, Mastodon's
aws-sdk-s3 and Flysystem with ListObjects v1, ``prefix`` + ``delimiter=/``), and the gateway, which owns the
catalogue and hands us a *source*: a callable that, given a string, yields the entries that sort strictly
after it, in order (``SELECT ... WHERE bucket = ? AND key > ? ORDER BY key``, read lazily).

Goals: S3's page for any combination of ``prefix``, ``delimiter``, ``marker`` / ``start-after`` /
``continuation-token`` and ``max-keys``, while reading no more than the page needs: at most ``max-keys + 1``
rows per call of the source, and a common prefix costs one row, not the thousands of keys it rolls up, because
the walk then calls the source again from past the whole prefix (``skip_bound``). So a million keys under
``photos/`` are never read to list ``/`` with ``delimiter=/``.

Non-goals: versions (ListObjectVersions), unordered listings, and I/O: the caller queries, then writes the page
with ``xml.py``.

Semantics (S3's, checked in ``tests/fast/test_s3_listing.py`` against Ceph's s3-tests expectations, which are run
against AWS):
- Order is by code point, which is UTF-8 byte order (SQLite's default BINARY collation; S3 lists "in UTF-8
  binary order").
- With a delimiter, a key whose remainder after ``prefix`` contains the delimiter rolls up into the common
  prefix ending at its first delimiter; each common prefix is one entry against ``max-keys``, listed once.
- An *entry* (a key or a common prefix) is listed only if it sorts after the marker. A marker that is a common
  prefix (S3's NextMarker after one) or lies inside one therefore skips the whole prefix: that is how paging
  resumes after ``boo/`` without listing ``boo/`` again.
- ``IsTruncated`` is true only if another entry exists after the page (S3 looks ahead; a page that ends
  exactly at the last entry is not truncated); ``max-keys=0`` gives an empty, untruncated page.
- v1: ``Marker`` is always echoed (empty when absent); ``NextMarker`` only when truncated *and* a delimiter
  was given (then it is the page's last entry, key or prefix); without a delimiter the client continues from
  the last ``Key``.
- v2: ``continuation-token`` wins over ``start-after``; both are echoed as sent (an empty token is echoed and
  lists from the start). Our tokens are opaque (base64url of a version byte and the last entry); one that does
  not decode is 400 ``InvalidArgument``. ``KeyCount`` counts keys and common prefixes.
- An empty delimiter is no delimiter (S3 leaves ``Delimiter`` out of the response).
- ``max-keys`` / ``max-uploads`` / ``max-parts``: an integer >= 0, capped at 1000; anything else is 400
  ``InvalidArgument``. ``encoding-type``: only ``url`` (case-insensitively), else 400 ``InvalidArgument``.
- ListMultipartUploads: entries are (key, upload id) in the source's order (S3 sorts a key's uploads by
  initiation time; make upload ids sort that way, or order by (key, created, id) and resolve the marker's
  position in SQL). ``upload-id-marker`` counts only with ``key-marker``: then the uploads of that key after
  that id are listed, then the keys after it; without it, listing resumes after every upload of ``key-marker``.
- ListParts: parts with a number above ``part-number-marker``; ``NextPartNumberMarker`` is the last part listed.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .errors import S3Error
from .names import MAX_KEY_BYTES

MAX_LIST = 1000  # S3's cap on max-keys, max-uploads and max-parts
MAX_PART_NUMBER = 10000
TOKEN_VERSION = b"\x01"
# A string greater than every key (at most 1024 UTF-8 bytes, so at most 256 code points of 4 bytes) that
# starts with a given prefix: prefix + U+10FFFF repeated this many times.
_SKIP_CHARS = MAX_KEY_BYTES // 4 + 1
_MAX_CHAR = "\U0010ffff"


def _invalid(message: str) -> S3Error:
    return S3Error("InvalidArgument", 400, message)


# -- what the catalogue hands us ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectSummary:
    """One object as a listing shows it. ``etag`` is as S3 sends it (quoted or not: ``xml.py`` quotes)."""

    key: str
    size: int
    etag: str
    last_modified: float  # epoch seconds
    owner_id: str = ""
    owner_display_name: str = ""
    storage_class: str = "STANDARD"


@dataclass(frozen=True)
class UploadSummary:
    """One multipart upload in progress."""

    key: str
    upload_id: str
    initiated: float  # epoch seconds
    owner_id: str = ""
    owner_display_name: str = ""
    storage_class: str = "STANDARD"


@dataclass(frozen=True)
class PartSummary:
    """One uploaded part. ``checksums`` maps S3's element names (``ChecksumCRC32``, ...) to base64 values."""

    part_number: int
    etag: str
    size: int
    last_modified: float
    checksums: Mapping[str, str] = field(default_factory=dict)


# A source: given a string, the entries whose key sorts strictly after it, in ascending key order.
ObjectSource = Callable[[str], Iterable[tuple[str, ObjectSummary]]]
# Given (key, upload_id | None): the uploads after that position in the listing order; ``None`` means after
# every upload of that key (key > key), a string means that key's uploads after that id, then later keys.
UploadSource = Callable[[str, str | None], Iterable[UploadSummary]]
# Given a part number: the parts numbered above it, ascending.
PartSource = Callable[[int], Iterable[PartSummary]]

T = TypeVar("T")


def skip_bound(prefix: str) -> str:
    """A string that every key starting with ``prefix`` sorts at or before, and every later key after:
    "the keys after this" is "the keys after the whole prefix". Valid for keys of at most 1024 UTF-8 bytes."""
    return prefix + _MAX_CHAR * _SKIP_CHARS


def source_from_sorted(pairs: Sequence[tuple[str, ObjectSummary]]) -> ObjectSource:
    """An ``ObjectSource`` over an in-memory list sorted by key (for tests and small buckets)."""
    import bisect

    keys = [k for k, _ in pairs]

    def after(bound: str) -> Iterator[tuple[str, ObjectSummary]]:
        for i in range(bisect.bisect_right(keys, bound), len(pairs)):
            yield pairs[i]

    return after


def source_from_iterator(pairs: Iterable[tuple[str, ObjectSummary]]) -> ObjectSource:
    """An ``ObjectSource`` over a one-pass sorted iterator: each call resumes where the last stopped and
    skips forward to its bound (the walk only moves forward and drops only what it has seen)."""
    it = iter(pairs)

    def after(bound: str) -> Iterator[tuple[str, ObjectSummary]]:
        for item in it:
            if item[0] > bound:
                yield item

    return after


def uploads_from_sorted(uploads: Sequence[UploadSummary]) -> UploadSource:
    """An ``UploadSource`` over an in-memory list sorted by key, then in the order a key's uploads list."""

    def after(key: str, upload_id: str | None) -> Iterator[UploadSummary]:
        start = 0
        while start < len(uploads) and uploads[start].key < key:
            start += 1
        same = start
        while same < len(uploads) and uploads[same].key == key:
            same += 1
        if upload_id is not None:  # that key's uploads after the marker's (by position, else by id)
            ids = [u.upload_id for u in uploads[start:same]]
            if upload_id in ids:
                yield from uploads[start + ids.index(upload_id) + 1 : same]
            else:
                yield from (u for u in uploads[start:same] if u.upload_id > upload_id)
        yield from uploads[same:]

    return after


def parts_from_sorted(parts: Sequence[PartSummary]) -> PartSource:
    """A ``PartSource`` over an in-memory list sorted by part number."""

    def after(number: int) -> Iterator[PartSummary]:
        return (p for p in parts if p.part_number > number)

    return after


# -- query parameters ---------------------------------------------------------------------------------------


def parse_max(value: str | None, name: str = "max-keys", default: int = MAX_LIST) -> int:
    """``max-keys`` / ``max-uploads`` / ``max-parts``: absent -> ``default``; an integer >= 0, capped at 1000."""
    if value is None:
        return default
    text = value.strip()
    if not text.isdigit() or not text.isascii():
        if text.startswith("-") and text[1:].isdigit():
            raise _invalid(f"Argument {name} must be an integer between 0 and 2147483647")
        raise _invalid(f"Provided {name} not an integer or within integer range")
    number = int(text)
    if number > 2147483647:
        raise _invalid(f"Provided {name} not an integer or within integer range")
    return min(number, MAX_LIST)


def parse_encoding_type(value: str | None) -> str | None:
    """``encoding-type``: ``url`` or absent."""
    if value is None:
        return None
    if value.lower() != "url":
        raise _invalid("Invalid Encoding Method specified in Request")
    return "url"


def parse_part_number_marker(value: str | None) -> int:
    if value is None or value == "":
        return 0
    text = value.strip()
    if not text.isascii() or not text.isdigit() or int(text) > 2147483647:
        raise _invalid("Provided part-number-marker not an integer or within integer range")
    return int(text)


def encode_token(last: str) -> str:
    """An opaque ListObjectsV2 continuation token naming the last entry of a page."""
    raw = TOKEN_VERSION + last.encode("utf-8", "surrogatepass")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_token(token: str) -> str:
    """The last entry a continuation token of ours names; anything else is 400 ``InvalidArgument``."""
    try:
        text = token.strip().encode("ascii")
        raw = base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))
        if not raw.startswith(TOKEN_VERSION) or base64.urlsafe_b64encode(raw).rstrip(b"=") != text.rstrip(b"="):
            raise ValueError("not ours")
        return raw[len(TOKEN_VERSION) :].decode("utf-8")
    except (ValueError, UnicodeError, binascii.Error):
        raise _invalid("The continuation token provided is incorrect") from None


# -- the walk -----------------------------------------------------------------------------------------------


@dataclass
class _Walk(Generic[T]):
    entries: list[tuple[str, T | None]]  # (key, summary) for keys, (common prefix, None) for common prefixes
    truncated: bool = False
    rows_read: int = 0
    calls: int = 0


def _common_prefix(key: str, prefix: str, delimiter: str) -> str | None:
    if not delimiter:
        return None
    i = key.find(delimiter, len(prefix))
    return None if i < 0 else key[: i + len(delimiter)]


def bound_below(prefix: str) -> str:
    """A string that every key starting with ``prefix`` sorts after, and every smaller key at or before
    (keys of at most 1024 UTF-8 bytes): where to start reading a prefix without reading the keys before it."""
    if not prefix:
        return ""
    last = ord(prefix[-1])
    if last == 0:
        return prefix[:-1]
    below = last - 1
    if 0xD800 <= below < 0xE000:  # no key holds a surrogate
        below = 0xD7FF
    return prefix[:-1] + chr(below) + _MAX_CHAR * _SKIP_CHARS


def _walk(
    first: Iterable[tuple[str, T]],
    more: Callable[[str], Iterable[tuple[str, T]]],
    prefix: str,
    delimiter: str,
    after: str,
    limit: int,
    *,
    floor: str | None,
) -> _Walk[T]:
    """Entries (keys and common prefixes) under ``prefix`` that sort after ``after``, at most ``limit``, and
    whether one more exists. ``first`` is the first read; each read is abandoned at the first key that rolls
    up, and ``more(bound)`` reads again from past that whole prefix. Keys at or below ``floor`` are skipped
    (a source may repeat its bound); ``floor=None`` keeps keys equal to ``after`` (uploads of the key marker
    after the upload-id marker, which the source has already picked)."""
    walk: _Walk[T] = _Walk([])
    if limit <= 0:
        return walk
    rows: Iterable[tuple[str, T]] = first
    while True:
        walk.calls += 1
        restart: str | None = None
        for key, summary in rows:
            walk.rows_read += 1
            if (floor is not None and key <= floor) or key < after:
                continue
            if not key.startswith(prefix):
                if key > prefix:
                    return walk  # past every key under the prefix
                continue
            cp = _common_prefix(key, prefix, delimiter)
            if cp is not None:
                if cp > after:
                    if len(walk.entries) == limit:
                        walk.truncated = True
                        return walk
                    walk.entries.append((cp, None))
                restart = skip_bound(cp)
                break
            if len(walk.entries) == limit:
                walk.truncated = True
                return walk
            walk.entries.append((key, summary))
        if restart is None:
            return walk
        floor = restart
        rows = more(restart)


def _object_walk(source: ObjectSource, prefix: str, delimiter: str, after: str, limit: int) -> _Walk[ObjectSummary]:
    bound = max(after, bound_below(prefix))
    first = source(bound) if limit > 0 else ()
    return _walk(first, source, prefix, delimiter, after, limit, floor=bound)


# -- ListObjects v1 and v2 ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectPage:
    """One page of ListObjects (v1) or ListObjectsV2, with the request's parameters to echo."""

    version: int  # 1 or 2
    prefix: str
    delimiter: str  # "" for none
    max_keys: int
    encoding_type: str | None
    contents: list[ObjectSummary]
    common_prefixes: list[str]
    is_truncated: bool
    # v1
    marker: str = ""
    next_marker: str | None = None
    # v2
    continuation_token: str | None = None
    next_continuation_token: str | None = None
    start_after: str | None = None
    fetch_owner: bool = False
    # how far the walk read
    rows_read: int = 0
    source_calls: int = 0

    @property
    def key_count(self) -> int:
        return len(self.contents) + len(self.common_prefixes)


def _split(walk: _Walk[T]) -> tuple[list[T], list[str]]:
    contents: list[T] = []
    prefixes: list[str] = []
    for name, summary in walk.entries:
        if summary is None:
            prefixes.append(name)
        else:
            contents.append(summary)
    return contents, prefixes


def list_objects_v1(
    source: ObjectSource,
    *,
    prefix: str = "",
    delimiter: str = "",
    marker: str = "",
    max_keys: int = MAX_LIST,
    encoding_type: str | None = None,
) -> ObjectPage:
    """A ListObjects (v1) page: entries after ``marker``; ``NextMarker`` only with a delimiter, when truncated."""
    max_keys = max(0, min(max_keys, MAX_LIST))
    walk = _object_walk(source, prefix, delimiter, marker, max_keys)
    contents, prefixes = _split(walk)
    next_marker = walk.entries[-1][0] if walk.truncated and delimiter and walk.entries else None
    return ObjectPage(
        1,
        prefix,
        delimiter,
        max_keys,
        encoding_type,
        contents,
        prefixes,
        walk.truncated,
        marker=marker,
        next_marker=next_marker,
        rows_read=walk.rows_read,
        source_calls=walk.calls,
    )


def list_objects_v2(
    source: ObjectSource,
    *,
    prefix: str = "",
    delimiter: str = "",
    continuation_token: str | None = None,
    start_after: str | None = None,
    max_keys: int = MAX_LIST,
    encoding_type: str | None = None,
    fetch_owner: bool = False,
) -> ObjectPage:
    """A ListObjectsV2 page. A non-empty ``continuation_token`` (validated here) wins over ``start_after``."""
    max_keys = max(0, min(max_keys, MAX_LIST))
    after = decode_token(continuation_token) if continuation_token else start_after or ""
    walk = _object_walk(source, prefix, delimiter, after, max_keys)
    contents, prefixes = _split(walk)
    next_token = encode_token(walk.entries[-1][0]) if walk.truncated and walk.entries else None
    return ObjectPage(
        2,
        prefix,
        delimiter,
        max_keys,
        encoding_type,
        contents,
        prefixes,
        walk.truncated,
        continuation_token=continuation_token,
        next_continuation_token=next_token,
        start_after=start_after,
        fetch_owner=fetch_owner,
        rows_read=walk.rows_read,
        source_calls=walk.calls,
    )


def list_objects(source: ObjectSource, query: Mapping[str, str]) -> ObjectPage:
    """The page a bucket GET's query asks for: ``list-type=2`` is ListObjectsV2, anything else v1 (as S3).

    ``query`` maps each parameter to its (first) value, already percent-decoded.
    """
    prefix = query.get("prefix", "")
    delimiter = query.get("delimiter", "")
    max_keys = parse_max(query.get("max-keys"))
    encoding_type = parse_encoding_type(query.get("encoding-type"))
    if query.get("list-type") == "2":
        return list_objects_v2(
            source,
            prefix=prefix,
            delimiter=delimiter,
            continuation_token=query.get("continuation-token"),
            start_after=query.get("start-after"),
            max_keys=max_keys,
            encoding_type=encoding_type,
            fetch_owner=query.get("fetch-owner", "").lower() == "true",
        )
    return list_objects_v1(
        source,
        prefix=prefix,
        delimiter=delimiter,
        marker=query.get("marker", ""),
        max_keys=max_keys,
        encoding_type=encoding_type,
    )


# -- ListMultipartUploads -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadPage:
    prefix: str
    delimiter: str
    key_marker: str
    upload_id_marker: str
    max_uploads: int
    encoding_type: str | None
    uploads: list[UploadSummary]
    common_prefixes: list[str]
    is_truncated: bool
    next_key_marker: str
    next_upload_id_marker: str
    rows_read: int = 0
    source_calls: int = 0


def list_multipart_uploads(
    source: UploadSource,
    *,
    prefix: str = "",
    delimiter: str = "",
    key_marker: str = "",
    upload_id_marker: str = "",
    max_uploads: int = MAX_LIST,
    encoding_type: str | None = None,
) -> UploadPage:
    """A ListMultipartUploads page. ``upload_id_marker`` is ignored without ``key_marker``, as in S3."""
    max_uploads = max(0, min(max_uploads, MAX_LIST))
    if not key_marker:
        upload_id_marker = ""

    def more(bound: str) -> Iterator[tuple[str, UploadSummary]]:
        return ((u.key, u) for u in source(bound, None))

    if max_uploads <= 0:
        first: Iterable[tuple[str, UploadSummary]] = ()
        floor: str | None = key_marker
    elif upload_id_marker and key_marker.startswith(prefix):  # that key's uploads after the id, then later keys
        first = ((u.key, u) for u in source(key_marker, upload_id_marker))
        floor = None
    else:
        floor = max(key_marker, bound_below(prefix))
        first = more(floor)
    walk = _walk(first, more, prefix, delimiter, key_marker, max_uploads, floor=floor)
    uploads, prefixes = _split(walk)
    next_key = next_id = ""
    if walk.truncated and walk.entries:
        name, last = walk.entries[-1]
        next_key = name
        next_id = last.upload_id if last is not None else ""
    return UploadPage(
        prefix,
        delimiter,
        key_marker,
        upload_id_marker,
        max_uploads,
        encoding_type,
        uploads,
        prefixes,
        walk.truncated,
        next_key,
        next_id,
        walk.rows_read,
        walk.calls,
    )


def list_multipart_uploads_query(source: UploadSource, query: Mapping[str, str]) -> UploadPage:
    """The page a ``GET /bucket?uploads`` query asks for."""
    return list_multipart_uploads(
        source,
        prefix=query.get("prefix", ""),
        delimiter=query.get("delimiter", ""),
        key_marker=query.get("key-marker", ""),
        upload_id_marker=query.get("upload-id-marker", ""),
        max_uploads=parse_max(query.get("max-uploads"), "max-uploads"),
        encoding_type=parse_encoding_type(query.get("encoding-type")),
    )


# -- ListParts ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartPage:
    part_number_marker: int
    max_parts: int
    parts: list[PartSummary]
    is_truncated: bool
    next_part_number_marker: int
    rows_read: int = 0


def list_parts(source: PartSource, *, part_number_marker: int = 0, max_parts: int = MAX_LIST) -> PartPage:
    """A ListParts page: parts numbered above the marker, at most ``max_parts``, looking one part ahead."""
    max_parts = max(0, min(max_parts, MAX_LIST))
    parts: list[PartSummary] = []
    truncated = False
    rows = 0
    if max_parts > 0:
        for part in source(part_number_marker):
            rows += 1
            if part.part_number <= part_number_marker:
                continue
            if len(parts) == max_parts:
                truncated = True
                break
            parts.append(part)
    next_marker = parts[-1].part_number if parts else 0
    return PartPage(part_number_marker, max_parts, parts, truncated, next_marker, rows)


def list_parts_query(source: PartSource, query: Mapping[str, str]) -> PartPage:
    """The page a ``GET /bucket/key?uploadId=...`` query asks for."""
    return list_parts(
        source,
        part_number_marker=parse_part_number_marker(query.get("part-number-marker")),
        max_parts=parse_max(query.get("max-parts"), "max-parts"),
    )
