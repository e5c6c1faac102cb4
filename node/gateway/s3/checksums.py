"""Running checksums of S3 request bodies, and the checks a request declares, with no I/O.

Participants: an S3 client that states what its body should hash to and this
node, which computes the same while the body streams through and refuses the
request at the end if they differ.

Goals: every integrity check the SDKs send on uploads: ``Content-MD5``
(base64 of the MD5, the legacy check Flysystem and older SDKs use); one
``x-amz-checksum-<algorithm>`` header, or the same name announced in
``x-amz-trailer`` whose value comes at the end of an aws-chunked body (the
default of boto3, aws-sdk-s3 and the JS v3 SDK since early 2025, with
CRC32); and a hex SHA-256 declared in ``x-amz-content-sha256``. Values are
base64 of the big-endian digest, as S3 sends them.

Algorithms: ``crc32`` (zlib), ``crc32c`` and ``crc64nvme`` (``awscrt``, the
AWS Common Runtime that ``botocore[crt]`` uses for the same two; hardware
accelerated, wheels for every platform), ``sha1`` and ``sha256`` (hashlib).
Without awscrt installed, CRC32C and CRC64NVME are refused with 400
``InvalidRequest``, as are algorithms S3 does not know.

Non-goals: composite (multipart) checksums, which are made of the parts'
stored checksums, not of a body; and storing the values (the caller gets them
from :meth:`BodyChecks.finish`).

Errors (:class:`S3Error`): 400 ``InvalidDigest`` for a ``Content-MD5`` that is
not base64 of 16 bytes; 400 ``InvalidRequest`` for a malformed, unsupported
or repeated ``x-amz-checksum-*`` declaration; at the end, 400 ``BadDigest``
"The Content-MD5 you specified did not match what we received." or "The CRC32
you specified did not match the calculated checksum." (with the algorithm's
name), and 400 ``XAmzContentSHA256Mismatch`` for the declared SHA-256.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from .errors import INVALID_DIGEST, X_AMZ_CONTENT_SHA256_MISMATCH, S3Error, bad_digest, invalid_request

__all__ = [
    "ALGORITHMS",
    "BodyChecks",
    "Checksum",
    "checksum_header",
    "decode_checksum",
    "new_checksum",
    "supported",
]

ALGORITHMS = ("crc32", "crc32c", "crc64nvme", "sha1", "sha256")  # S3's, in the order S3 lists them
_DIGEST_SIZES = {"crc32": 4, "crc32c": 4, "crc64nvme": 8, "sha1": 20, "sha256": 32, "md5": 16}
_PREFIX = "x-amz-checksum-"

try:
    from awscrt import checksums as _crt
except ImportError:  # pragma: no cover - awscrt is a dependency; this keeps the rest usable without it
    _crt = None


class Checksum(Protocol):
    algorithm: str

    def update(self, data: bytes | bytearray | memoryview) -> None: ...

    def digest(self) -> bytes: ...


class _Crc:
    def __init__(self, algorithm: str, function: Callable[[Any, int], int], size: int) -> None:
        self.algorithm = algorithm
        self._function = function
        self._size = size
        self._value = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._value = self._function(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(self._size, "big")


class _Hash:
    def __init__(self, algorithm: str) -> None:
        self.algorithm = algorithm
        self._hash = hashlib.new(algorithm, usedforsecurity=False)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._hash.update(data)

    def digest(self) -> bytes:
        return self._hash.digest()


def supported(algorithm: str) -> bool:
    """Whether this node can compute ``algorithm`` (lower-case S3 name)."""
    return algorithm in ("crc32", "sha1", "sha256", "md5") or (
        algorithm in ("crc32c", "crc64nvme") and _crt is not None
    )


def new_checksum(algorithm: str) -> Checksum:
    """A running checksum for an S3 algorithm name (any case), or ``md5`` for ``Content-MD5``."""
    name = algorithm.lower()
    if name == "crc32":
        return _Crc(name, zlib.crc32, 4)
    if name in ("sha1", "sha256", "md5"):
        return _Hash(name)
    if name in ("crc32c", "crc64nvme"):
        if _crt is None:
            raise invalid_request(f"The {name.upper()} checksum algorithm is not supported by this server.")
        return _Crc(name, _crt.crc32c if name == "crc32c" else _crt.crc64nvme, _DIGEST_SIZES[name])
    raise _unsupported()


def _unsupported() -> S3Error:
    return invalid_request(
        "Checksum algorithm provided is unsupported. Please try again with any of the valid types: "
        "[CRC32, CRC32C, CRC64NVME, SHA1, SHA256]"
    )


def checksum_header(algorithm: str) -> str:
    """``x-amz-checksum-crc32`` for ``crc32``: where S3 carries the value, in headers and trailers."""
    return _PREFIX + algorithm.lower()


def decode_checksum(algorithm: str, value: str, where: str) -> bytes:
    """The digest a base64 ``value`` stands for, refused with 400 ``InvalidRequest`` if it cannot be one."""
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != _DIGEST_SIZES[algorithm]:
        raise invalid_request(f"Value for {where} is invalid.")
    return digest


class BodyChecks:
    """The checks a request's headers ask of its body: :meth:`update` with the payload, then :meth:`finish`.

    Build it with :meth:`from_headers`. ``extra`` algorithms are computed too
    (for storing), without anything to compare them with.
    """

    def __init__(
        self,
        *,
        md5: bytes | None = None,
        algorithm: str | None = None,
        expected: bytes | None = None,
        in_trailer: bool = False,
        sha256_hex: str | None = None,
        extra: Iterable[str] = (),
    ) -> None:
        self.md5 = md5
        self.algorithm = algorithm
        self.expected = expected
        self.in_trailer = in_trailer
        self.sha256_hex = sha256_hex
        self._running: dict[str, Checksum] = {}
        wanted = [*extra]
        if algorithm is not None:
            wanted.append(algorithm)
        if md5 is not None:
            wanted.append("md5")
        if sha256_hex is not None:
            wanted.append("sha256")
        for name in wanted:
            if name not in self._running:
                self._running[name] = new_checksum(name)

    @classmethod
    def from_headers(
        cls,
        headers: Sequence[tuple[str | bytes, str | bytes]],
        *,
        payload_sha256: str | None = None,
        extra: Iterable[str] = (),
    ) -> BodyChecks:
        """Read ``Content-MD5``, ``x-amz-checksum-*``, ``x-amz-trailer`` and ``x-amz-sdk-checksum-algorithm``.

        ``payload_sha256`` is ``Authorization.payload_sha256``: the hex digest
        the signature covers, when the payload is signed in one piece.
        """
        values: dict[str, list[str]] = {}
        for raw_name, raw_value in headers:
            name = _str(raw_name).strip().lower()
            values.setdefault(name, []).append(_str(raw_value).strip())

        md5 = None
        if "content-md5" in values:
            md5_values = values["content-md5"]
            try:
                md5 = base64.b64decode(md5_values[0], validate=True) if len(md5_values) == 1 else b""
            except (binascii.Error, ValueError):
                md5 = b""
            if len(md5) != 16:
                raise S3Error(INVALID_DIGEST, 400, "The Content-MD5 you specified was invalid.")

        declared = [name for name in values if name.startswith(_PREFIX) and name not in _NOT_CHECKSUMS]
        trailer_names = [
            part.strip().lower()
            for value in values.get("x-amz-trailer", [])
            for part in value.split(",")
            if part.strip()
        ]
        checksum_trailers = [name for name in trailer_names if name.startswith(_PREFIX)]
        if len(declared) + len(checksum_trailers) > 1 or any(len(values[name]) > 1 for name in declared):
            raise invalid_request("Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.")
        for name in trailer_names:
            if not name.startswith(_PREFIX):
                raise invalid_request(f"The trailing header {name} is not supported; only x-amz-checksum-* may trail.")

        algorithm = expected = None
        in_trailer = False
        if declared:
            name = declared[0]
            algorithm = _known(name[len(_PREFIX) :])
            expected = decode_checksum(algorithm, values[name][0], name)
        elif checksum_trailers:
            algorithm = _known(checksum_trailers[0][len(_PREFIX) :])
            in_trailer = True

        sdk_algorithm = values.get("x-amz-sdk-checksum-algorithm") or values.get("x-amz-checksum-algorithm")
        if sdk_algorithm:
            named = _known(sdk_algorithm[0].lower())
            if algorithm is not None and named != algorithm:
                raise invalid_request(
                    f"Value for x-amz-sdk-checksum-algorithm header is invalid: it names {named.upper()}, "
                    f"but the checksum sent is {algorithm.upper()}."
                )
            if algorithm is None:
                extra = [*extra, named]  # worth computing: the client will ask for it back

        return cls(
            md5=md5,
            algorithm=algorithm,
            expected=expected,
            in_trailer=in_trailer,
            sha256_hex=payload_sha256.lower() if payload_sha256 else None,
            extra=extra,
        )

    @property
    def trailer_name(self) -> str | None:
        """The trailing header that will carry the checksum, if it comes in a trailer."""
        return checksum_header(self.algorithm) if self.in_trailer and self.algorithm else None

    @property
    def running(self) -> bool:
        """Whether anything is computed from the body (a request that declares nothing and signs no
        payload needs no pass over it)."""
        return bool(self._running)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        for checksum in self._running.values():
            checksum.update(data)

    def finish(self, trailers: Mapping[str, str] | None = None) -> dict[str, str]:
        """Compare everything declared; return each computed checksum (base64) by algorithm name.

        ``trailers`` are the decoded trailing headers
        (``AwsChunkedDecoder.trailers``) when the checksum came in one.
        """
        digests = {name: checksum.digest() for name, checksum in self._running.items()}
        if self.md5 is not None and digests["md5"] != self.md5:
            raise bad_digest("The Content-MD5 you specified did not match what we received.")
        expected = self.expected
        if self.in_trailer and self.algorithm is not None:
            name = checksum_header(self.algorithm)
            value = (trailers or {}).get(name)
            if value is None:
                raise invalid_request(f"The trailing header {name} declared in x-amz-trailer was not sent.")
            expected = decode_checksum(self.algorithm, value, name)
        if self.algorithm is not None and expected is not None and digests[self.algorithm] != expected:
            raise bad_digest(f"The {self.algorithm.upper()} you specified did not match the calculated checksum.")
        if self.sha256_hex is not None and digests["sha256"].hex() != self.sha256_hex:
            raise S3Error(
                X_AMZ_CONTENT_SHA256_MISMATCH,
                400,
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
                {"ClientComputedContentSHA256": self.sha256_hex, "S3ComputedContentSHA256": digests["sha256"].hex()},
            )
        return {name: base64.b64encode(digest).decode("ascii") for name, digest in digests.items()}


# x-amz-checksum-* headers that are not checksum values
_NOT_CHECKSUMS = frozenset({"x-amz-checksum-algorithm", "x-amz-checksum-mode", "x-amz-checksum-type"})


def _known(algorithm: str) -> str:
    name = algorithm.lower()
    if name not in ALGORITHMS:
        raise _unsupported()
    new_checksum(name)  # raises if S3 knows it but this node cannot compute it
    return name


def _str(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value
