"""S3 listing pages (node/gateway/s3/listing.py): the expectations of Ceph's s3-tests (written against AWS),
examples from AWS's documentation and from S3-compatible servers' bug reports measured on AWS, laziness against
a real SQLite ``WHERE key > ? ORDER BY key`` source, and an independent model over random key sets."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.gateway.s3.errors import S3Error
from node.gateway.s3.listing import (
    ObjectPage,
    ObjectSource,
    ObjectSummary,
    PartSummary,
    UploadSummary,
    bound_below,
    decode_token,
    encode_token,
    list_multipart_uploads,
    list_multipart_uploads_query,
    list_objects,
    list_objects_v1,
    list_objects_v2,
    list_parts,
    list_parts_query,
    parse_encoding_type,
    parse_max,
    parse_part_number_marker,
    parts_from_sorted,
    skip_bound,
    source_from_iterator,
    source_from_sorted,
    uploads_from_sorted,
)


def summary(key: str) -> ObjectSummary:
    return ObjectSummary(key, len(key), "d41d8cd98f00b204e9800998ecf8427e", 1_700_000_000.0, "owner", "Owner")


def src(keys: list[str]) -> ObjectSource:
    return source_from_sorted([(k, summary(k)) for k in sorted(keys)])


def keys_of(page: ObjectPage) -> list[str]:
    return [o.key for o in page.contents]


def v1(keys: list[str], prefix: str, delim: str, marker: str, max_keys: int, truncated: bool, objs: list[str],
       prefixes: list[str], next_marker: str | None) -> str | None:  # fmt: skip
    """s3-tests' validate_bucket_list."""
    page = list_objects_v1(src(keys), prefix=prefix, delimiter=delim, marker=marker, max_keys=max_keys)
    assert (page.is_truncated, page.next_marker, keys_of(page), page.common_prefixes) == (
        truncated,
        next_marker,
        objs,
        prefixes,
    )
    return page.next_marker


def v2(keys: list[str], prefix: str, delim: str, token: str | None, max_keys: int, truncated: bool,
       objs: list[str], prefixes: list[str]) -> str | None:  # fmt: skip
    """s3-tests' validate_bucket_listv2."""
    page = list_objects_v2(src(keys), prefix=prefix, delimiter=delim, continuation_token=token, max_keys=max_keys)
    assert (page.is_truncated, keys_of(page), page.common_prefixes) == (truncated, objs, prefixes)
    assert page.key_count == len(objs) + len(prefixes)
    assert (page.next_continuation_token is None) == (not truncated)
    return page.next_continuation_token


# -- s3-tests (ceph/s3-tests s3tests/functional/test_s3.py), which pass against AWS ----------------------------

DELIM_KEYS = ["asdf", "boo/bar", "boo/baz/xyzzy", "cquux/thud", "cquux/bla"]


def test_delimiter_prefix_paging_v1() -> None:
    m = v1(DELIM_KEYS, "", "/", "", 1, True, ["asdf"], [], "asdf")
    m = v1(DELIM_KEYS, "", "/", m or "", 1, True, [], ["boo/"], "boo/")
    v1(DELIM_KEYS, "", "/", m or "", 1, False, [], ["cquux/"], None)
    m = v1(DELIM_KEYS, "", "/", "", 2, True, ["asdf"], ["boo/"], "boo/")
    v1(DELIM_KEYS, "", "/", m or "", 2, False, [], ["cquux/"], None)
    m = v1(DELIM_KEYS, "boo/", "/", "", 1, True, ["boo/bar"], [], "boo/bar")
    v1(DELIM_KEYS, "boo/", "/", m or "", 1, False, [], ["boo/baz/"], None)
    v1(DELIM_KEYS, "boo/", "/", "", 2, False, ["boo/bar"], ["boo/baz/"], None)


