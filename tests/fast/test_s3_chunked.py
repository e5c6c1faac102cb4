"""aws-chunked bodies and their checksums, from real clients and AWS's published examples.

Unsigned-trailer bodies are botocore's own (``AwsChunkedWrapper``, what
``put_object`` sends over HTTPS by default), captured offline. No Python
client writes chunk-signed bodies, so for those the seed signature comes from
a real signer (aws-c-auth through awscrt, and botocore's ``S3SigV4Auth``)
and the chunks are signed here, following the AWS document; the AWS examples
check that encoder and the decoder against published signatures.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import itertools
import zlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import botocore.auth
import pytest
import test_s3_sigv4 as sigv4_tests
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st
from test_s3_sigv4 import ACCESS_KEY, SECRET, Sent, crt_sign, fails, make_client, secret_for, sent_from

from node.gateway.s3.checksums import BodyChecks, new_checksum, supported
from node.gateway.s3.chunked import MAX_LINE, AwsChunkedDecoder, decoder_for, is_aws_chunked
from node.gateway.s3.errors import S3Error
from node.gateway.s3.sigv4 import PayloadMode, SigningContext, authenticate, signing_key

signer = sigv4_tests.signer  # the fixture: botocore's Python signer, then the CRT one

EMPTY = hashlib.sha256(b"").hexdigest()


def decode(decoder: AwsChunkedDecoder, body: bytes, step: int | None = None) -> bytes:
    step = step or len(body) or 1
    out = []
    for start in range(0, len(body), step):
        out.extend(decoder.feed(body[start : start + step]))
    decoder.end()
    return b"".join(out)


# ---------------------------------------------------------------------------------------------
# A chunk signer written from the AWS document, independently of node.gateway.s3


def _hmac_hex(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def encode_signed(
    payload: bytes,
    sizes: Sequence[int],
    *,
    key: bytes,
    amz_date: str,
    scope: str,
    seed: str,
    trailers: dict[str, str] | None = None,
) -> bytes:
    """``payload`` cut into chunks of ``sizes`` (the rest in one more), chunk-signed, ending as the mode requires."""
    pieces, position = [], 0
    for size in sizes:
        if position >= len(payload):
            break
        pieces.append(payload[position : position + size])
        position += size
    if position < len(payload):
        pieces.append(payload[position:])
    previous, wire = seed, bytearray()
    for piece in [*pieces, b""]:
        text = "\n".join(
            ["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, previous, EMPTY, hashlib.sha256(piece).hexdigest()]
        )
        previous = _hmac_hex(key, text)
        wire += f"{len(piece):x};chunk-signature={previous}\r\n".encode() + piece
        if piece:
            wire += b"\r\n"
    if trailers is None:
        return bytes(wire + b"\r\n")
    canonical = "".join(f"{name}:{value}\n" for name, value in sorted(trailers.items()))
    text = "\n".join(
        ["AWS4-HMAC-SHA256-TRAILER", amz_date, scope, previous, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    for name, value in trailers.items():
        wire += f"{name}:{value}\r\n".encode()
    wire += f"x-amz-trailer-signature:{_hmac_hex(key, text)}\r\n\r\n".encode()
    return bytes(wire)


def encode_unsigned(payload: bytes, sizes: Sequence[int], trailers: dict[str, str]) -> bytes:
    """What botocore's AwsChunkedWrapper, the JS v3 SDK and aws-sdk-s3 write, with chosen chunk sizes."""
    wire, position = bytearray(), 0
    for size in sizes:
        piece = payload[position : position + size]
        if not piece:
            break
        wire += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        position += size
    if position < len(payload):
        wire += f"{len(payload) - position:x}\r\n".encode() + payload[position:] + b"\r\n"
    wire += b"0\r\n" + b"".join(f"{n}:{v}\r\n".encode() for n, v in trailers.items()) + b"\r\n"
    return bytes(wire)


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


# ---------------------------------------------------------------------------------------------
# AWS's examples: 65 KiB of 'a' in chunks of 64 KiB and 1 KiB, signed, with and without a CRC32C trailer

