"""Decoding ``Content-Encoding: aws-chunked`` request bodies, with no I/O.

Participants: an S3 client uploading an object in aws-chunked form and this
node, which has already authenticated the request (``sigv4.authenticate``)
and now reads its body.

Goals: turn the body back into the object's bytes as they arrive, in bounded
memory, checking what the framing promises: each chunk's signature in the
signed modes, the trailing headers the request declared in ``x-amz-trailer``
(and their signature in the signed-trailer mode), and the decoded length in
``x-amz-decoded-content-length``.

Non-goals: checking the trailing checksum's value (``checksums.py`` does, from
:attr:`AwsChunkedDecoder.trailers`), HTTP's own ``Transfer-Encoding: chunked``
(the HTTP server removes it before the body gets here; aws-chunked is a second
layer inside it), and the chunk-size rule S3 enforces (8 KiB or more except
the last chunk), which no client relies on.

Wire, per mode (``x-amz-content-sha256`` of the request):

* ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD``: chunks of
  ``hex-size;chunk-signature=<64 hex>\\r\\n<data>\\r\\n``, ending with a chunk of
  size 0 and then ``\\r\\n``. Chunk *n*'s signature is the HMAC of
  ``AWS4-HMAC-SHA256-PAYLOAD``, the timestamp, the scope, chunk *n-1*'s
  signature (the request's own signature for the first chunk), the SHA-256 of
  the empty string and the SHA-256 of the chunk's data, joined by newlines.
* ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER``: the same chunks, then after
  the final chunk's line the trailing headers, one ``name:value\\r\\n`` each,
  then ``x-amz-trailer-signature:<64 hex>\\r\\n`` and ``\\r\\n``. The trailer
  signature is the HMAC of ``AWS4-HMAC-SHA256-TRAILER``, the timestamp, the
  scope, the final chunk's signature and the SHA-256 of the trailers as
  ``name:value\\n`` lines, sorted by name.
* ``STREAMING-UNSIGNED-PAYLOAD-TRAILER`` (boto3's, aws-sdk-s3's and the JS
  v3 SDK's default for uploads): ``hex-size\\r\\n<data>\\r\\n`` chunks, then
  ``0\\r\\n``, the trailing headers and ``\\r\\n``. An
  ``x-amz-trailer-signature`` here has nothing to chain from and is ignored.

Data is handed on as it arrives, so a multi-MiB chunk is never held: only a
chunk-size or trailer line is buffered, up to ``max_line`` bytes (4 KiB). The
price is that a chunk's data is yielded before its signature has been
checked, which happens when its last byte arrives. Everything
:meth:`AwsChunkedDecoder.feed` returns is therefore provisional until
:meth:`AwsChunkedDecoder.end` returns without raising: the caller stages it
and keeps it only then (it has to wait for the checksum anyway).

Errors are :class:`S3Error`, and after one the decoder refuses to go on:
403 ``SignatureDoesNotMatch`` for a chunk or trailer signature that does not
match (or a missing trailer signature); 400 ``IncompleteBody`` for a body that
ends early or decodes to fewer bytes than ``x-amz-decoded-content-length``;
400 ``InvalidRequest`` for broken framing (a bad size line, missing CRLF,
bytes after the end, more data than declared); 400 ``MalformedTrailerError``
for trailing headers that are malformed, undeclared, repeated or missing.

Tolerated: chunk extensions other than ``chunk-signature`` (ignored), upper-
or lower-case hex sizes, and a body that stops right after its last trailer
line without the final ``\\r\\n`` (the trailers are then complete, and are
verified as usual).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence

from .errors import MALFORMED_TRAILER, S3Error, incomplete_body, invalid_request, signature_does_not_match
from .sigv4 import Authorization, PayloadMode, SigningContext

__all__ = ["MAX_LINE", "MAX_TRAILERS", "TRAILER_SIGNATURE", "AwsChunkedDecoder", "decoder_for", "is_aws_chunked"]

MAX_LINE = 4096
MAX_TRAILERS = 16
TRAILER_SIGNATURE = "x-amz-trailer-signature"

_HEX_SIZE = re.compile(rb"[0-9a-fA-F]{1,16}")
_TRAILER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")


class _State(enum.Enum):
    SIZE_LINE = "size line"
    DATA = "data"
    DATA_END = "CRLF after data"
    TRAILER_LINE = "trailer line"
    DONE = "done"
    FAILED = "failed"


def _malformed_trailer(message: str) -> S3Error:
    return S3Error(MALFORMED_TRAILER, 400, f"The request contained trailing data that was not well-formed: {message}")


class AwsChunkedDecoder:
    """An aws-chunked body decoder: :meth:`feed` it bytes as they come, then call :meth:`end`.

    ``mode`` is the request's streaming payload mode; ``signing`` (from
    ``Authorization.signing``) is required when it has chunk signatures.
    ``decoded_length`` is ``x-amz-decoded-content-length`` (``None``: not
    checked). ``trailers`` are the names in ``x-amz-trailer``.
    """

    def __init__(
        self,
        mode: PayloadMode,
        *,
        signing: SigningContext | None = None,
        decoded_length: int | None = None,
        trailers: Iterable[str] = (),
        max_line: int = MAX_LINE,
    ) -> None:
        if not mode.streaming:
            raise ValueError(f"{mode} is not an aws-chunked payload mode")
        if mode.chunk_signatures and signing is None:
            raise ValueError(f"{mode.value} needs the request's signing context")
        if decoded_length is not None and decoded_length < 0:
            raise ValueError("decoded_length must not be negative")
        self.mode = mode
        self._signing = signing if mode.chunk_signatures else None
        self.decoded_length = decoded_length
        self.expected_trailers = frozenset(name.strip().lower() for name in trailers if name.strip())
        self._max_line = max_line
        self._state = _State.SIZE_LINE
        self._error: S3Error | None = None
        self._line = bytearray()
        self._remaining = 0  # data bytes left in the current chunk
        self._crlf_seen = 0
        self._chunk_hash = hashlib.sha256()
        self._chunk_signature = ""
        self._previous = signing.seed_signature if self._signing is not None and signing is not None else ""
        self._trailer_lines = 0
        self._trailer_signature: str | None = None
        self.trailers: dict[str, str] = {}
        self.decoded = 0  # payload bytes decoded so far

    @property
    def done(self) -> bool:
        """The whole body has been read and checked."""
        return self._state is _State.DONE

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Take the next bytes of the body; return the payload bytes they complete (possibly none)."""
        self._check_usable()
        try:
            return self._feed(data if isinstance(data, bytes | bytearray) else bytes(data))
        except S3Error as error:
            self._fail(error)
            raise

    def end(self) -> None:
        """The body has ended: raise unless it was complete and everything in it checked out."""
        self._check_usable()
        try:
            self._end()
        except S3Error as error:
            self._fail(error)
            raise

    # -----------------------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._error is not None:
            raise self._error

    def _fail(self, error: S3Error) -> None:
        self._error = error
        self._state = _State.FAILED
        self._line.clear()

    def _feed(self, data: bytes | bytearray) -> list[bytes]:
        out: list[bytes] = []
        position, size = 0, len(data)
        while position < size:
            state = self._state
            if state is _State.DATA:
                take = min(self._remaining, size - position)
                piece = bytes(data[position : position + take])
                position += take
                self._remaining -= take
                self.decoded += take
                if self._signing is not None:
                    self._chunk_hash.update(piece)
                out.append(piece)
                if self._remaining == 0:
                    self._chunk_done(final=False)
            elif state is _State.DATA_END:
                if data[position] != b"\r\n"[self._crlf_seen]:
                    raise invalid_request("a chunk's data is not followed by CRLF")
                position += 1
                self._crlf_seen += 1
                if self._crlf_seen == 2:
                    self._state = _State.SIZE_LINE
            elif state is _State.DONE:
                raise invalid_request("there are bytes after the end of the aws-chunked body")
            else:
                # look for the end of the line no further than the line may reach
                room = self._max_line - len(self._line)
                newline = data.find(b"\n", position, position + room)
                end = newline + 1 if newline >= 0 else min(size, position + room)
                self._line += data[position:end]
                position = end
                if newline < 0:
                    if len(self._line) >= self._max_line:
                        what = "chunk-size" if state is _State.SIZE_LINE else "trailer"
                        raise invalid_request(f"an aws-chunked {what} line is longer than {self._max_line} bytes")
                    continue
                line = bytes(self._line)
                self._line.clear()
                if not line.endswith(b"\r\n"):
                    raise invalid_request("an aws-chunked line ends in LF without CR")
                if state is _State.SIZE_LINE:
                    self._size_line(line[:-2])
                else:
                    self._trailer_line(line[:-2])
        return out

    def _size_line(self, line: bytes) -> None:
        size_text, _, extensions = line.partition(b";")
        if not _HEX_SIZE.fullmatch(size_text):
            raise invalid_request("an aws-chunked chunk does not start with its size in hex")
        size = int(size_text, 16)
        if self.decoded_length is not None and self.decoded + size > self.decoded_length:
            raise invalid_request(
                f"the aws-chunked body holds more than the {self.decoded_length} bytes in x-amz-decoded-content-length"
            )
        if self._signing is not None:
            signature = None
            for extension in extensions.split(b";"):
                name, _, value = extension.partition(b"=")
                if name.strip() == b"chunk-signature":
                    signature = value.strip().decode("latin-1")
            if signature is None:
                raise invalid_request("an aws-chunked chunk has no chunk-signature")
            self._chunk_signature = signature
            self._chunk_hash = hashlib.sha256()
        self._remaining = size
        if size == 0:
            self._chunk_done(final=True)
        else:
            self._state = _State.DATA

    def _chunk_done(self, *, final: bool) -> None:
        """The current chunk's data is complete (``final``: it was the empty last chunk): check it, move on."""
        if self._signing is not None:
            expected = self._signing.chunk_signature(self._previous, self._chunk_hash.hexdigest())
            if not hmac.compare_digest(expected.encode(), self._chunk_signature.lower().encode("latin-1")):
                raise signature_does_not_match()
            self._previous = expected
        if final:  # trailers, possibly none, follow the empty chunk
            self._state = _State.TRAILER_LINE
        else:
            self._state = _State.DATA_END
            self._crlf_seen = 0

    def _trailer_line(self, line: bytes) -> None:
        if not line:
            self._finish()
            return
        self._trailer_lines += 1
        if self._trailer_lines > MAX_TRAILERS:
            raise _malformed_trailer(f"more than {MAX_TRAILERS} trailing headers")
        name_bytes, colon, value_bytes = line.partition(b":")
        name = name_bytes.decode("latin-1").strip().lower()
        value = value_bytes.decode("latin-1").strip(" \t")
        if not colon or not _TRAILER_NAME.fullmatch(name):
            raise _malformed_trailer("a trailing header is not of the form name:value")
        if name == TRAILER_SIGNATURE:
            if self._trailer_signature is not None:
                raise _malformed_trailer(f"{TRAILER_SIGNATURE} is given twice")
            self._trailer_signature = value
            return
        if name in self.trailers:
            raise _malformed_trailer(f"{name} is given twice")
        if name not in self.expected_trailers:
            raise _malformed_trailer(f"{name} was not declared in x-amz-trailer")
        self.trailers[name] = value

    def _finish(self) -> None:
        missing = sorted(self.expected_trailers - self.trailers.keys())
        if missing:
            raise _malformed_trailer(f"the declared trailing header {', '.join(missing)} is missing")
        if self.mode is PayloadMode.STREAMING_SIGNED_TRAILER and self._signing is not None:
            if self._trailer_signature is None:
                raise signature_does_not_match(f"The trailing headers carry no {TRAILER_SIGNATURE}.")
            canonical = "".join(f"{name}:{self.trailers[name]}\n" for name in sorted(self.trailers))
            expected = self._signing.trailer_signature(self._previous, canonical.encode("latin-1"))
            if not hmac.compare_digest(expected.encode(), self._trailer_signature.lower().encode("latin-1")):
                raise signature_does_not_match()
        elif self.mode is PayloadMode.STREAMING_SIGNED and self._trailer_signature is not None:
            raise _malformed_trailer(f"{TRAILER_SIGNATURE} without trailing headers")
        if self.decoded_length is not None and self.decoded != self.decoded_length:
            raise incomplete_body(
                f"The aws-chunked body decodes to {self.decoded} bytes; "
                f"x-amz-decoded-content-length is {self.decoded_length}"
            )
        self._state = _State.DONE

    def _end(self) -> None:
        if self._state is _State.DONE:
            return
        if self._state is _State.TRAILER_LINE and not self._line and self._trailer_lines > 0:
            self._finish()  # the last trailer line arrived but not the empty line after it
            return
        raise incomplete_body(f"The aws-chunked body ended early, in a {self._state.value}")