def test_delimiter_prefix_paging_v2() -> None:
    t = v2(DELIM_KEYS, "", "/", None, 1, True, ["asdf"], [])
    t = v2(DELIM_KEYS, "", "/", t, 1, True, [], ["boo/"])
    v2(DELIM_KEYS, "", "/", t, 1, False, [], ["cquux/"])
    t = v2(DELIM_KEYS, "", "/", None, 2, True, ["asdf"], ["boo/"])
    v2(DELIM_KEYS, "", "/", t, 2, False, [], ["cquux/"])
    t = v2(DELIM_KEYS, "boo/", "/", None, 1, True, ["boo/bar"], [])
    v2(DELIM_KEYS, "boo/", "/", t, 1, False, [], ["boo/baz/"])
    v2(DELIM_KEYS, "boo/", "/", None, 2, False, ["boo/bar"], ["boo/baz/"])


def test_delimiter_prefix_underscore() -> None:
    keys = ["_obj1_", "_under1/bar", "_under1/baz/xyzzy", "_under2/thud", "_under2/bla"]
    m = v1(keys, "", "/", "", 1, True, ["_obj1_"], [], "_obj1_")
    m = v1(keys, "", "/", m or "", 1, True, [], ["_under1/"], "_under1/")
    v1(keys, "", "/", m or "", 1, False, [], ["_under2/"], None)
    v1(keys, "_under1/", "/", "", 2, False, ["_under1/bar"], ["_under1/baz/"], None)


def test_prefix_ending_with_delimiter_lists_the_key_itself() -> None:
    v1(["asdf/"], "asdf/", "/", "", 1000, False, ["asdf/"], [], None)
    v2(["asdf/"], "asdf/", "/", None, 1000, False, ["asdf/"], [])


@pytest.mark.parametrize(
    ("keys", "delim", "objs", "prefixes"),
    [
        (["foo/bar", "foo/bar/xyzzy", "quux/thud", "asdf"], "/", ["asdf"], ["foo/", "quux/"]),
        (["bar", "baz", "cab", "foo"], "a", ["foo"], ["ba", "ca"]),  # any string delimits
        (["b%ar", "b%az", "c%ab", "foo"], "%", ["foo"], ["b%", "c%"]),
        (["b ar", "b az", "c ab", "foo"], " ", ["foo"], ["b ", "c "]),
        (["b.ar", "b.az", "c.ab", "foo"], ".", ["foo"], ["b.", "c."]),
        (["bar", "baz", "cab", "foo"], "\n", ["bar", "baz", "cab", "foo"], []),  # "unreadable" delimiter
        (["bar", "baz", "cab", "foo"], "", ["bar", "baz", "cab", "foo"], []),  # empty is none
        (["bar", "baz", "cab", "foo"], "/", ["bar", "baz", "cab", "foo"], []),  # delimiter in no key
    ],
)
def test_delimiters(keys: list[str], delim: str, objs: list[str], prefixes: list[str]) -> None:
    for page in (list_objects_v1(src(keys), delimiter=delim), list_objects_v2(src(keys), delimiter=delim)):
        assert (keys_of(page), page.common_prefixes, page.is_truncated) == (objs, prefixes, False)


def test_delimiter_not_skip_special_reads_one_row_for_a_thousand_keys() -> None:
    keys = ["0/"] + [f"0/{i}" for i in range(1000, 1999)] + ["1999", "1999#", "1999+", "2000"]
    page = list_objects_v1(src(keys), delimiter="/")
    assert keys_of(page) == ["1999", "1999#", "1999+", "2000"]
    assert page.common_prefixes == ["0/"]
    assert page.rows_read == 5  # "0/" then, from past the prefix, the four keys


def test_max_keys_and_markers() -> None:
    names = ["bar", "baz", "foo", "quxx"]
    page = list_objects_v1(src(names), max_keys=1)
    assert (keys_of(page), page.is_truncated, page.next_marker) == (["bar"], True, None)  # no delimiter: none
    assert keys_of(list_objects_v1(src(names), marker="bar")) == ["baz", "foo", "quxx"]
    zero = list_objects_v1(src(names), max_keys=0)
    assert (keys_of(zero), zero.is_truncated, zero.rows_read) == ([], False, 0)
    assert list_objects_v2(src(names), max_keys=0).is_truncated is False
    assert list_objects_v1(src(names)).max_keys == 1000
    assert keys_of(list_objects_v1(src(names), marker="blah")) == ["foo", "quxx"]
    after = list_objects_v1(src(names), marker="zzz")
    assert (keys_of(after), after.is_truncated, after.marker) == ([], False, "zzz")
    assert keys_of(list_objects_v1(src(names), marker="\n")) == names
    assert keys_of(list_objects_v2(src(names), start_after="baz", max_keys=2)) == ["foo", "quxx"]
    many = list_objects_v1(src(["foo", "bar", "baz"]), max_keys=2)
    assert (keys_of(many), many.is_truncated) == (["bar", "baz"], True)