DOC_NOW = datetime(2013, 5, 24, 0, 1, tzinfo=UTC)
DOC_DATA = b"a" * 66560
DOC_HEADERS = [
    ("Host", "s3.amazonaws.com"),
    ("x-amz-date", "20130524T000000Z"),
    ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
    ("Content-Encoding", "aws-chunked"),
    ("x-amz-decoded-content-length", "66560"),
]
DOC_SIGNED = (
    [("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"), ("Content-Length", "66824")],
    "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;"
    "x-amz-storage-class",
    "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
    [
        "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
        "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
        "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
    ],
    b"\r\n",
)
DOC_TRAILER = (
    [
        ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"),
        ("x-amz-trailer", "x-amz-checksum-crc32c"),
    ],
    "content-encoding;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class;"
    "x-amz-trailer",
    "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e",
    [
        "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
        "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
        "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992",
    ],
    b"x-amz-checksum-crc32c:sOO8/Q==\r\n"
    b"x-amz-trailer-signature:d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435\r\n\r\n",
)


def doc_request(example: tuple[Any, ...]) -> tuple[list[tuple[str, str]], bytes]:
    extra, signed, seed, signatures, tail = example
    credential = f"{ACCESS_KEY}/20130524/us-east-1/s3/aws4_request"
    headers = [
        *DOC_HEADERS,
        *extra,
        ("Authorization", f"AWS4-HMAC-SHA256 Credential={credential},SignedHeaders={signed},Signature={seed}"),
    ]
    body = b"".join(
        f"{size:x};chunk-signature={signature}\r\n".encode() + b"a" * size + (b"\r\n" if size else b"")
        for size, signature in zip([65536, 1024, 0], signatures, strict=True)
    )
    return headers, body + tail


@pytest.mark.parametrize("example", [DOC_SIGNED, DOC_TRAILER], ids=["signed", "signed-trailer"])
@pytest.mark.parametrize("step", [None, 1, 7, 777, 65536])
def test_aws_examples(example: tuple[Any, ...], step: int | None) -> None:
    headers, body = doc_request(example)
    auth = authenticate("PUT", "/examplebucket/chunkObject.txt", "", headers, now=DOC_NOW, secret_for=secret_for)
    assert is_aws_chunked(headers)
    checks = BodyChecks.from_headers(headers)
    decoder = decoder_for(auth, headers)
    data = decode(decoder, body, step)
    assert data == DOC_DATA and decoder.done and decoder.decoded == 66560
    checks.update(data)
    computed = checks.finish(decoder.trailers)
    if example is DOC_TRAILER:
        assert decoder.trailers == {"x-amz-checksum-crc32c": "sOO8/Q=="}
        assert computed == {"crc32c": "sOO8/Q=="}
    else:
        assert decoder.trailers == {}


def test_aws_example_encoder_agrees() -> None:
    """The test's own chunk signer reproduces the published body byte for byte."""
    _, body = doc_request(DOC_TRAILER)
    key = signing_key(SECRET, "20130524", "us-east-1")
    ours = encode_signed(
        DOC_DATA,
        [65536, 1024],
        key=key,
        amz_date="20130524T000000Z",
        scope="20130524/us-east-1/s3/aws4_request",
        seed=DOC_TRAILER[2],
        trailers={"x-amz-checksum-crc32c": "sOO8/Q=="},
    )
    assert ours == body


def test_aws_example_tampering() -> None:
    headers, body = doc_request(DOC_SIGNED)
    auth = authenticate("PUT", "/examplebucket/chunkObject.txt", "", headers, now=DOC_NOW, secret_for=secret_for)
    # a data byte in the second chunk: the first chunk decodes, the second is refused when it is complete
    position = body.index(b"400;")
    changed = body[: position + 100] + b"b" + body[position + 101 :]
    decoder = decoder_for(auth, headers)
    first = decoder.feed(changed[:position])
    assert b"".join(first) == b"a" * 65536
    fails("SignatureDoesNotMatch", 403, lambda: decoder.feed(changed[position:]))
    # and it stays refused
    fails("SignatureDoesNotMatch", 403, lambda: decoder.feed(b""))
    fails("SignatureDoesNotMatch", 403, decoder.end)
    # a signature digit
    changed = body.replace(b"ad80c730", b"ad80c731")
    fails("SignatureDoesNotMatch", 403, lambda: decode(decoder_for(auth, headers), changed))
    # chunks in another order keep their sizes but not their chain
    fails(
        "SignatureDoesNotMatch", 403, lambda: decode(decoder_for(auth, headers), body.replace(b"ad80c730", b"0055627c"))
    )

    headers, body = doc_request(DOC_TRAILER)
    auth = authenticate("PUT", "/examplebucket/chunkObject.txt", "", headers, now=DOC_NOW, secret_for=secret_for)
    fails(
        "SignatureDoesNotMatch", 403, lambda: decode(decoder_for(auth, headers), body.replace(b"sOO8/Q==", b"sOO8/A=="))
    )
    without = body[: body.index(b"x-amz-trailer-signature")] + b"\r\n"
    fails("SignatureDoesNotMatch", 403, lambda: decode(decoder_for(auth, headers), without))