def is_aws_chunked(headers: Sequence[tuple[str | bytes, str | bytes]]) -> bool:
    """Whether ``Content-Encoding`` lists ``aws-chunked``."""
    for name, value in headers:
        if _lower(name) == "content-encoding" and any(
            part.strip().lower() == "aws-chunked" for part in _str(value).split(",")
        ):
            return True
    return False


def decoder_for(auth: Authorization, headers: Sequence[tuple[str | bytes, str | bytes]]) -> AwsChunkedDecoder:
    """The decoder for an authenticated request's body, from its mode and its ``x-amz-*`` headers.

    Call it when ``auth.payload.streaming``; a request whose payload mode is
    not a streaming one is refused with 400 ``InvalidRequest``.
    """
    if not auth.payload.streaming:
        raise invalid_request(f"aws-chunked bodies need a STREAMING-* x-amz-content-sha256, not {auth.payload.value}")
    values = _header_map(headers)
    length_text = values.get("x-amz-decoded-content-length")
    decoded_length = None
    if length_text is not None:
        if not length_text.isascii() or not length_text.isdigit() or len(length_text) > 19:
            raise S3Error("InvalidArgument", 400, "x-amz-decoded-content-length is not a number")
        decoded_length = int(length_text)
    trailer = values.get("x-amz-trailer", "")
    names = [part.strip().lower() for part in trailer.split(",") if part.strip()]
    if auth.payload.trailer and not names:
        raise invalid_request(f"{auth.payload.value} needs an x-amz-trailer header")
    if not auth.payload.trailer and names and auth.payload.streaming:
        raise invalid_request(f"x-amz-trailer is not allowed with {auth.payload.value}")
    return AwsChunkedDecoder(auth.payload, signing=auth.signing, decoded_length=decoded_length, trailers=names)


def _lower(name: str | bytes) -> str:
    return _str(name).strip().lower()


def _str(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _header_map(headers: Sequence[tuple[str | bytes, str | bytes]]) -> Mapping[str, str]:
    found: dict[str, str] = {}
    for name, value in headers:
        key = _lower(name)
        found[key] = f"{found[key]},{_str(value).strip()}" if key in found else _str(value).strip()
    return found
