"""HTTP Range parsing (node.gateway.ranges) against RFC 9110 §14 and our one-range policy."""

from __future__ import annotations

import dataclasses

import pytest

from node.gateway.ranges import ByteRange, RangeError, parse_range

SIZE = 1000


@pytest.mark.parametrize("header", [None, "", "   ", "\t"])
def test_no_header_means_whole_resource(header: str | None) -> None:
    assert parse_range(header, SIZE) is None


@pytest.mark.parametrize("header", ["items=0-5", "pages=1-2", "none=0-0", "x-bits = 0-7", "kb=0-1,2-3"])
def test_other_units_are_ignored(header: str) -> None:
    assert parse_range(header, SIZE) is None


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=0-0", 0, 0),
        ("bytes=500-999", 500, 999),
        ("bytes=999-999", 999, 999),
        ("bytes=100-", 100, 999),
        ("bytes=0-", 0, 999),
        ("bytes=999-", 999, 999),
        ("bytes=-1", 999, 999),
        ("bytes=-100", 900, 999),
        ("bytes=-1000", 0, 999),
        # the end past the last byte is cut to it
        ("bytes=0-1000", 0, 999),
        ("bytes=10-99999999999999999999", 10, 999),
        # a suffix longer than the resource is the whole resource
        ("bytes=-1001", 0, 999),
        ("bytes=-99999999999999999999", 0, 999),
        # unit names are case-insensitive; leading zeros are just digits
        ("Bytes=1-2", 1, 2),
        ("BYTES=1-2", 1, 2),
        ("bytes=007-010", 7, 10),
        ("bytes=00000000000000000001-2", 1, 2),
        # optional whitespace
        (" bytes=1-2 ", 1, 2),
        ("bytes = 1-2", 1, 2),
        ("bytes=\t1 - 2\t", 1, 2),
        ("bytes= -5", 995, 999),
        ("bytes=5 -", 5, 999),
        # empty list elements are not ranges (RFC 9110 §5.6.1)
        ("bytes=0-99,", 0, 99),
        ("bytes=, 0-99 ,,", 0, 99),
    ],
)
def test_single_ranges(header: str, start: int, end: int) -> None:
    assert parse_range(header, SIZE) == ByteRange(start, end)


def test_chrome_and_firefox_media_requests() -> None:
    assert parse_range("bytes=0-", 5_000_000) == ByteRange(0, 4_999_999)
    assert parse_range("bytes=4980736-", 5_000_000) == ByteRange(4_980_736, 4_999_999)


def test_one_byte_resource() -> None:
    assert parse_range("bytes=0-", 1) == ByteRange(0, 0)
    assert parse_range("bytes=-5", 1) == ByteRange(0, 0)
    assert parse_range("bytes=0-5", 1) == ByteRange(0, 0)


def _error(header: str, size: int = SIZE) -> RangeError:
    with pytest.raises(RangeError) as info:
        parse_range(header, size)
    error = info.value
    assert error.message == str(error)
    assert error.message and "\n" not in error.message and "\r" not in error.message
    return error


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=1000-", SIZE),
        ("bytes=1000-1000", SIZE),
        ("bytes=1001-2000", SIZE),
        ("bytes=99999999999999999999-", SIZE),
        ("bytes=-0", SIZE),
        ("bytes=-00", SIZE),
        # nothing in an empty resource can be satisfied
        ("bytes=0-", 0),
        ("bytes=0-0", 0),
        ("bytes=-1", 0),
        ("bytes=-0", 0),
    ],
)
def test_unsatisfiable_is_416(header: str, size: int) -> None:
    assert _error(header, size).status == 416


def test_unsatisfiable_message_says_why() -> None:
    assert "1000" in _error("bytes=1000-").message
    assert "-0" in _error("bytes=-0").message
    assert "empty" in _error("bytes=0-", 0).message


@pytest.mark.parametrize(
    "header",
    [
        "bytes=0-1,5-6",
        "bytes=0-1, 5-6",
        "bytes=-1,0-",
        "bytes=0-1,0-1",
        "bytes=0-499,500-999",
        "bytes=2000-3000,4000-5000",
        "bytes=0-0,1-1,2-2,3-3",
    ],
)
def test_multiple_ranges_are_refused(header: str) -> None:
    error = _error(header)
    assert error.status == 416
    assert error.message == "multiple ranges are not supported; request one range"


