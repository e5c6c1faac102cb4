"""MIME sniffing (node.gateway.mediatype) on real files made with PyAV and on hand-written headers."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import av
import pytest
from av.audio.stream import AudioStream
from av.video.stream import VideoStream

from node.gateway.mediatype import OCTET_STREAM, SNIFF_BYTES, is_media, sniff

TEXT = "text/plain; charset=utf-8"
HTML = "text/html; charset=utf-8"


def head_of(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(SNIFF_BYTES)


# --- real files, written by FFmpeg through PyAV ---------------------------------------------------


def write_video(path: Path, codec: str, fmt: str | None = None, pix_fmt: str = "yuv420p", frames: int = 5) -> Path:
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=10)
        assert isinstance(stream, VideoStream)
        stream.width = 64
        stream.height = 48
        stream.pix_fmt = pix_fmt
        for i in range(frames):
            frame = av.VideoFrame(64, 48, "yuv420p")
            for plane in frame.planes:
                plane.update(bytes([(i * 37 + 16) % 256]) * plane.buffer_size)
            for packet in stream.encode(frame.reformat(format=pix_fmt) if pix_fmt != "yuv420p" else frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_audio(path: Path, codec: str, fmt: str | None = None, rate: int = 48000) -> Path:
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        assert isinstance(stream, AudioStream)
        stream.layout = "mono"
        for i in range(10):
            frame = av.AudioFrame(format="s16", layout="mono", samples=1024)
            frame.sample_rate = rate
            frame.pts = i * 1024
            frame.planes[0].update(struct.pack("<1024h", *(((n * 50) % 2000) - 1000 for n in range(1024))))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


Maker = Callable[[Path], Path]

REAL_FILES: list[tuple[str, Maker, str]] = [
    ("clip.mp4", lambda p: write_video(p, "libx264"), "video/mp4"),
    ("clip.webm", lambda p: write_video(p, "libvpx-vp9"), "video/webm"),
    ("clip.mkv", lambda p: write_video(p, "libx264"), "video/x-matroska"),
    ("clip.mov", lambda p: write_video(p, "libx264"), "video/quicktime"),
    ("clip.3gp", lambda p: write_video(p, "mpeg4"), "video/3gpp"),
    ("clip.avi", lambda p: write_video(p, "mpeg4"), "video/x-msvideo"),
    ("song.m4a", lambda p: write_audio(p, "aac", "ipod"), "audio/mp4"),
    ("song.ogg", lambda p: write_audio(p, "libopus", "ogg"), "audio/ogg"),
    ("song.opus", lambda p: write_audio(p, "libopus", "ogg"), "audio/ogg"),
    ("song.mka", lambda p: write_audio(p, "libopus", "matroska"), "video/x-matroska"),
    ("song.flac", lambda p: write_audio(p, "flac"), "audio/flac"),
    ("song.wav", lambda p: write_audio(p, "pcm_s16le"), "audio/wav"),
    ("song.mp3", lambda p: write_audio(p, "libmp3lame"), "audio/mpeg"),
    ("song.aac", lambda p: write_audio(p, "aac", "adts"), "audio/aac"),
    ("still.png", lambda p: write_video(p, "png", "image2", "rgb24", frames=1), "image/png"),
    ("still.jpg", lambda p: write_video(p, "mjpeg", "image2", "yuvj420p", frames=1), "image/jpeg"),
    ("anim.gif", lambda p: write_video(p, "gif", "gif", "rgb8"), "image/gif"),
    ("still.webp", lambda p: write_video(p, "libwebp", "webp", frames=1), "image/webp"),
]


@pytest.fixture(scope="module")
def real_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("media")
    return {name: make(directory / name) for name, make, _ in REAL_FILES}


@pytest.mark.parametrize(("name", "expected"), [(name, expected) for name, _, expected in REAL_FILES])
def test_real_files(real_files: dict[str, Path], name: str, expected: str) -> None:
    head = head_of(real_files[name])
    assert len(head) == SNIFF_BYTES or real_files[name].stat().st_size < SNIFF_BYTES
    assert sniff(head) == expected
    assert sniff(head, name) == expected
    # the bytes win over a misleading name
    assert sniff(head, "misnamed.txt") == expected
    assert sniff(head, "misnamed.html") == expected
    assert is_media(expected)


def test_real_mp4_and_webm_brand_and_doctype(real_files: dict[str, Path]) -> None:
    mp4 = head_of(real_files["clip.mp4"])
    assert mp4[4:8] == b"ftyp" and mp4[8:12] == b"isom"
    webm = head_of(real_files["clip.webm"])
    assert webm[:4] == b"\x1a\x45\xdf\xa3" and b"webm" in webm[:64]
    # a few bytes are enough
    assert sniff(mp4[:12]) == "video/mp4"
    assert sniff(webm[:48]) == "video/webm"


def test_real_m4a_brand(real_files: dict[str, Path]) -> None:
    assert head_of(real_files["song.m4a"])[8:12] == b"M4A "


# --- hand-written headers --------------------------------------------------------------------------


def ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + b"\0\0\0\0" + b"".join(compatible)
    return struct.pack(">I", 8 + len(body)) + b"ftyp" + body + b"\0\0\0\x08free"


def ebml(doctype: bytes) -> bytes:
    children = (
        b"\x42\x86\x81\x01"  # EBMLVersion 1
        + b"\x42\xf7\x81\x01"  # EBMLReadVersion 1
        + b"\x42\xf2\x81\x04"  # EBMLMaxIDLength 4
        + b"\x42\xf3\x81\x08"  # EBMLMaxSizeLength 8
        + b"\x42\x82"
        + bytes([0x80 | len(doctype)])
        + doctype
        + b"\x42\x87\x81\x04"  # DocTypeVersion
        + b"\x42\x85\x81\x02"  # DocTypeReadVersion
    )
    return b"\x1a\x45\xdf\xa3" + bytes([0x80 | len(children)]) + children + b"\x18\x53\x80\x67\x01"


def ogg_page(packet: bytes) -> bytes:
    header = b"OggS\x00\x02" + b"\0" * 8 + b"\x01\x02\x03\x04" + b"\0" * 4 + b"\0" * 4
    return header + bytes([1, len(packet)]) + packet


def id3(tag_size: int, after: bytes, footer: bool = False) -> bytes:
    syncsafe = bytes((tag_size >> shift) & 0x7F for shift in (21, 14, 7, 0))
    flags = 0x10 if footer else 0
    return (
        b"ID3\x04\x00" + bytes([flags]) + syncsafe + b"\0" * tag_size + (b"3DI" + b"\0" * 7 if footer else b"") + after
    )


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        # ISO BMFF brands
        (ftyp(b"isom", b"isom", b"iso2", b"avc1", b"mp41"), "video/mp4"),
        (ftyp(b"iso2"), "video/mp4"),
        (ftyp(b"mp41"), "video/mp4"),
        (ftyp(b"mp42", b"mp42", b"isom"), "video/mp4"),
        (ftyp(b"avc1"), "video/mp4"),
        (ftyp(b"dash", b"iso6", b"mp41"), "video/mp4"),
        (ftyp(b"M4V "), "video/mp4"),
        (ftyp(b"M4A ", b"M4A ", b"mp42", b"isom"), "audio/mp4"),
        (ftyp(b"M4B "), "audio/mp4"),
        (ftyp(b"qt  ", b"qt  "), "video/quicktime"),
        (ftyp(b"avif", b"avif", b"mif1", b"miaf"), "image/avif"),
        (ftyp(b"avis", b"avis", b"msf1"), "image/avif"),
        (ftyp(b"mif1", b"mif1", b"avif", b"miaf"), "image/avif"),
        (ftyp(b"heic", b"mif1", b"heic"), "image/heic"),
        (ftyp(b"heix", b"mif1", b"heix"), "image/heic"),
        (ftyp(b"mif1", b"mif1", b"heic"), "image/heic"),
        (ftyp(b"mif1"), "image/heic"),
        (ftyp(b"3gp4", b"3gp4", b"isom"), "video/3gpp"),
        (ftyp(b"3gp5"), "video/3gpp"),
        (ftyp(b"3gp6"), "video/3gpp"),
        (ftyp(b"3g2a"), "video/3gpp2"),
        (ftyp(b"zzzz"), "video/mp4"),
        (ftyp(b"F4V "), "video/mp4"),
        # Matroska / WebM
        (ebml(b"webm"), "video/webm"),
        (ebml(b"matroska"), "video/x-matroska"),
        (ebml(b"webm")[:12], "video/x-matroska"),  # DocType not visible
        (b"\x1a\x45\xdf\xa3", "video/x-matroska"),
        # Ogg
        (ogg_page(b"OpusHead\x01\x02\x38\x01\x80\xbb\0\0\0\0\0"), "audio/ogg"),
        (ogg_page(b"\x01vorbis\0\0\0\0\x02\x44\xac\0\0"), "audio/ogg"),
        (ogg_page(b"\x7fFLAC\x01\x00\x00\x01fLaC"), "audio/ogg"),
        (ogg_page(b"\x80theora\x03\x02\x01\0\x04\0\x03"), "video/ogg"),
        (ogg_page(b"fishead\0\0\x03\0\0") + ogg_page(b"\x80theora\x03\x02\x01"), "video/ogg"),
        # MPEG audio, AAC, FLAC
        (id3(20, b"\xff\xfb\x90\x64"), "audio/mpeg"),
        (id3(4000, b""), "audio/mpeg"),  # tag longer than the head
        (b"ID3", "audio/mpeg"),
        (id3(20, b"fLaC\0\0\0\x22"), "audio/flac"),
        (id3(20, b"fLaC", footer=True), "audio/flac"),
        (id3(20, b"\xff\xf1\x50\x80"), "audio/aac"),
        (b"\xff\xfb\x90\x64" + b"\0" * 100, "audio/mpeg"),
        (b"\xff\xfa\x90\x64", "audio/mpeg"),
        (b"\xff\xf3\x84\xc4", "audio/mpeg"),
        (b"\xff\xf2\x84\xc4", "audio/mpeg"),
        (b"\xff\xf1\x50\x80\x02\x1f\xfc", "audio/aac"),
        (b"\xff\xf9\x50\x80\x02\x1f\xfc", "audio/aac"),
        (b"fLaC\x00\x00\x00\x22\x10\x00", "audio/flac"),
        # RIFF
        (b"RIFF\x24\x08\x00\x00WAVEfmt \x10\0\0\0", "audio/wav"),
        (b"RIFF\x1a\x00\x00\x00WEBPVP8 \x0e\0\0\0", "image/webp"),
        (b"RIFF\x00\x10\x00\x00AVI LIST", "video/x-msvideo"),
        (b"RIFF\x00\x10\x00\x00CDXAfmt ", OCTET_STREAM),
        # images and PDF
        (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "image/png"),
        (b"\xff\xd8\xff\xe0\0\x10JFIF\0", "image/jpeg"),
        (b"\xff\xd8\xff\xe1\x12\x34Exif\0\0", "image/jpeg"),
        (b"\xff\xd8\xff\xdb", "image/jpeg"),
        (b"GIF87a\x01\x00\x01\x00", "image/gif"),
        (b"GIF89a\x01\x00\x01\x00\x80\x00\x00", "image/gif"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "application/pdf"),
        # nothing recognisable
        (b"\x00\x01\x02\x03\xfe\xff", OCTET_STREAM),
        (b"PK\x03\x04\x14\x00\x00\x00\x08\x00", OCTET_STREAM),
        (b"\xff\xfe\xfd", OCTET_STREAM),
    ],
)
def test_magic(head: bytes, expected: str) -> None:
    assert sniff(head) == expected


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"hello, world\n", TEXT),
        ("caf\u00e9 \u2014 \u65e5\u672c\u8a9e \U0001f3b5\n".encode(), TEXT),
        (b"\xef\xbb\xbfwith a byte order mark", TEXT),
        (b"tabs\tand\r\nCRLF\x0cform feed \x1b[1mANSI\x1b[0m", TEXT),
        (b"<!DOCTYPE html><html><head>", HTML),
        (b"<!doctype html>\n<title>x</title>", HTML),
        (b"  \n\t<!DocType HTML>", HTML),
        (b"<html lang=en>", HTML),
        (b"<HTML>", HTML),
        (b"\xef\xbb\xbf\r\n<html>", HTML),
        (b"<html", HTML),
        (b"<htmlish>", TEXT),
        (b"<p>a fragment is just text</p>", TEXT),
        (b"text mentioning <html> later", TEXT),
        (b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>', "image/svg+xml"),
        (b"\n  <svg>", "image/svg+xml"),
        (b'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg">', "image/svg+xml"),
        (
            b'<?xml version="1.0" encoding="utf-8"?>\n<!-- Generator: Adobe Illustrator 24.0.0 -->\n'
            b'<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd" [\n'
            b'  <!ENTITY ns_flows "http://ns.adobe.com/Flows/1.0/">\n]>\n<svg version="1.1">',
            "image/svg+xml",
        ),
        (b'<?xml version="1.0"?>\n<rss version="2.0"><channel>', TEXT),
        (b'<?xml version="1.0"?>\n<html xmlns="http://www.w3.org/1999/xhtml"><body><svg>', TEXT),
        (b"<svgfoo>", TEXT),
        (b'{"a": [1, 2, 3]}', TEXT),
        (b"#EXTM3U\n#EXT-X-VERSION:3\n", TEXT),
        # a multi-byte character cut in two by the end of the head is still text
        (("x" * 510 + "\u20ac").encode()[:SNIFF_BYTES], TEXT),
        # not text
        (b"text with a NUL\x00byte", OCTET_STREAM),
        (b"bell\x07", OCTET_STREAM),
        (b"\x01\x02\x03", OCTET_STREAM),
        (b"caf\xe9 latin-1", OCTET_STREAM),
        (b"\xc3\x28 broken utf-8", OCTET_STREAM),
        (b"\xed\xa0\x80 surrogate", OCTET_STREAM),
        ("\ufeffutf-16".encode("utf-16"), OCTET_STREAM),
    ],
)
def test_text(head: bytes, expected: str) -> None:
    assert sniff(head) == expected


@pytest.mark.parametrize(
    ("head", "filename", "expected"),
    [
        # a text sniff defers to a text extension
        (b'{"a": 1}', "data.json", "application/json"),
        (b"#EXTM3U\n#EXT-X-TARGETDURATION:6\n", "index.m3u8", "application/vnd.apple.mpegurl"),
        (b"#EXTM3U\n", "INDEX.M3U8", "application/vnd.apple.mpegurl"),
        (b"<g></g>", "icon.svg", "image/svg+xml"),
        (b"<p>hello</p>", "page.html", HTML),
        (b"<p>hello</p>", "page.htm", HTML),
        (b"<html><body>", "notes.txt", TEXT),
        (b"<svg>", "notes.txt", TEXT),
        (b"body { color: red }", "site.css", "text/css; charset=utf-8"),
        (b"a,b\n1,2\n", "table.csv", "text/csv; charset=utf-8"),
        (b"WEBVTT\n\n00:00.000 --> 00:01.000\nhi\n", "subs.vtt", "text/vtt; charset=utf-8"),
        # ... but not to a binary one
        (b"just some text", "clip.mp4", TEXT),
        (b"<html>", "photo.jpg", HTML),
        (b"plain", "archive.zip", TEXT),
        # magic beats any extension
        (b"\x89PNG\r\n\x1a\n", "picture.jpg", "image/png"),
        (b"\x89PNG\r\n\x1a\n", "data.json", "image/png"),
        (ftyp(b"isom"), "song.mp3", "video/mp4"),
        (ebml(b"webm"), "x.mkv", "video/webm"),
        (b"%PDF-1.4", "paper.html", "application/pdf"),
    ],
)
def test_extension_and_bytes_together(head: bytes, filename: str, expected: str) -> None:
    assert sniff(head, filename) == expected


REGISTERED = {
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
    ".svg": "image/svg+xml",
    ".txt": TEXT,
    ".html": HTML,
    ".json": "application/json",
    ".m3u8": "application/vnd.apple.mpegurl",
}

UNKNOWN_BINARY = b"\x00\x9f\x13\x37\xfe"


@pytest.mark.parametrize(("extension", "expected"), REGISTERED.items())
def test_registered_extensions_when_bytes_say_nothing(extension: str, expected: str) -> None:
    assert sniff(UNKNOWN_BINARY, "file" + extension) == expected
    assert sniff(UNKNOWN_BINARY, "FILE" + extension.upper()) == expected
    assert sniff(b"", "file" + extension) == expected


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("some/dir/clip.mp4", "video/mp4"),
        ("C:\\Users\\me\\clip.webm", "video/webm"),
        ("archive.tar.gz.mp3", "audio/mpeg"),
        ("v1.2.final.mkv", "video/x-matroska"),
        (".mp4", "video/mp4"),
        ("report.pdf", "application/pdf"),  # from Python's own table
        ("noextension", OCTET_STREAM),
        ("trailingdot.", OCTET_STREAM),
        ("dir.mp4/file", OCTET_STREAM),
        ("file.definitely-not-a-type", OCTET_STREAM),
        ("data.json.gz", OCTET_STREAM),  # compressed: the bytes are gzip, not JSON
        ("data:text/html,<script>", OCTET_STREAM),  # a name, not a URL
        ("", OCTET_STREAM),
    ],
)
def test_extension_fallback(filename: str, expected: str) -> None:
    assert sniff(UNKNOWN_BINARY, filename) == expected


def test_no_bytes_and_no_name() -> None:
    assert sniff(UNKNOWN_BINARY) == OCTET_STREAM
    assert sniff(UNKNOWN_BINARY, None) == OCTET_STREAM
    assert sniff(b"") == TEXT  # an empty file is (empty) text
    assert sniff(b"", "unknown.zzz-nope") == TEXT


def test_only_the_head_is_needed() -> None:
    head = ftyp(b"isom") + b"\x00" * 10_000
    assert sniff(head[:SNIFF_BYTES]) == sniff(head) == "video/mp4"
    assert SNIFF_BYTES == 512


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 7, 8, 11, 12, 15])
def test_truncated_heads_do_not_crash(size: int) -> None:
    for head in (ftyp(b"mif1", b"avif"), ebml(b"webm"), id3(20, b"fLaC"), ogg_page(b"\x80theora"), b"RIFF\0\0\0\0WAVE"):
        assert isinstance(sniff(head[:size]), str)


def test_hostile_ebml_and_id3_sizes() -> None:
    assert (
        sniff(b"\x1a\x45\xdf\xa3\x01\xff\xff\xff\xff\xff\xff\xff" + b"\x42\x82\x01" + b"\xff" * 20)
        == "video/x-matroska"
    )
    assert sniff(b"\x1a\x45\xdf\xa3\x00\x00") == "video/x-matroska"
    assert sniff(b"\x1a\x45\xdf\xa3\x89\xec\x80\x42\x82\x84webm") == "video/webm"  # after a Void element
    assert sniff(b"\x1a\x45\xdf\xa3\x89\x42\x82\x00webm") == "video/x-matroska"  # invalid size
    assert sniff(b"ID3\x04\x00\x00\x7f\x7f\x7f\x7f") == "audio/mpeg"
    assert sniff(struct.pack(">I", 0xFFFFFFFF) + b"ftypmif1\0\0\0\0avif") == "image/avif"
    assert sniff(struct.pack(">I", 1) + b"ftypmif1\0\0\0\0avif") == "image/heic"


def test_svg_sniff_is_fast_on_adversarial_text() -> None:
    import time

    for head in (b"<?xml " + b" " * 500, b"<!--" + b"<!--" * 120, b"<!DOCTYPE svg [" + b"[" * 490, b" " * 511 + b"x"):
        started = time.perf_counter()
        assert sniff(head[:SNIFF_BYTES]) == TEXT
        assert time.perf_counter() - started < 0.05


@pytest.mark.parametrize(
    ("mime", "expected"),
    [
        ("video/mp4", True),
        ("audio/ogg", True),
        ("image/png", True),
        ("image/svg+xml", True),
        ("Video/WebM", True),
        ("audio/mp4; codecs=mp4a.40.2", True),
        (" image/jpeg ", True),
        ("text/plain; charset=utf-8", False),
        ("application/octet-stream", False),
        ("application/vnd.apple.mpegurl", False),
        ("application/pdf", False),
        ("video", False),
        ("video/", False),
        ("videos/mp4", False),
        ("", False),
    ],
)
def test_is_media(mime: str, expected: bool) -> None:
    assert is_media(mime) is expected