# ---------------------------------------------------------------------------------------------
# botocore's default upload: STREAMING-UNSIGNED-PAYLOAD-TRAILER with a CRC32 trailer


def upload(body: bytes, **params: Any) -> tuple[Sent, Any]:
    client = make_client()
    client.s3.put_object(Bucket="media", Key="clip.mp4", Body=body, **params)
    sent = client.last()
    return sent, sent.verify()


def receive(sent: Sent, auth: Any, body: bytes | None = None, step: int = 65536) -> dict[str, str]:
    """What the HTTP layer will do: decode, check, return the computed checksums."""
    checks = BodyChecks.from_headers(sent.headers, payload_sha256=auth.payload_sha256)
    decoder = decoder_for(auth, sent.headers)
    wire = sent.body if body is None else body
    for start in range(0, len(wire), step):
        for piece in decoder.feed(wire[start : start + step]):
            checks.update(piece)
    decoder.end()
    return checks.finish(decoder.trailers)


def test_boto3_default_put_object(signer: str) -> None:
    body = bytes(range(256)) * 10000  # 2.5 MiB: three of botocore's 1 MiB chunks
    sent, auth = upload(body)
    assert auth.payload is PayloadMode.STREAMING_UNSIGNED_TRAILER
    assert sent.header("Content-Encoding") == "aws-chunked"
    assert sent.header("x-amz-trailer") == "x-amz-checksum-crc32"
    assert sent.body.endswith(f"0\r\nx-amz-checksum-crc32:{crc32_b64(body)}\r\n\r\n".encode())
    decoder = decoder_for(auth, sent.headers)
    assert decode(decoder, sent.body, 100_000) == body
    assert decoder.trailers == {"x-amz-checksum-crc32": crc32_b64(body)}
    assert receive(sent, auth)["crc32"] == crc32_b64(body)


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"])
def test_boto3_checksum_algorithms(algorithm: str) -> None:
    if not supported(algorithm.lower()):
        pytest.skip(f"{algorithm} needs awscrt")
    body = b"frame" * 50000
    sent, auth = upload(body, ChecksumAlgorithm=algorithm)
    assert sent.header("x-amz-trailer") == f"x-amz-checksum-{algorithm.lower()}"
    computed = receive(sent, auth)
    assert computed[algorithm.lower()] == sent.body.split(b":")[-1].strip().decode()
    # the same body with the checksum of something else
    wrong = sent.body.replace(body[-5:] + b"\r\n0\r\n", b"frams\r\n0\r\n")
    error = fails("BadDigest", 400, lambda: receive(sent, auth, wrong))
    assert error.message == f"The {algorithm} you specified did not match the calculated checksum."


def test_wrong_trailer_checksum() -> None:
    body = b"x" * 5000
    sent, auth = upload(body)
    wrong = sent.body.replace(crc32_b64(body).encode(), crc32_b64(b"y").encode())
    fails("BadDigest", 400, lambda: receive(sent, auth, wrong))
    garbled = sent.body.replace(crc32_b64(body).encode(), b"not base64!")
    fails("InvalidRequest", 400, lambda: receive(sent, auth, garbled))


def test_wrong_decoded_length() -> None:
    body = b"x" * 5000
    sent, auth = upload(body)
    longer = sent.with_header("X-Amz-Decoded-Content-Length", "5001")
    fails("IncompleteBody", 400, lambda: receive(longer, auth))
    shorter = sent.with_header("X-Amz-Decoded-Content-Length", "4999")
    fails("InvalidRequest", 400, lambda: receive(shorter, auth))
    garbage = sent.with_header("X-Amz-Decoded-Content-Length", "five")
    fails("InvalidArgument", 400, lambda: receive(garbage, auth))
    # without the header nothing is compared
    assert receive(sent.with_header("X-Amz-Decoded-Content-Length", None), auth)["crc32"] == crc32_b64(body)


