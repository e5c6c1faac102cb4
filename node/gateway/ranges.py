"""Parse an HTTP ``Range`` request header against a resource of known size.

RFC 9110 §14 lets a client ask for part of a resource, which is how browsers
seek in audio and video: ``Range: bytes=1000-`` and the server answers
``206 Partial Content`` with ``Content-Range: bytes 1000-4999/5000``. This
module turns the header into one :class:`ByteRange` (or ``None``, meaning
"send the whole resource") and never touches a socket, so the gateway can stay
a thin layer over it.

What is accepted, with optional whitespace (space or tab) around the ``=``,
the ``-`` and the range as a whole:

* ``bytes=first-last``: ``last`` past the end is cut to the last byte;
* ``bytes=first-``: from ``first`` to the end;
* ``bytes=-n``: the last ``n`` bytes, or the whole resource if it is shorter.

The unit name is case-insensitive. A header in any other unit is ignored
(``None``), as RFC 9110 §14.2 requires. Everything else raises
:class:`RangeError`, whose ``status`` is the response to send and whose
``message`` is one line saying what was wrong:

* 400 for a header that is not valid syntax: numbers that are missing, not
  ASCII digits (``int()`` would accept Arabic-Indic digits, ``+`` or ``_``;
  this parser does not), longer than 20 digits, a range that ends before it
  starts, or a header longer than 200 characters;
* 416 for a well-formed range that selects nothing: one starting at or past
  the end, ``bytes=-0``, or any range of an empty resource. The caller adds
  ``Content-Range: bytes */<size>`` to the response.

Policy: a request for more than one range (``bytes=0-1,5-6``) is refused
with 416, "multiple ranges are not supported; request one range". Answering it
properly needs a ``multipart/byteranges`` body; media players and browsers
never ask for one, and refusing keeps every 206 response a single plain slice.
Empty list elements (``bytes=0-99,``) are ignored, as the list syntax of RFC
9110 §5.6.1 requires, so they do not count as extra ranges.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["MAX_DIGITS", "MAX_HEADER_LENGTH", "ByteRange", "RangeError", "parse_range"]

MAX_HEADER_LENGTH = 200
MAX_DIGITS = 20

_OWS = " \t"
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_ASCII_DIGITS = frozenset("0123456789")
_SYNTAX = "expected bytes=first-last, bytes=first- or bytes=-suffix"


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``start`` through ``end`` of a resource, both inclusive, as in ``Content-Range``."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end:
            raise ValueError(f"invalid byte range {self.start}-{self.end}")

    @property
    def length(self) -> int:
        """How many bytes the range covers: the ``Content-Length`` of the 206 response."""
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        """The ``Content-Range`` value for this range of a ``size``-byte resource."""
        if self.end >= size:
            raise ValueError(f"byte range {self.start}-{self.end} does not fit in {size} bytes")
        return f"bytes {self.start}-{self.end}/{size}"


class RangeError(ValueError):
    """A ``Range`` header the gateway will not serve: respond with ``status`` (400 or 416)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The single byte range ``header`` asks for in a ``size``-byte resource.

    Returns ``None`` when the whole resource should be sent (no header, or a
    unit other than bytes); raises :class:`RangeError` when the request must
    be refused. See the module docstring for exactly what is accepted.
    """
    if size < 0:
        raise ValueError(f"resource size must not be negative, got {size}")
    if header is None:
        return None
    if len(header) > MAX_HEADER_LENGTH:
        raise RangeError(400, f"Range header is {len(header)} characters long; the limit is {MAX_HEADER_LENGTH}")
    header = header.strip(_OWS)
    if not header:
        return None
    unit, equals, range_set = header.partition("=")
    unit = unit.strip(_OWS)
    if not equals:
        raise RangeError(400, f"Range header {header!r} has no '='; {_SYNTAX}")
    if not _TOKEN.fullmatch(unit):
        raise RangeError(400, f"Range header {header!r} does not start with a unit name; {_SYNTAX}")
    if unit.lower() != "bytes":
        return None
    specs = [spec.strip(_OWS) for spec in range_set.split(",")]
    parsed = [_parse_spec(spec) for spec in specs if spec]
    if not parsed:
        raise RangeError(400, f"Range header {header!r} names no range; {_SYNTAX}")
    if len(parsed) > 1:
        raise RangeError(416, "multiple ranges are not supported; request one range")
    first, last = parsed[0]
    return _resolve(first, last, size)


def _parse_spec(spec: str) -> tuple[int | None, int | None]:
    """``(first, last)`` of one range-spec; ``first`` is None for a suffix range ``-last``."""
    first_text, dash, last_text = spec.partition("-")
    if not dash:
        raise RangeError(400, f"range {spec!r} has no '-'; {_SYNTAX}")
    first_text = first_text.strip(_OWS)
    last_text = last_text.strip(_OWS)
    if not first_text:
        if not last_text:
            raise RangeError(400, f"range {spec!r} has neither a first byte nor a suffix length; {_SYNTAX}")
        return None, _number(last_text, spec)
    first = _number(first_text, spec)
    if not last_text:
        return first, None
    last = _number(last_text, spec)
    if last < first:
        raise RangeError(400, f"range {spec!r} ends before it starts")
    return first, last


def _number(text: str, spec: str) -> int:
    if not _ASCII_DIGITS.issuperset(text):
        if text.isdecimal():
            raise RangeError(400, f"range {spec!r} uses digits other than ASCII 0-9")
        raise RangeError(400, f"range {spec!r}: {text!r} is not a number; {_SYNTAX}")
    if len(text) > MAX_DIGITS:
        raise RangeError(400, f"range {spec!r} has a number longer than {MAX_DIGITS} digits")
    return int(text)


def _resolve(first: int | None, last: int | None, size: int) -> ByteRange:
    """Fit a syntactically valid range to the resource, or raise 416 if it selects nothing."""
    if size == 0:
        raise RangeError(416, "the resource is empty; no byte range can be satisfied")
    if first is None:
        assert last is not None
        if last == 0:
            raise RangeError(416, "range bytes=-0 asks for the last 0 bytes, which selects nothing")
        return ByteRange(max(0, size - last), size - 1)
    if first >= size:
        raise RangeError(416, f"range starts at byte {first}, past the last byte ({size - 1}) of the resource")
    return ByteRange(first, size - 1 if last is None else min(last, size - 1))