@pytest.mark.parametrize(
    ("header", "words"),
    [
        ("bytes=abc", "'abc'"),
        ("bytes=5-3", "ends before it starts"),
        ("bytes=", "no range"),
        ("bytes=,", "no range"),
        ("bytes= , ", "no range"),
        ("bytes=--1", "'-1' is not a number"),
        ("bytes=-", "neither"),
        ("bytes=1-2-3", "not a number"),
        ("bytes=a-5", "'a' is not a number"),
        ("bytes=5-b", "'b' is not a number"),
        ("bytes=+5-10", "'+5' is not a number"),
        ("bytes=-+5", "not a number"),
        ("bytes=1_0-20", "not a number"),
        ("bytes=1.5-20", "not a number"),
        ("bytes=0x10-20", "not a number"),
        ("bytes=1 0-20", "not a number"),
        ("bytes=\u00a01-2", "not a number"),  # no-break space is not optional whitespace
        ("bytes=0-1,abc", "'abc'"),
        ("bytes 0-99", "no '='"),
        ("bytes", "no '='"),
        ("=0-99", "unit"),
        ("by tes=0-99", "unit"),
        ("b\u00fdtes=0-99", "unit"),
    ],
)
def test_malformed_is_400(header: str, words: str) -> None:
    error = _error(header)
    assert error.status == 400
    assert words in error.message


@pytest.mark.parametrize(
    "header",
    [
        "bytes=\u0660-\u0669",  # Arabic-Indic 0-9: int() accepts them
        "bytes=\u0661\u0662-",
        "bytes=-\u0665",
        "bytes=0-\u0669\u0669",
        "bytes=\uff11-\uff12",  # fullwidth digits
        "bytes=\u09e7-\u09e8",  # Bengali digits
    ],
)
def test_non_ascii_digits_are_400(header: str) -> None:
    assert int("\u0661\u0662") == 12  # what a parser built on int() alone would let through
    error = _error(header)
    assert error.status == 400
    assert "ASCII" in error.message


@pytest.mark.parametrize(
    "header",
    ["bytes=" + "1" * 21 + "-", "bytes=0-" + "9" * 21, "bytes=-" + "5" * 21, "bytes=" + "0" * 21 + "-1"],
)
def test_numbers_over_20_digits_are_400(header: str) -> None:
    error = _error(header)
    assert error.status == 400
    assert "20 digits" in error.message


def test_20_digits_are_fine() -> None:
    assert parse_range("bytes=0-" + "9" * 20, SIZE) == ByteRange(0, 999)


def test_header_over_200_characters_is_400() -> None:
    at_limit = "bytes=0-99" + " " * 190
    assert len(at_limit) == 200
    assert parse_range(at_limit, SIZE) == ByteRange(0, 99)
    error = _error(at_limit + " ")
    assert error.status == 400
    assert "201 characters" in error.message
    # checked before anything else, so huge headers cost nothing and never echo back
    huge = "bytes=" + "0-1," * 10_000
    error = _error(huge)
    assert error.status == 400
    assert len(error.message) < 100


def test_error_messages_do_not_echo_control_characters() -> None:
    error = _error("bytes=1\u2028-2")
    assert error.status == 400
    assert "\u2028" not in error.message


def test_range_error_is_a_value_error() -> None:
    error = _error("bytes=5-3")
    assert isinstance(error, ValueError)
    assert error.args == (error.message,)


def test_negative_size_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="negative") as info:
        parse_range("bytes=0-1", -1)
    assert not isinstance(info.value, RangeError)


def test_byte_range() -> None:
    byte_range = ByteRange(0, 99)
    assert byte_range.length == 100
    assert byte_range.content_range(1000) == "bytes 0-99/1000"
    assert ByteRange(999, 999).length == 1
    assert ByteRange(999, 999).content_range(1000) == "bytes 999-999/1000"
    with pytest.raises(dataclasses.FrozenInstanceError):
        byte_range.start = 5  # type: ignore[misc]
    assert hash(byte_range) == hash(ByteRange(0, 99))


@pytest.mark.parametrize(("start", "end"), [(-1, 5), (5, 4), (-2, -1)])
def test_byte_range_rejects_impossible_ranges(start: int, end: int) -> None:
    with pytest.raises(ValueError):
        ByteRange(start, end)


def test_content_range_must_fit_the_size() -> None:
    with pytest.raises(ValueError):
        ByteRange(0, 1000).content_range(1000)


@pytest.mark.parametrize("size", [1, 2, 7, 1000, 2**40])
def test_every_result_fits_and_matches_content_range(size: int) -> None:
    for header in ["bytes=0-", "bytes=-1", "bytes=-5", "bytes=0-3", f"bytes={size - 1}-", f"bytes=-{size * 2}"]:
        byte_range = parse_range(header, size)
        assert byte_range is not None
        assert 0 <= byte_range.start <= byte_range.end < size
        assert byte_range.content_range(size) == f"bytes {byte_range.start}-{byte_range.end}/{size}"
        assert byte_range.length == byte_range.end - byte_range.start + 1
