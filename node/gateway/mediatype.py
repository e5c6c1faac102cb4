"""Guess the MIME type of stored content from its first bytes, then its name.

Content-addressed data has no trustworthy name: the same CID may be reached
under any filename, or none. So the gateway reads the first
:data:`SNIFF_BYTES` bytes of a file and :func:`sniff` recognises the formats a
media node serves by their magic numbers (ISO BMFF/MP4, Matroska/WebM, Ogg,
MP3, AAC, FLAC, WAV, AVI, PNG, JPEG, GIF, WebP, AVIF, HEIC, PDF), then
UTF-8 text, HTML and SVG. Only when the bytes say nothing does the filename
extension decide, and failing that ``application/octet-stream``.

Magic numbers beat the extension: a PNG named ``clip.mp4`` is served as a PNG.
Text is the exception, because "decodes as UTF-8" is a weak signal that cannot
tell JSON, an HLS playlist or CSS from plain prose; when the bytes look like
text and the extension names a text format (``.json``, ``.m3u8``, ``.svg``,
``.html``, ``.css`` ...), the extension wins.

Extensions are looked up in a table of media types registered here, then in
Python's built-in :mod:`mimetypes` defaults (not the operating system's
``mime.types``), so the answer is the same on every machine. Nothing here
reads files or sockets; the caller passes the bytes. (Creating the
:mod:`mimetypes` table makes the stdlib load the system tables once, on the
first lookup of an unlisted extension; their entries are not used.)
"""

from __future__ import annotations

import codecs
import functools
import mimetypes
import re

__all__ = ["OCTET_STREAM", "SNIFF_BYTES", "is_media", "sniff"]

SNIFF_BYTES = 512
"""How many leading bytes of a file :func:`sniff` looks at; pass at least this many when the file has them."""

OCTET_STREAM = "application/octet-stream"
TEXT = "text/plain; charset=utf-8"
HTML = "text/html; charset=utf-8"
SVG = "image/svg+xml"

EXTENSIONS: dict[str, str] = {
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".m4a": "audio/mp4",
    ".mov": "video/quicktime",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".ogv": "video/ogg",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".mp3": "audio/mpeg",
    ".flac": "audio/flac",
    ".wav": "audio/wav",
    ".aac": "audio/aac",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".heic": "image/heic",
    ".svg": SVG,
    ".txt": TEXT,
    ".html": HTML,
    ".htm": HTML,
    ".json": "application/json",
    ".m3u8": "application/vnd.apple.mpegurl",
}
"""Extensions whose type must not depend on the platform; others go to :mod:`mimetypes`."""

# ISO BMFF major brands (``ftyp`` box, bytes 8-11), trailing spaces removed.
# Any other brand, including the many generic ones (isom, mp41, mp42, avc1,
# dash, ...), is an MP4 variant and maps to video/mp4.
_BRANDS = {
    "M4A": "audio/mp4",
    "M4B": "audio/mp4",
    "M4P": "audio/mp4",
    "qt": "video/quicktime",
    "avif": "image/avif",
    "avis": "image/avif",
    "heic": "image/heic",
    "heix": "image/heic",
    "heim": "image/heic",
    "heis": "image/heic",
    "hevc": "image/heic-sequence",
    "hevx": "image/heic-sequence",
}
# Generic HEIF brands: the compatible brands say whether the images are AV1 or HEVC.
_HEIF_GENERIC = {"mif1", "msf1"}

_RIFF_FORMS = {b"WAVE": "audio/wav", b"WEBP": "image/webp", b"AVI ": "video/x-msvideo"}
_MPEG_AUDIO_SYNC = (b"\xff\xfb", b"\xff\xfa", b"\xff\xf3", b"\xff\xf2", b"\xff\xe3")  # MP3 frame headers
_ADTS_SYNC = (b"\xff\xf1", b"\xff\xf9")  # AAC in ADTS frames, without CRC
_PREFIXES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"fLaC", "audio/flac"),
    (b"%PDF-", "application/pdf"),
    *((sync, "audio/mpeg") for sync in _MPEG_AUDIO_SYNC),
    *((sync, "audio/aac") for sync in _ADTS_SYNC),
)

# Bytes that never appear in text (WHATWG MIME Sniffing "binary data byte"):
# C0 controls other than tab, line feed, form feed, carriage return and escape.
_BINARY_BYTES = re.compile(rb"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f]")
_TAG_END = r"(?:[\s/>]|\Z)"
_HTML_START = re.compile(rf"(?:<!doctype\s+html|<html){_TAG_END}", re.IGNORECASE)
# An SVG root element, possibly after an XML declaration, comments and a
# DOCTYPE (whose internal subset, as Illustrator writes, may contain '>').
# Each alternative consumes different text, so a failed match cannot backtrack badly.
_SVG_START = re.compile(
    rf"(?:<\?[^>]*\?>|<!--.*?-->|<!(?i:doctype)\s[^[>]*(?:\[.*?\])?\s*>|\s)*<svg{_TAG_END}",
    re.DOTALL,
)
# Non-text/* types that are text, so a text sniff defers to an extension naming them.
_TEXTUAL_APPLICATION_TYPES = frozenset(
    {
        "application/json",
        "application/xml",
        "application/javascript",
        "application/vnd.apple.mpegurl",
        "application/x-mpegurl",
    }
)