def test_continuation_tokens() -> None:
    names = ["bar", "baz", "foo", "quxx"]
    first = list_objects_v2(src(names), max_keys=1)
    token = first.next_continuation_token
    assert token is not None and token != "bar"  # opaque
    second = list_objects_v2(src(names), continuation_token=token)
    assert (keys_of(second), second.continuation_token, second.is_truncated) == (["baz", "foo", "quxx"], token, False)
    # the token wins over start-after, which is still echoed
    a = list_objects_v2(src(names), start_after="bar", max_keys=1)
    b = list_objects_v2(src(names), start_after="bar", continuation_token=a.next_continuation_token)
    assert (keys_of(b), b.start_after) == (["foo", "quxx"], "bar")
    # an empty token is echoed and lists from the start
    empty = list_objects_v2(src(names), continuation_token="")
    assert (keys_of(empty), empty.continuation_token) == (names, "")
    for bad in ("not a token!", "YmFy", "AQ", "////", "AZ_-", "\u00e9"):
        if bad == "AQ":
            assert decode_token(bad) == ""  # the token of the empty name is well-formed
            continue
        with pytest.raises(S3Error) as err:
            list_objects_v2(src(names), continuation_token=bad)
        assert (err.value.code, err.value.status) == ("InvalidArgument", 400)
    for name in ("", "a/b", "\x01\U0001f600é", "x" * 1024):
        assert decode_token(encode_token(name)) == name


# -- AWS's documentation and bug reports measured against AWS ------------------------------------------------


def test_aws_doc_hierarchy_example() -> None:
    # "Organizing objects using prefixes": photos/2006/... with prefix photos/2006/ and delimiter /
    keys = ["sample.jpg", "photos/2006/January/sample.jpg", "photos/2006/index.html"]
    keys += [f"photos/2006/February/sample{i}.jpg" for i in (2, 3, 4)]
    page = list_objects_v2(src(keys), prefix="photos/2006/", delimiter="/")
    assert keys_of(page) == ["photos/2006/index.html"]
    assert page.common_prefixes == ["photos/2006/February/", "photos/2006/January/"]
    root = list_objects_v2(src(keys), delimiter="/")
    assert (keys_of(root), root.common_prefixes) == (["sample.jpg"], ["photos/"])


def test_next_marker_is_the_last_entry_even_a_prefix() -> None:
    # versity/versitygw#1280, expected output taken from AWS
    keys = ["dir1/subdir/file.txt", "dir1/subdir.ext", "dir1/subdir1.ext", "dir1/subdir2.ext"]
    page = list_objects_v1(src(keys), prefix="dir1/", delimiter="/", max_keys=2)
    assert (keys_of(page), page.common_prefixes) == (["dir1/subdir.ext"], ["dir1/subdir/"])
    assert (page.is_truncated, page.next_marker) == (True, "dir1/subdir/")


def test_start_after_shorter_than_a_common_prefix() -> None:
    # versity/versitygw#1275, expected output taken from AWS
    page = list_objects_v2(
        src(["prefix1/object", "prefix2/object"]), prefix="prefix", start_after="prefix1", delimiter="/"
    )
    assert page.common_prefixes == ["prefix1/", "prefix2/"]


def test_marker_inside_a_common_prefix_skips_it() -> None:
    keys = ["a/1", "a/2", "a/3", "b"]
    page = list_objects_v1(src(keys), delimiter="/", marker="a/1")
    assert (keys_of(page), page.common_prefixes) == (["b"], [])