def test_truncated_body() -> None:
    body = b"x" * 5000
    sent, auth = upload(body)
    for cut in (1, 3, 10, len(sent.body) // 2, len(sent.body) - 5000):
        error = fails("IncompleteBody", 400, functools.partial(receive, sent, auth, sent.body[:-cut]))
        assert error.status == 400
    # the last empty line may be missing: the trailer is complete without it
    assert receive(sent, auth, sent.body[:-2])["crc32"] == crc32_b64(body)


def test_missing_or_undeclared_trailers() -> None:
    body = b"x" * 100
    sent, auth = upload(body)
    no_trailer = encode_unsigned(body, [100], {})
    fails("MalformedTrailerError", 400, lambda: receive(sent, auth, no_trailer))
    extra = encode_unsigned(body, [100], {"x-amz-checksum-crc32": crc32_b64(body), "x-amz-meta-late": "1"})
    fails("MalformedTrailerError", 400, lambda: receive(sent, auth, extra))
    other = encode_unsigned(body, [100], {"x-amz-checksum-sha1": "C+7Hteo/D9vJXQ3UfzxbwnXaijM="})
    fails("MalformedTrailerError", 400, lambda: receive(sent, auth, other))
    twice = sent.body.replace(b"\r\n\r\n", b"\r\n" + sent.body.split(b"0\r\n")[-1])
    fails("MalformedTrailerError", 400, lambda: receive(sent, auth, twice))
    # an unsigned trailer's signature has nothing to chain from and is ignored
    signed = sent.body[:-2] + b"x-amz-trailer-signature:" + b"0" * 64 + b"\r\n\r\n"
    assert receive(sent, auth, signed)["crc32"] == crc32_b64(body)
    # a trailer mode with no x-amz-trailer
    fails("InvalidRequest", 400, lambda: decoder_for(auth, sent.with_header("X-Amz-Trailer", None).headers))


@pytest.mark.parametrize(
    ("mangle", "code"),
    [
        (lambda b: b.replace(b"64\r\n", b"6g\r\n", 1), "InvalidRequest"),  # size not hex
        (lambda b: b.replace(b"64\r\n", b"-64\r\n", 1), "InvalidRequest"),
        (lambda b: b.replace(b"64\r\n", b"\r\n", 1), "InvalidRequest"),  # no size
        (lambda b: b.replace(b"64\r\n", b"64\n", 1), "InvalidRequest"),  # bare LF
        (lambda b: b.replace(b"x\r\n0\r\n", b"xx\n0\r\n"), "InvalidRequest"),  # data longer than its size
        (lambda b: b.replace(b"x\r\n0\r\n", b"x0\r\n"), "InvalidRequest"),  # no CRLF after data
        (lambda b: b + b"junk", "InvalidRequest"),  # bytes after the end
        (lambda b: b.replace(b"64\r\n", b"65\r\n", 1), "InvalidRequest"),  # more than declared
        (lambda b: b.replace(b"x-amz-checksum-crc32:", b"x-amz-checksum-crc32 "), "MalformedTrailerError"),
    ],
)
def test_malformed_framing(mangle: Callable[[bytes], bytes], code: str) -> None:
    sent, auth = upload(b"x" * 100)
    assert sent.body.startswith(b"64\r\n")
    fails(code, 400, lambda: receive(sent, auth, mangle(sent.body)))


def test_bounded_lines() -> None:
    sent, auth = upload(b"x" * 100)
    decoder = decoder_for(auth, sent.headers)
    # a size line that never ends is refused once it passes MAX_LINE, however much comes at once
    fails("InvalidRequest", 400, lambda: decoder.feed(b"1" * (MAX_LINE + 1)))
    decoder = decoder_for(auth, sent.headers)
    for _ in range(MAX_LINE // 512 - 1):
        decoder.feed(b";" * 512)  # extensions are fine, up to the limit
    fails("InvalidRequest", 400, lambda: decoder.feed(b";" * 1024))
    decoder = AwsChunkedDecoder(PayloadMode.STREAMING_UNSIGNED_TRAILER, trailers=["x-amz-checksum-crc32"])
    decoder.feed(b"0\r\n")
    fails("InvalidRequest", 400, lambda: decoder.feed(b"x-amz-checksum-crc32:" + b"A" * MAX_LINE))


def test_large_chunk_is_yielded_as_it_arrives() -> None:
    payload = bytes(range(256)) * 32768  # one 8 MiB chunk
    wire = encode_unsigned(payload, [len(payload)], {"x-amz-checksum-crc32": crc32_b64(payload)})
    decoder = AwsChunkedDecoder(
        PayloadMode.STREAMING_UNSIGNED_TRAILER, decoded_length=len(payload), trailers=["x-amz-checksum-crc32"]
    )
    step, seen = 65536, 0
    for start in range(0, len(wire), step):
        pieces = decoder.feed(wire[start : start + step])
        assert sum(map(len, pieces)) <= step  # nothing is held back beyond what was fed
        seen += sum(map(len, pieces))
        assert seen >= min(start + step, len(payload)) - 16  # only the size line is not payload
    decoder.end()
    assert seen == len(payload)


# ---------------------------------------------------------------------------------------------
# Chunk-signed bodies with real seed signatures


class _StreamingS3SigV4Auth(botocore.auth.S3SigV4Auth):  # type: ignore[misc]
    """botocore's signer with the payload declared as STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]."""

    mode = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"

    def payload(self, request: Any) -> str:
        return self.mode


def streaming_request(how: str, mode: str, length: int, trailer: str | None) -> tuple[Sent, str]:
    headers = [("Content-Encoding", "aws-chunked"), ("X-Amz-Decoded-Content-Length", str(length))]
    if trailer:
        headers.append(("X-Amz-Trailer", trailer))
    if how == "crt":
        sent = crt_sign("PUT", "/media/signed.bin", [("Host", "s3.example.test"), *headers], payload=mode)
    else:
        request = AWSRequest(method="PUT", url="https://s3.example.test/media/signed.bin")
        for name, value in headers:
            request.headers[name] = value
        auth = _StreamingS3SigV4Auth(Credentials(ACCESS_KEY, SECRET), "s3", "us-east-1")
        auth.mode = mode
        auth.add_auth(request)
        sent = sent_from(request)
    authorization = sent.header("Authorization") or ""
    return sent, authorization.rsplit("Signature=", 1)[1]


@pytest.mark.parametrize("how", ["python", "crt"])
@pytest.mark.parametrize("trailer", [False, True], ids=["no-trailer", "trailer"])
def test_signed_streaming(how: str, trailer: bool) -> None:
    if how == "crt":
        pytest.importorskip("awscrt")
    payload = bytes(range(256)) * 700
    mode = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" + ("-TRAILER" if trailer else "")
    sent, seed = streaming_request(how, mode, len(payload), "x-amz-checksum-crc32" if trailer else None)
    auth = sent.verify()
    assert auth.payload is PayloadMode(mode)
    assert auth.signing is not None and auth.signing.seed_signature == seed
    amz_date = sent.header("x-amz-date") or ""
    key = signing_key(SECRET, amz_date[:8], "us-east-1")
    scope = f"{amz_date[:8]}/us-east-1/s3/aws4_request"
    trailers = {"x-amz-checksum-crc32": crc32_b64(payload)} if trailer else None
    body = encode_signed(payload, [65536, 8192], key=key, amz_date=amz_date, scope=scope, seed=seed, trailers=trailers)
    signed = Sent(sent.method, sent.url, sent.headers, body, sent.at)
    computed = receive(signed, auth, step=1000)
    assert computed.get("crc32", crc32_b64(payload)) == crc32_b64(payload)
    assert decode(decoder_for(auth, sent.headers), body, 3) == payload

    # a chain started from any other seed fails at the first chunk
    other = encode_signed(payload, [65536], key=key, amz_date=amz_date, scope=scope, seed="0" * 64, trailers=trailers)
    decoder = decoder_for(auth, sent.headers)
    fails("SignatureDoesNotMatch", 403, lambda: decoder.feed(other[:70000]))
    # so does one signed with another secret
    wrong_key = signing_key("other-secret", amz_date[:8], "us-east-1")
    forged = encode_signed(
        payload, [65536], key=wrong_key, amz_date=amz_date, scope=scope, seed=seed, trailers=trailers
    )
    fails("SignatureDoesNotMatch", 403, lambda: decode(decoder_for(auth, sent.headers), forged))
    # a chunk with no signature at all
    unsigned = encode_unsigned(payload, [65536], trailers or {})
    fails("InvalidRequest", 400, lambda: decode(decoder_for(auth, sent.headers), unsigned))
    # the chain covers the final empty chunk: dropping the tail is caught
    fails("IncompleteBody", 400, lambda: decode(decoder_for(auth, sent.headers), body[: body.rindex(b"0;chunk")]))


def test_decoder_arguments() -> None:
    with pytest.raises(ValueError, match="not an aws-chunked"):
        AwsChunkedDecoder(PayloadMode.UNSIGNED)
    with pytest.raises(ValueError, match="signing context"):
        AwsChunkedDecoder(PayloadMode.STREAMING_SIGNED)
    assert not is_aws_chunked([("Content-Encoding", "gzip")])
    assert is_aws_chunked([("content-encoding", "gzip, aws-chunked")])


# ---------------------------------------------------------------------------------------------
# Whatever way the body is split, the same bytes come out

_chunk_sizes = st.lists(st.integers(min_value=1, max_value=3000), min_size=0, max_size=6)
_context = SigningContext(
    signing_key=signing_key(SECRET, "20260101", "us-east-1"),
    amz_date="20260101T000000Z",
    scope="20260101/us-east-1/s3/aws4_request",
    seed_signature="a" * 64,
)


@st.composite
def _splits(draw: st.DrawFn, length: int) -> list[int]:
    cuts = draw(st.lists(st.integers(min_value=0, max_value=length), max_size=12))
    return sorted(set(cuts))


@given(
    payload=st.binary(max_size=6000), sizes=_chunk_sizes, data=st.data(), mode=st.sampled_from(list(PayloadMode)[2:])
)
@settings(max_examples=150, deadline=None)
def test_split_anywhere(payload: bytes, sizes: list[int], data: st.DataObject, mode: PayloadMode) -> None:
    trailers = {"x-amz-checksum-crc32": crc32_b64(payload)} if mode.trailer else None
    if mode.chunk_signatures:
        ctx = _context
        wire = encode_signed(
            payload,
            sizes,
            key=ctx.signing_key,
            amz_date=ctx.amz_date,
            scope=ctx.scope,
            seed=ctx.seed_signature,
            trailers=trailers,
        )
    else:
        wire = encode_unsigned(payload, sizes, trailers or {})
    cuts = data.draw(_splits(len(wire)))
    bounds = [0, *cuts, len(wire)]
    decoder = AwsChunkedDecoder(
        mode,
        signing=_context if mode.chunk_signatures else None,
        decoded_length=len(payload),
        trailers=list(trailers or {}),
    )
    out = []
    for start, end in itertools.pairwise(bounds):
        out.extend(decoder.feed(wire[start:end]))
    decoder.end()
    assert b"".join(out) == payload
    assert decoder.trailers == (trailers or {})


# ---------------------------------------------------------------------------------------------
# Checksums declared in headers


def test_signed_payload_with_checksum_header(signer: str) -> None:
    client = make_client("http://127.0.0.1:9000")
    body = b"still image" * 1000
    client.s3.put_object(Bucket="media", Key="a.jpg", Body=body, ChecksumAlgorithm="SHA256")
    sent = client.last()
    auth = sent.verify()
    assert auth.payload is PayloadMode.SIGNED
    assert sent.header("x-amz-checksum-sha256") == base64.b64encode(hashlib.sha256(body).digest()).decode()
    checks = BodyChecks.from_headers(sent.headers, payload_sha256=auth.payload_sha256)
    checks.update(body)
    assert checks.finish()["sha256"] == sent.header("x-amz-checksum-sha256")

    for declared in (None, auth.payload_sha256):
        checks = BodyChecks.from_headers(sent.headers, payload_sha256=declared)
        checks.update(body[:-1] + b"X")
        error = fails("BadDigest", 400, checks.finish)
        assert error.message == "The SHA256 you specified did not match the calculated checksum."
    checks = BodyChecks.from_headers(
        sent.with_header("x-amz-checksum-sha256", None).headers, payload_sha256=auth.payload_sha256
    )
    checks.update(body + b"!")
    error = fails("XAmzContentSHA256Mismatch", 400, checks.finish)
    assert error.details["ClientComputedContentSHA256"] == auth.payload_sha256


def test_content_md5() -> None:
    body = b"avatar"
    good = base64.b64encode(hashlib.md5(body).digest()).decode()
    checks = BodyChecks.from_headers([("Content-MD5", good)])
    checks.update(body)
    assert checks.finish()["md5"] == good
    checks = BodyChecks.from_headers([("Content-MD5", good)])
    checks.update(body + b"?")
    error = fails("BadDigest", 400, checks.finish)
    assert error.message == "The Content-MD5 you specified did not match what we received."
    for bad in ("not-base64", base64.b64encode(b"short").decode(), ""):
        fails("InvalidDigest", 400, functools.partial(BodyChecks.from_headers, [("Content-MD5", bad)]))


def test_checksum_declarations() -> None:
    crc = crc32_b64(b"x")
    fails(
        "InvalidRequest",
        400,
        lambda: BodyChecks.from_headers(
            [("x-amz-checksum-crc32", crc), ("x-amz-checksum-sha1", "C+7Hteo/D9vJXQ3UfzxbwnXaijM=")]
        ),
    )
    fails(
        "InvalidRequest",
        400,
        lambda: BodyChecks.from_headers([("x-amz-checksum-crc32", crc), ("x-amz-trailer", "x-amz-checksum-crc32")]),
    )
    fails("InvalidRequest", 400, lambda: BodyChecks.from_headers([("x-amz-checksum-md5", crc)]))
    fails("InvalidRequest", 400, lambda: BodyChecks.from_headers([("x-amz-checksum-xxhash64", "AAAAAAAAAAA=")]))
    fails("InvalidRequest", 400, lambda: BodyChecks.from_headers([("x-amz-checksum-crc32", "AAAA")]))  # 3 bytes
    fails("InvalidRequest", 400, lambda: BodyChecks.from_headers([("x-amz-trailer", "x-amz-meta-late")]))
    fails("InvalidRequest", 400, lambda: BodyChecks.from_headers([("x-amz-sdk-checksum-algorithm", "XXHASH3")]))
    fails(
        "InvalidRequest",
        400,
        lambda: BodyChecks.from_headers([("x-amz-checksum-crc32", crc), ("x-amz-sdk-checksum-algorithm", "SHA1")]),
    )
    # headers in the x-amz-checksum- namespace that are not values
    checks = BodyChecks.from_headers(
        [("x-amz-checksum-type", "FULL_OBJECT"), ("x-amz-sdk-checksum-algorithm", "crc32")]
    )
    checks.update(b"x")
    assert checks.finish() == {"crc32": crc}
    # extra algorithms are computed for storing
    checks = BodyChecks.from_headers([], extra=["crc64nvme"] if supported("crc64nvme") else ["sha1"])
    checks.update(b"x")
    assert len(checks.finish()) == 1


def test_known_checksum_values() -> None:
    """Check values from the CRC catalogue and the AWS examples."""
    vectors = {"crc32": "cbf43926", "sha1": "f7c3bc1d808e04732adf679965ccc34ca7ae3441"}
    if supported("crc32c"):
        vectors["crc32c"] = "e3069283"
    if supported("crc64nvme"):
        vectors["crc64nvme"] = "ae8b14860a799888"
    for algorithm, expected in vectors.items():
        checksum = new_checksum(algorithm)
        checksum.update(b"12345")
        checksum.update(memoryview(b"6789"))
        assert checksum.digest().hex() == expected, algorithm
    with pytest.raises(S3Error):
        new_checksum("adler32")


def test_decoder_for_needs_a_streaming_mode() -> None:
    sent = sigv4_tests.sign("PUT", "https://s3.example.test/media/a", {"Content-Encoding": "aws-chunked"}, b"abc")
    auth = sent.verify()
    assert auth.payload is PayloadMode.SIGNED
    fails("InvalidRequest", 400, lambda: decoder_for(auth, sent.headers))