def sniff(head: bytes, filename: str | None = None) -> str:
    """The MIME type of a file whose first bytes are ``head`` and whose name (if any) is ``filename``.

    ``head`` should be the first :data:`SNIFF_BYTES` bytes, or the whole file
    if it is shorter; ``filename`` may be a bare name or a path. An empty
    file has nothing to sniff: its extension decides, else it is empty text.
    """
    found = _magic(head)
    if found is not None:
        return found
    by_name = _by_extension(filename) if filename else None
    if not head:
        return by_name or TEXT
    as_text = _text(head)
    if as_text is None:
        return by_name or OCTET_STREAM
    if by_name is not None and _is_textual(by_name):
        if by_name.startswith("text/") and "charset=" not in by_name:
            return f"{by_name}; charset=utf-8"  # we just checked it decodes as UTF-8
        return by_name
    return as_text


def is_media(mime: str) -> bool:
    """Whether ``mime`` is audio, video or an image (any subtype, parameters ignored).

    Note that this includes ``image/svg+xml``, which can carry script.
    """
    kind, slash, subtype = mime.partition(";")[0].strip().lower().partition("/")
    return bool(slash and subtype) and kind in ("video", "audio", "image")


def _magic(head: bytes) -> str | None:
    if head[4:8] == b"ftyp":
        return _iso_bmff(head)
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm" if _ebml_doctype(head) == b"webm" else "video/x-matroska"
    if head.startswith(b"OggS"):
        # Theora's identification header; everything else common in Ogg is audio.
        return "video/ogg" if b"\x80theora" in head else "audio/ogg"
    if head.startswith(b"RIFF") and head[8:12] in _RIFF_FORMS:
        return _RIFF_FORMS[head[8:12]]
    if head.startswith(b"ID3"):
        return _after_id3(head)
    for prefix, mime in _PREFIXES:
        if head.startswith(prefix):
            return mime
    return None


def _iso_bmff(head: bytes) -> str:
    """Type of an ISO base media file (MP4, MOV, 3GP, AVIF, HEIC) from its ``ftyp`` box."""
    major = head[8:12].decode("latin-1").rstrip(" ")
    if major in _HEIF_GENERIC:
        box_size = int.from_bytes(head[0:4], "big")
        compatible = head[16 : min(box_size, len(head))]
        brands = {compatible[i : i + 4] for i in range(0, len(compatible) - 3, 4)}
        if b"avif" in brands or b"avis" in brands:
            return "image/avif"
        return "image/heic"
    if major.startswith("3gp"):
        return "video/3gpp"
    if major.startswith("3g2"):
        return "video/3gpp2"
    return _BRANDS.get(major, "video/mp4")


def _ebml_doctype(head: bytes) -> bytes | None:
    """The DocType string of the EBML header at the start of ``head`` (b"webm", b"matroska"), if visible."""
    header = _vint(head, 4)
    if header is None:
        return None
    header_size, pos = header
    end = min(pos + header_size, len(head))
    while pos < end:
        element = _vint(head, pos, keep_marker=True)
        if element is None:
            return None
        element_id, pos = element
        length = _vint(head, pos)
        if length is None:
            return None
        data_size, pos = length
        if element_id == 0x4282:
            return head[pos : pos + data_size].rstrip(b"\0")
        pos += data_size
    return None


def _vint(data: bytes, pos: int, keep_marker: bool = False) -> tuple[int, int] | None:
    """An EBML variable-length integer at ``pos``: ``(value, position after it)``."""
    if pos >= len(data) or data[pos] == 0:
        return None
    width = 9 - data[pos].bit_length()
    if pos + width > len(data):
        return None
    value = data[pos] if keep_marker else data[pos] & (0xFF >> width)
    for byte in data[pos + 1 : pos + width]:
        value = value << 8 | byte
    return value, pos + width


def _after_id3(head: bytes) -> str:
    """An ID3v2 tag usually starts an MP3, but may also precede FLAC or AAC; look past it if we can."""
    if len(head) >= 10:
        size = 0
        for byte in head[6:10]:  # "syncsafe": 7 bits per byte
            size = size << 7 | (byte & 0x7F)
        end = 10 + size + (10 if head[5] & 0x10 else 0)  # flag bit 4: a footer follows
        if head[end:].startswith(b"fLaC"):
            return "audio/flac"
        if head[end:].startswith(_ADTS_SYNC):
            return "audio/aac"
    return "audio/mpeg"


def _text(head: bytes) -> str | None:
    """TEXT, HTML or SVG if ``head`` is the start of UTF-8 text, else None."""
    if _BINARY_BYTES.search(head):
        return None
    try:
        # Incremental, so a character cut in two by the end of ``head`` is not an error.
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return None
    text = text.removeprefix("\ufeff").lstrip()
    if _HTML_START.match(text):
        return HTML
    if _SVG_START.match(text):
        return SVG
    return TEXT


def _is_textual(mime: str) -> bool:
    base = mime.partition(";")[0].strip()
    return base.startswith("text/") or base.endswith(("+xml", "+json")) or base in _TEXTUAL_APPLICATION_TYPES


def _by_extension(filename: str) -> str | None:
    name = filename.replace("\\", "/").rpartition("/")[2]
    _, dot, suffix = name.rpartition(".")
    if not dot or not suffix:
        return None
    extension = "." + suffix.lower()
    return EXTENSIONS.get(extension) or _builtin_types().get(extension)


@functools.cache
def _builtin_types() -> dict[str, str]:
    """Python's own extension table, without the operating system's additions."""
    table = mimetypes.MimeTypes()
    return {**table.types_map[False], **table.types_map[True]}