def test_list_objects_query_dispatch_and_validation() -> None:
    keys = ["a b/c", "a+b", "x"]
    v2page = list_objects(src(keys), {"list-type": "2", "delimiter": "/", "fetch-owner": "true", "max-keys": "5000"})
    assert (v2page.version, v2page.fetch_owner, v2page.max_keys, v2page.common_prefixes) == (2, True, 1000, ["a b/"])
    assert list_objects(src(keys), {"list-type": "bogus"}).version == 1
    for bad in ("blah", "-1", "1.5", "", "99999999999"):
        with pytest.raises(S3Error) as err:
            parse_max(bad)
        assert err.value.code == "InvalidArgument"
    assert parse_max("0") == 0 and parse_max(None) == 1000 and parse_max("7") == 7
    assert parse_encoding_type("URL") == "url" and parse_encoding_type(None) is None
    with pytest.raises(S3Error):
        parse_encoding_type("base64")
    with pytest.raises(S3Error):
        list_objects(src(keys), {"encoding-type": "xml"})
    assert parse_part_number_marker("12") == 12 and parse_part_number_marker(None) == 0
    with pytest.raises(S3Error):
        parse_part_number_marker("x")


# -- laziness, against a real SQL source -----------------------------------------------------------------------


class Counting:
    """An ``ObjectSource`` over SQLite, counting the rows it hands out."""

    def __init__(self, keys: list[str]) -> None:
        self.db = sqlite3.connect(":memory:")
        self.db.execute("CREATE TABLE objects (key TEXT PRIMARY KEY, size INTEGER) WITHOUT ROWID")
        self.db.executemany("INSERT INTO objects VALUES (?, ?)", ((k, len(k)) for k in keys))
        self.rows = 0
        self.calls = 0

    def __call__(self, after: str) -> Iterator[tuple[str, ObjectSummary]]:
        self.calls += 1
        for (key,) in self.db.execute("SELECT key FROM objects WHERE key > ? ORDER BY key", (after,)):
            self.rows += 1
            yield key, summary(key)


def test_a_hundred_thousand_keys_under_a_prefix_cost_one_row() -> None:
    keys = [f"photos/{i:06d}.jpg" for i in range(100_000)] + ["a.txt", "photos.txt", "z/1", "z/2"]
    source = Counting(keys)
    page = list_objects_v2(source, delimiter="/")
    assert (keys_of(page), page.common_prefixes) == (["a.txt", "photos.txt"], ["photos/", "z/"])
    assert source.rows == 4 and page.rows_read == 4 and source.calls == 3  # a.txt, photos.txt, photos/0, z/1
    # a page of ten in the middle reads eleven rows (ten, and one to know there are more)
    source = Counting(keys)
    page = list_objects_v2(source, prefix="photos/", start_after="photos/050000.jpg", max_keys=10)
    assert keys_of(page)[0] == "photos/050001.jpg" and page.is_truncated
    assert source.rows == 11
    # a prefix starts reading at the prefix, not at the start of the bucket
    source = Counting(keys)
    page = list_objects_v1(source, prefix="z/")
    assert keys_of(page) == ["z/1", "z/2"] and source.rows == 2


def test_sqlite_order_is_python_order_and_the_bounds_hold() -> None:
    keys = ["a", "a/", "a/\U0010ffff", "a/\U0010ffff\U0010ffff", "a0", "é", "\ue000", "\ud7ff", "\U0001f600", "\uff5a"]
    source = Counting(keys)
    assert [k for k, _ in source("")] == sorted(keys)  # BINARY collation = UTF-8 bytes = code points
    assert [k for k, _ in Counting(keys)(skip_bound("a/"))] == sorted(k for k in keys if k >= "a0")
    assert [k for k, _ in Counting(keys)(bound_below("\ue000"))] == sorted(k for k in keys if k >= "\ue000")
    assert bound_below("a\x00") == "a"
    longest = "a/" + "\U0010ffff" * 255  # 1022 bytes: as far as a key under a/ can go
    assert longest < skip_bound("a/") < "a0"


def test_one_pass_iterator_source() -> None:
    keys = sorted(["a/1", "a/2", "b", "c/1", "d"])
    page = list_objects_v1(source_from_iterator((k, summary(k)) for k in keys), delimiter="/")
    assert (keys_of(page), page.common_prefixes) == (["b", "d"], ["a/", "c/"])


# -- an independent model over random key sets -----------------------------------------------------------------

ALPHABET = ["a", "b", "/", "é", "\x01", "\U0001f600"]
key_st = st.lists(st.sampled_from(ALPHABET), min_size=1, max_size=5).map("".join)
keys_st = st.lists(key_st, max_size=25, unique=True)
prefix_st = st.lists(st.sampled_from(ALPHABET), max_size=2).map("".join)
delim_st = st.sampled_from(["", "/", "a", "b/", "é"])


def model(keys: list[str], prefix: str, delimiter: str) -> list[str]:
    """Every entry of the full listing, in order: keys under the prefix, rolled up at the first delimiter
    after it; written without the walk's seeking."""
    entries: set[str] = set()
    for key in keys:
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix) :]
        if delimiter and delimiter in rest:
            entries.add(prefix + rest[: rest.index(delimiter) + len(delimiter)])
        else:
            entries.add(key)
    return sorted(entries)


def entries(page: ObjectPage) -> list[str]:
    return sorted(keys_of(page) + page.common_prefixes)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(keys_st, prefix_st, delim_st, st.integers(1, 5), st.booleans())
def test_paging_gives_the_full_listing_once(
    keys: list[str], prefix: str, delimiter: str, max_keys: int, sql: bool
) -> None:
    expected = model(keys, prefix, delimiter)
    source = Counting(keys) if sql else src(keys)
    # v1, continuing from NextMarker or, without a delimiter, from the last key
    seen: list[str] = []
    marker = ""
    for _ in range(len(expected) + 2):
        page = list_objects_v1(source, prefix=prefix, delimiter=delimiter, marker=marker, max_keys=max_keys)
        got = entries(page)
        assert got == [e for e in expected if e > marker][:max_keys]
        assert page.is_truncated == (len([e for e in expected if e > marker]) > max_keys)
        # each read stops at a key that rolls up or one past the page; a read per prefix listed, plus the
        # first, plus one for the prefix holding the marker
        assert page.rows_read <= page.source_calls * (max_keys + 1)
        assert page.source_calls <= len(page.common_prefixes) + 2
        seen += got
        if not page.is_truncated:
            break
        marker = page.next_marker if delimiter else page.contents[-1].key  # type: ignore[assignment]
        assert marker == got[-1]
    assert seen == expected
    # v2, continuing from the token
    seen = []
    token: str | None = None
    for _ in range(len(expected) + 2):
        page = list_objects_v2(source, prefix=prefix, delimiter=delimiter, continuation_token=token, max_keys=max_keys)
        assert page.key_count == len(entries(page)) <= max_keys
        seen += entries(page)
        if not page.is_truncated:
            assert page.next_continuation_token is None
            break
        token = page.next_continuation_token
    assert seen == expected


@settings(max_examples=200, deadline=None)
@given(keys_st, prefix_st, delim_st, key_st, st.integers(0, 5))
def test_any_marker_lists_the_entries_after_it(
    keys: list[str], prefix: str, delimiter: str, marker: str, max_keys: int
) -> None:
    after = [e for e in model(keys, prefix, delimiter) if e > marker]
    for page in (
        list_objects_v1(src(keys), prefix=prefix, delimiter=delimiter, marker=marker, max_keys=max_keys),
        list_objects_v2(src(keys), prefix=prefix, delimiter=delimiter, start_after=marker, max_keys=max_keys),
    ):
        assert entries(page) == after[:max_keys]
        assert page.is_truncated == (len(after) > max_keys > 0)


# -- multipart uploads and parts -------------------------------------------------------------------------------


def uploads_of(pairs: list[tuple[str, str]]) -> list[UploadSummary]:
    return [UploadSummary(k, u, 1_700_000_000.0 + i, "owner") for i, (k, u) in enumerate(sorted(pairs))]


def test_list_multipart_uploads_markers() -> None:
    ups = uploads_of([("a", "1"), ("a", "2"), ("b/x", "1"), ("b/y", "1"), ("c", "1"), ("c", "2")])
    source = uploads_from_sorted(ups)
    page = list_multipart_uploads(source, max_uploads=3)
    assert [(u.key, u.upload_id) for u in page.uploads] == [("a", "1"), ("a", "2"), ("b/x", "1")]
    assert (page.is_truncated, page.next_key_marker, page.next_upload_id_marker) == (True, "b/x", "1")
    page = list_multipart_uploads(source, key_marker="a", upload_id_marker="1")
    assert [(u.key, u.upload_id) for u in page.uploads][:2] == [("a", "2"), ("b/x", "1")]
    page = list_multipart_uploads(source, key_marker="a")  # after every upload of "a"
    assert page.uploads[0].key == "b/x"
    page = list_multipart_uploads(source, upload_id_marker="1")  # ignored without key-marker
    assert (len(page.uploads), page.upload_id_marker) == (6, "")
    page = list_multipart_uploads(source, delimiter="/")
    assert [u.key for u in page.uploads] == ["a", "a", "c", "c"] and page.common_prefixes == ["b/"]
    page = list_multipart_uploads(source, prefix="b/", delimiter="/")
    assert [u.key for u in page.uploads] == ["b/x", "b/y"]
    page = list_multipart_uploads_query(source, {"max-uploads": "1", "delimiter": "/", "key-marker": "a"})
    assert (page.common_prefixes, page.next_key_marker, page.next_upload_id_marker) == (["b/"], "b/", "")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(key_st, st.sampled_from(["u1", "u2", "u3"])), max_size=20, unique=True),
    prefix_st,
    delim_st,
    st.integers(1, 4),
)
def test_upload_paging_gives_every_upload_once(
    pairs: list[tuple[str, str]], prefix: str, delimiter: str, max_uploads: int
) -> None:
    ups = uploads_of(pairs)
    expected_prefixes = sorted(
        {
            u.key[: u.key.index(delimiter, len(prefix)) + len(delimiter)]
            for u in ups
            if u.key.startswith(prefix) and delimiter and delimiter in u.key[len(prefix) :]
        }
    )
    expected_uploads = [
        (u.key, u.upload_id)
        for u in ups
        if u.key.startswith(prefix) and not (delimiter and delimiter in u.key[len(prefix) :])
    ]
    source = uploads_from_sorted(ups)
    got_uploads: list[tuple[str, str]] = []
    got_prefixes: list[str] = []
    key_marker = upload_id_marker = ""
    for _ in range(len(ups) + 2):
        page = list_multipart_uploads(
            source,
            prefix=prefix,
            delimiter=delimiter,
            key_marker=key_marker,
            upload_id_marker=upload_id_marker,
            max_uploads=max_uploads,
        )
        assert len(page.uploads) + len(page.common_prefixes) <= max_uploads
        got_uploads += [(u.key, u.upload_id) for u in page.uploads]
        got_prefixes += page.common_prefixes
        if not page.is_truncated:
            break
        key_marker, upload_id_marker = page.next_key_marker, page.next_upload_id_marker
    assert got_uploads == expected_uploads
    assert got_prefixes == expected_prefixes


def test_list_parts_paging() -> None:
    parts = [PartSummary(n, f"{n:032x}", 5 << 20, 1_700_000_000.0) for n in (1, 2, 3, 5, 8)]
    source = parts_from_sorted(parts)
    page = list_parts(source, max_parts=2)
    assert ([p.part_number for p in page.parts], page.is_truncated, page.next_part_number_marker) == ([1, 2], True, 2)
    page = list_parts(source, part_number_marker=2, max_parts=3)
    assert ([p.part_number for p in page.parts], page.is_truncated) == ([3, 5, 8], False)
    page = list_parts_query(source, {"part-number-marker": "8"})
    assert (page.parts, page.is_truncated, page.next_part_number_marker) == ([], False, 0)
    seen: list[int] = []
    marker = 0
    while True:
        page = list_parts(source, part_number_marker=marker, max_parts=1)
        seen += [p.part_number for p in page.parts]
        if not page.is_truncated:
            break
        marker = page.next_part_number_marker
    assert seen == [1, 2, 3, 5, 8]
