"""SigV4 verification against what real clients sign.

The requests come from botocore: its clients, driven offline (a ``before-send``
hook captures the fully signed request and answers with a canned response,
so no endpoint is contacted), and its signers applied to hand-made
``AWSRequest``s. Each client test runs with both of botocore's SigV4
implementations: the pure-Python ``S3SigV4Auth`` and ``CrtS3SigV4Auth``, the
AWS Common Runtime's C signer (aws-c-auth, which the AWS CRT-based SDKs share)
that botocore uses whenever awscrt is installed. AWS's published examples
pin the canonical forms independently of both.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import boto3
import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.config import Config
from botocore.credentials import Credentials

from node.gateway.s3.errors import S3Error
from node.gateway.s3.sigv4 import AuthMethod, Authorization, PayloadMode, authenticate

ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
KEYS = {ACCESS_KEY: SECRET, "AKIDOTHER": "other-secret"}


def secret_for(access_key_id: str) -> str | None:
    return KEYS.get(access_key_id)


# ---------------------------------------------------------------------------------------------
# Capturing what a real client sends


@dataclass
class Sent:
    """One request as the HTTP layer would see it."""

    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def query(self) -> str:
        return urlsplit(self.url).query

    def header(self, name: str) -> str | None:
        found = [value for key, value in self.headers if key.lower() == name.lower()]
        return found[0] if found else None

    def with_header(self, name: str, value: str | None) -> Sent:
        headers = [(k, v) for k, v in self.headers if k.lower() != name.lower()]
        if value is not None:
            headers.append((name, value))
        return Sent(self.method, self.url, headers, self.body, self.at)

    def with_url(self, url: str) -> Sent:
        return Sent(self.method, url, self.headers, self.body, self.at)

    def verify(
        self,
        *,
        now: datetime | None = None,
        region: str | None = None,
        path: str | None = None,
        query: str | None = None,
    ) -> Authorization:
        return authenticate(
            self.method,
            self.path if path is None else path,
            self.query if query is None else query,
            self.headers,
            now=now or self.at,
            secret_for=secret_for,
            region=region,
        )


def _latin1(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def host_header(url: str) -> str:
    """The Host header http.client (under urllib3) sends for ``url``: the port only when it is not the default."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    default = 443 if parts.scheme == "https" else 80
    return host if parts.port in (None, default) else f"{host}:{parts.port}"


def sent_from(request: Any) -> Sent:
    """A botocore prepared or AWS request as it goes on the wire."""
    body = request.body
    if hasattr(body, "read"):
        body = body.read()
    if isinstance(body, str):
        body = body.encode("utf-8")
    headers = [(_latin1(name), _latin1(value)) for name, value in request.headers.items()]
    if not any(name.lower() == "host" for name, _ in headers):
        headers.insert(0, ("Host", host_header(request.url)))
    return Sent(request.method, request.url, headers, body or b"")


class _EmptyBody:
    def stream(self, **_: Any) -> Iterator[bytes]:
        return iter([b""])

    def read(self, *_: Any) -> bytes:
        return b""


SIGNERS = ["python", "crt"]


@pytest.fixture(params=SIGNERS)
def signer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Make botocore clients sign with one SigV4 implementation or the other."""
    if request.param == "crt":
        pytest.importorskip("awscrt")
        from botocore.crt.auth import CrtS3SigV4Auth, CrtS3SigV4QueryAuth

        header_cls: type = CrtS3SigV4Auth
        query_cls: type = CrtS3SigV4QueryAuth
    else:
        header_cls, query_cls = botocore.auth.S3SigV4Auth, botocore.auth.S3SigV4QueryAuth
    monkeypatch.setitem(botocore.auth.AUTH_TYPE_MAPS, "s3v4", header_cls)
    monkeypatch.setitem(botocore.auth.AUTH_TYPE_MAPS, "s3v4-query", query_cls)
    return str(request.param)


@dataclass
class Client:
    s3: Any
    sent: list[Sent]

    def last(self) -> Sent:
        return self.sent[-1]


def make_client(
    endpoint: str = "https://s3.example.test",
    *,
    access_key: str = ACCESS_KEY,
    secret: str = SECRET,
    region: str = "us-east-1",
    **config: Any,
) -> Client:
    sent: list[Sent] = []

    def before_send(request: Any, **_: Any) -> AWSResponse:
        sent.append(sent_from(request))
        return AWSResponse(request.url, 200, {"ETag": '"0"', "Content-Length": "0"}, _EmptyBody())

    session = boto3.session.Session(aws_access_key_id=access_key, aws_secret_access_key=secret, region_name=region)
    options: dict[str, Any] = {"s3": {"addressing_style": "path"}, "retries": {"max_attempts": 1}}
    for key, value in config.items():
        if key == "s3":
            options["s3"].update(value)
        else:
            options[key] = value
    s3 = session.client("s3", endpoint_url=endpoint, config=Config(**options))
    s3.meta.events.register("before-send", before_send)
    return Client(s3, sent)


def sign(
    method: str,
    url: str,
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    body: bytes = b"",
    *,
    service: str = "s3",
    region: str = "us-east-1",
    secret: str = SECRET,
) -> Sent:
    """Sign an ``AWSRequest`` with botocore's own S3SigV4Auth."""
    request = AWSRequest(method=method, url=url, data=body)
    for name, value in headers.items() if isinstance(headers, dict) else headers or []:
        request.headers[name] = value  # HTTPHeaders appends: repeated names stay repeated
    botocore.auth.S3SigV4Auth(Credentials(ACCESS_KEY, secret), service, region).add_auth(request)
    return sent_from(request)


def fails(code: str, status: int, call: Callable[[], object]) -> S3Error:
    with pytest.raises(S3Error) as caught:
        call()
    assert (caught.value.code, caught.value.status) == (code, status), caught.value
    return caught.value


# ---------------------------------------------------------------------------------------------
# AWS's published examples (Signature Calculations for the Authorization Header; Query String Auth)

DOC_NOW = datetime(2013, 5, 24, 0, 0, 30, tzinfo=UTC)
DOC_CREDENTIAL = f"{ACCESS_KEY}/20130524/us-east-1/s3/aws4_request"


def test_aws_example_get_object_with_range() -> None:
    headers = [
        ("Host", "examplebucket.s3.amazonaws.com"),
        ("Range", "bytes=0-9"),
        ("x-amz-content-sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ("x-amz-date", "20130524T000000Z"),
        (
            "Authorization",
            f"AWS4-HMAC-SHA256 Credential={DOC_CREDENTIAL},SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        ),
    ]
    auth = authenticate("GET", "/test.txt", "", headers, now=DOC_NOW, secret_for=secret_for)
    assert auth.method is AuthMethod.HEADER
    assert auth.access_key_id == ACCESS_KEY
    assert auth.payload is PayloadMode.SIGNED
    assert auth.payload_sha256 == hashlib.sha256(b"").hexdigest()
    assert auth.signing is not None
    assert auth.signing.scope == "20130524/us-east-1/s3/aws4_request"
    assert auth.signing.seed_signature == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"

    tampered = [(k, "bytes=0-10" if k == "Range" else v) for k, v in headers]
    fails(
        "SignatureDoesNotMatch",
        403,
        lambda: authenticate("GET", "/test.txt", "", tampered, now=DOC_NOW, secret_for=secret_for),
    )


def test_aws_example_presigned_get() -> None:
    query = (
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    )
    headers = [("Host", "examplebucket.s3.amazonaws.com")]
    auth = authenticate("GET", "/test.txt", query, headers, now=DOC_NOW, secret_for=secret_for)
    assert auth.method is AuthMethod.QUERY
    assert auth.payload is PayloadMode.UNSIGNED
    assert auth.expires_at == datetime(2013, 5, 25, tzinfo=UTC)
    later = datetime(2013, 5, 25, 0, 0, 1, tzinfo=UTC)
    error = fails(
        "AccessDenied", 403, lambda: authenticate("GET", "/test.txt", query, headers, now=later, secret_for=secret_for)
    )
    assert error.message == "Request has expired"
    assert error.details["Expires"] == "2013-05-25T00:00:00Z"


def test_aws_example_streaming_seed_signature() -> None:
    headers = [
        ("Host", "s3.amazonaws.com"),
        ("x-amz-date", "20130524T000000Z"),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
        ("Content-Encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", "66560"),
        ("Content-Length", "66824"),
        (
            "Authorization",
            f"AWS4-HMAC-SHA256 Credential={DOC_CREDENTIAL},SignedHeaders=content-encoding;content-length;host;"
            "x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,"
            "Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
        ),
    ]
    auth = authenticate("PUT", "/examplebucket/chunkObject.txt", "", headers, now=DOC_NOW, secret_for=secret_for)
    assert auth.payload is PayloadMode.STREAMING_SIGNED
    assert auth.payload.streaming and auth.payload.chunk_signatures and not auth.payload.trailer
    assert auth.signing is not None
    assert auth.signing.amz_date == "20130524T000000Z"
    assert auth.signing.seed_signature == "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"


# ---------------------------------------------------------------------------------------------
# Real clients, both signers

KEY = "photos/été 2024/a b+c (1)~!*'$&=,;:@.jpg"


def test_put_object_signed_payload_over_http(signer: str) -> None:
    client = make_client("http://127.0.0.1:9000")
    body = b"media bytes " * 500
    client.s3.put_object(Bucket="media", Key=KEY, Body=body, ContentType="image/jpeg", Metadata={"origin": "x  y"})
    sent = client.last()
    assert sent.header("host") == "127.0.0.1:9000"
    auth = sent.verify(region="us-east-1")
    assert auth.access_key_id == ACCESS_KEY
    assert auth.payload is PayloadMode.SIGNED
    assert auth.payload_sha256 == hashlib.sha256(body).hexdigest() == sent.header("x-amz-content-sha256")
    assert "x-amz-meta-origin" in auth.signed_headers
    assert auth.request_time is not None and abs(auth.request_time - sent.at) < timedelta(seconds=5)


def test_put_object_unsigned_trailer_over_https(signer: str) -> None:
    client = make_client()
    client.s3.put_object(Bucket="media", Key=KEY, Body=b"x" * 3000)
    auth = client.last().verify()
    assert auth.payload is PayloadMode.STREAMING_UNSIGNED_TRAILER
    assert auth.payload.trailer and not auth.payload.chunk_signatures


def test_unsigned_payload(signer: str) -> None:
    client = make_client(request_checksum_calculation="when_required", s3={"payload_signing_enabled": False})
    client.s3.put_object(Bucket="media", Key="a.jpg", Body=b"abc", ContentMD5="kAFQmDzST7DWlj99KOF/cg==")
    sent = client.last()
    assert sent.header("x-amz-content-sha256") == "UNSIGNED-PAYLOAD"
    auth = sent.verify()
    assert auth.payload is PayloadMode.UNSIGNED
    assert auth.payload_sha256 is None


def test_listing_query_is_canonicalised(signer: str) -> None:
    client = make_client()
    client.s3.list_objects_v2(Bucket="media", Prefix="a/b c/é+", Delimiter="/", StartAfter="~x*")
    sent = client.last()
    assert sent.verify().access_key_id == ACCESS_KEY
    # the same query as other clients send it: PHP leaves '/' bare, some use lower-case hex or '+' for spaces,
    # and the order of parameters on the wire is free
    query = sent.query
    variants = [
        query.replace("%2F", "/"),
        query.replace("%2F", "%2f").replace("%C3%A9", "%c3%a9"),
        query.replace("%20", "+"),
        "&".join(reversed(query.split("&"))),
    ]
    for variant in variants:
        assert variant != query
        assert sent.verify(query=variant).access_key_id == ACCESS_KEY, variant
    fails("SignatureDoesNotMatch", 403, lambda: sent.verify(query=query.replace("delimiter=%2F", "delimiter=%2C")))
    fails("SignatureDoesNotMatch", 403, lambda: sent.verify(query=query + "&max-keys=1"))


def test_empty_query_values_are_kept(signer: str) -> None:
    client = make_client()
    client.s3.create_multipart_upload(Bucket="media", Key="video.mp4")
    sent = client.last()
    assert sent.query == "uploads"
    assert sent.verify().access_key_id == ACCESS_KEY
    fails("SignatureDoesNotMatch", 403, lambda: sent.verify(query="uploads&acl"))


def test_path_as_sent_and_reencoded(signer: str) -> None:
    client = make_client()
    client.s3.get_object(Bucket="media", Key=KEY)
    sent = client.last()
    assert "%C3%A9t%C3%A9" in sent.path
    assert sent.verify().access_key_id == ACCESS_KEY
    # S3 does not double-encode: the path signed is the path sent
    fails("SignatureDoesNotMatch", 403, lambda: sent.verify(path=sent.path.replace("%", "%25")))
    # a client that sends sub-delimiters bare but signed them encoded still verifies
    bare = sent.path.replace("%21", "!").replace("%28", "(").replace("%29", ")").replace("%2A", "*")
    assert bare != sent.path
    assert sent.verify(path=bare).access_key_id == ACCESS_KEY
    fails("SignatureDoesNotMatch", 403, lambda: sent.verify(path=sent.path.replace("photos", "Photos")))
    fails("SignatureDoesNotMatch", 403, lambda: sent.verify(path="/media/other.jpg"))


def test_double_slashes_and_dots_are_not_normalised(signer: str) -> None:
    client = make_client()
    client.s3.get_object(Bucket="media", Key="/a//b/../c")
    sent = client.last()
    assert sent.path == "/media//a//b/../c"
    assert sent.verify().access_key_id == ACCESS_KEY


def test_presigned_get_with_response_content_disposition(signer: str) -> None:
    client = make_client(signature_version="s3v4")
    url = client.s3.generate_presigned_url(
        "get_object",
        Params={"Bucket": "media", "Key": KEY, "ResponseContentDisposition": 'attachment; filename="été 1.jpg"'},
        ExpiresIn=600,
    )
    signed_at = datetime.now(UTC)
    sent = Sent("GET", url, [("Host", host_header(url)), ("User-Agent", "curl/8")], b"", signed_at)
    assert "response-content-disposition=" in sent.query
    auth = sent.verify()
    assert auth.method is AuthMethod.QUERY
    assert auth.payload is PayloadMode.UNSIGNED
    assert auth.expires_at is not None and auth.request_time is not None
    assert auth.expires_at - auth.request_time == timedelta(seconds=600)

    assert sent.verify(now=signed_at + timedelta(seconds=590)).access_key_id == ACCESS_KEY
    error = fails("AccessDenied", 403, lambda: sent.verify(now=signed_at + timedelta(seconds=602)))
    assert error.message == "Request has expired"
    assert error.details["X-Amz-Expires"] == "600"

    swapped = sent.query.replace("attachment", "inline")
    fails("SignatureDoesNotMatch", 403, lambda: sent.verify(query=swapped))
    fails(
        "SignatureDoesNotMatch",
        403,
        lambda: sent.verify(query=sent.query.replace("X-Amz-Expires=600", "X-Amz-Expires=6000")),
    )
    fails("SignatureDoesNotMatch", 403, lambda: sent.verify(path="/media/other.jpg"))
    fails("SignatureDoesNotMatch", 403, lambda: sent.with_header("Host", "evil.example").verify())
    # a header the URL did not sign, but of a kind S3 insists on signing
    error = fails("AccessDenied", 403, lambda: sent.with_header("x-amz-acl", "public-read").verify())
    assert error.details == {"HeadersNotSigned": "x-amz-acl"}


def test_presigned_put(signer: str) -> None:
    client = make_client(signature_version="s3v4")
    url = client.s3.generate_presigned_url("put_object", Params={"Bucket": "media", "Key": "up.jpg"}, ExpiresIn=60)
    sent = Sent("PUT", url, [("Host", host_header(url)), ("Content-Length", "3")], b"abc")
    auth = sent.verify()
    assert auth.method is AuthMethod.QUERY
    assert auth.payload is PayloadMode.UNSIGNED
    fails("SignatureDoesNotMatch", 403, lambda: Sent("DELETE", url, sent.headers, b"").verify())


def test_presigned_url_in_the_future() -> None:
    client = make_client(signature_version="s3v4")
    url = client.s3.generate_presigned_url("get_object", Params={"Bucket": "media", "Key": "a"}, ExpiresIn=60)
    sent = Sent("GET", url, [("Host", host_header(url))], b"")
    assert sent.verify(now=sent.at - timedelta(minutes=14)).access_key_id == ACCESS_KEY
    error = fails("AccessDenied", 403, lambda: sent.verify(now=sent.at - timedelta(minutes=16)))
    assert error.message == "Request is not valid yet"


def test_presigned_expiry_longer_than_a_week() -> None:
    client = make_client(signature_version="s3v4")
    url = client.s3.generate_presigned_url("get_object", Params={"Bucket": "media", "Key": "a"}, ExpiresIn=604801)
    sent = Sent("GET", url, [("Host", host_header(url))], b"")
    error = fails("AuthorizationQueryParametersError", 400, sent.verify)
    assert "604800" in error.message
    week = client.s3.generate_presigned_url("get_object", Params={"Bucket": "media", "Key": "a"}, ExpiresIn=604800)
    assert Sent("GET", week, [("Host", host_header(week))], b"").verify().access_key_id == ACCESS_KEY


def test_presigned_sigv2_is_refused() -> None:
    client = make_client()  # boto3 still presigns with SigV2 unless told otherwise
    url = client.s3.generate_presigned_url("get_object", Params={"Bucket": "media", "Key": "a"})
    assert "AWSAccessKeyId=" in url
    sent = Sent("GET", url, [("Host", host_header(url))], b"")
    error = fails("InvalidRequest", 400, sent.verify)
    assert "AWS4-HMAC-SHA256" in error.message


def test_presigned_missing_parameters() -> None:
    client = make_client(signature_version="s3v4")
    url = client.s3.generate_presigned_url("get_object", Params={"Bucket": "media", "Key": "a"})
    sent = Sent("GET", url, [("Host", host_header(url))], b"")
    for name in ("X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature"):
        query = "&".join(p for p in sent.query.split("&") if not p.startswith(name + "="))
        fails("AuthorizationQueryParametersError", 400, functools.partial(sent.verify, query=query))


# ---------------------------------------------------------------------------------------------
# Refusals of header-signed requests


def test_wrong_secret_and_unknown_key(signer: str) -> None:
    wrong = make_client(secret="not-the-secret")
    wrong.s3.head_object(Bucket="media", Key="a.jpg")
    error = fails("SignatureDoesNotMatch", 403, wrong.last().verify)
    assert error.details["AWSAccessKeyId"] == ACCESS_KEY
    assert error.details["CanonicalRequest"].startswith("HEAD\n/media/a.jpg\n")
    assert error.details["StringToSign"].startswith("AWS4-HMAC-SHA256\n")

    unknown = make_client(access_key="AKIDUNKNOWN")
    unknown.s3.head_object(Bucket="media", Key="a.jpg")
    error = fails("InvalidAccessKeyId", 403, unknown.last().verify)
    assert error.details == {"AWSAccessKeyId": "AKIDUNKNOWN"}

    other = make_client(access_key="AKIDOTHER", secret="other-secret")
    other.s3.head_object(Bucket="media", Key="a.jpg")
    assert other.last().verify().access_key_id == "AKIDOTHER"


def test_clock_skew(signer: str) -> None:
    client = make_client()
    client.s3.get_object(Bucket="media", Key="a.jpg")
    sent = client.last()
    for offset in (timedelta(minutes=14), -timedelta(minutes=14)):
        assert sent.verify(now=sent.at + offset).access_key_id == ACCESS_KEY
    for offset in (timedelta(minutes=16), -timedelta(minutes=16)):
        error = fails("RequestTimeTooSkewed", 403, functools.partial(sent.verify, now=sent.at + offset))
        assert error.details["MaxAllowedSkewMilliseconds"] == "900000"
        assert error.details["RequestTime"] == sent.header("x-amz-date")


def test_tampered_headers(signer: str) -> None:
    client = make_client("http://127.0.0.1:9000")
    client.s3.put_object(Bucket="media", Key="a.jpg", Body=b"abc", Metadata={"owner": "alice"}, ContentType="image/png")
    sent = client.last()
    assert sent.verify().access_key_id == ACCESS_KEY
    fails("SignatureDoesNotMatch", 403, lambda: sent.with_header("x-amz-meta-owner", "mallory").verify())
    fails("SignatureDoesNotMatch", 403, lambda: sent.with_header("Host", "127.0.0.1:9001").verify())
    fails("SignatureDoesNotMatch", 403, lambda: sent.with_header("x-amz-content-sha256", "0" * 64).verify())
    # an x-amz-* header nobody signed is refused as S3 refuses it, before any signature is checked
    error = fails("AccessDenied", 403, lambda: sent.with_header("X-Amz-Acl", "public-read").verify())
    assert error.details == {"HeadersNotSigned": "x-amz-acl"}
    # headers outside the signature may change (proxies add them)
    assert sent.with_header("X-Forwarded-For", "10.0.0.1").verify().access_key_id == ACCESS_KEY
    # whitespace around and inside values is not significant
    padded = sent.with_header("x-amz-meta-owner", "  alice ")
    assert padded.verify().access_key_id == ACCESS_KEY
    # a signed header that is missing
    fails("SignatureDoesNotMatch", 403, lambda: sent.with_header("Content-Type", None).verify())
    error = fails("InvalidRequest", 400, lambda: sent.with_header("x-amz-content-sha256", None).verify())
    assert "x-amz-content-sha256" in error.message
    fails("SignatureDoesNotMatch", 403, lambda: Sent("POST", sent.url, sent.headers, b"").verify())


def test_bad_payload_declaration() -> None:
    sent = sign("PUT", "https://s3.example.test/media/a", {"X-Amz-Content-SHA256": "x"}, b"abc")
    sent = sent.with_header("x-amz-content-sha256", "SHA256-OF-SOMETHING")
    fails("InvalidArgument", 400, sent.verify)


def test_whitespace_and_repeated_headers() -> None:
    headers = [("X-Amz-Meta-Note", "  two   words\there  "), ("X-Amz-Meta-Tag", "a"), ("X-Amz-Meta-Tag", "b")]
    sent = sign("GET", "https://s3.example.test/media/a", headers)
    assert [v for k, v in sent.headers if k == "X-Amz-Meta-Tag"] == ["a", "b"]
    assert sent.verify().access_key_id == ACCESS_KEY
    collapsed = sent.with_header("X-Amz-Meta-Note", "two words here")
    assert collapsed.verify().access_key_id == ACCESS_KEY
    # repeated headers are joined in the order received
    swapped = [(k, {"a": "b", "b": "a"}[v] if k == "X-Amz-Meta-Tag" else v) for k, v in sent.headers]
    fails("SignatureDoesNotMatch", 403, lambda: Sent(sent.method, sent.url, swapped, b"").verify())


def test_date_header_instead_of_x_amz_date() -> None:
    now = datetime.now(UTC)
    date = now.strftime("%a, %d %b %Y %H:%M:%S GMT")
    sent = sign("GET", "https://s3.example.test/media/a", {"Date": date})
    assert sent.header("x-amz-date") is None
    auth = sent.verify()
    assert auth.signing is not None and auth.signing.amz_date == now.strftime("%Y%m%dT%H%M%SZ")
    signed_date = parsedate_to_datetime(sent.header("Date") or "").replace(tzinfo=UTC)
    shifted = signed_date + timedelta(seconds=1 if signed_date.second == 0 else -1)  # the same day
    changed = sent.with_header("Date", shifted.strftime("%a, %d %b %Y %H:%M:%S GMT"))
    fails("SignatureDoesNotMatch", 403, changed.verify)
    error = fails("AccessDenied", 403, lambda: sent.with_header("Date", None).verify())
    assert "Date" in error.message


def test_date_must_be_signed() -> None:
    sent = sign("GET", "https://s3.example.test/media/a", {"Date": "Tue, 01 Dec 2026 00:00:00 GMT"})
    authorization = sent.header("Authorization") or ""
    unsigned = sent.with_header("Authorization", authorization.replace("SignedHeaders=date;", "SignedHeaders="))
    error = fails("AccessDenied", 403, lambda: unsigned.verify(now=datetime(2026, 12, 1, tzinfo=UTC)))
    assert error.details == {"HeadersNotSigned": "date"}


def test_host_must_be_signed() -> None:
    sent = sign("GET", "https://s3.example.test/media/a")
    authorization = sent.header("Authorization") or ""
    assert "SignedHeaders=host;" in authorization
    unsigned = sent.with_header("Authorization", authorization.replace("SignedHeaders=host;", "SignedHeaders="))
    error = fails("AccessDenied", 403, unsigned.verify)
    assert error.details == {"HeadersNotSigned": "host"}


def test_region() -> None:
    sent = sign("GET", "https://s3.example.test/media/a", region="eu-west-3")
    assert sent.verify().region == "eu-west-3"
    assert sent.verify(region="eu-west-3").region == "eu-west-3"
    error = fails("AuthorizationHeaderMalformed", 400, lambda: sent.verify(region="us-east-1"))
    assert error.details == {"Region": "us-east-1"}
    assert "'eu-west-3' is wrong; expecting 'us-east-1'" in error.message

    client = make_client(signature_version="s3v4", region="eu-west-3")
    url = client.s3.generate_presigned_url("get_object", Params={"Bucket": "media", "Key": "a"})
    presigned = Sent("GET", url, [("Host", host_header(url))], b"")
    error = fails("AuthorizationQueryParametersError", 400, lambda: presigned.verify(region="us-east-1"))
    assert error.details == {"Region": "us-east-1"}


def test_service_must_be_s3() -> None:
    sent = sign("GET", "https://s3.example.test/media/a", service="ec2")
    error = fails("AuthorizationHeaderMalformed", 400, sent.verify)
    assert 'incorrect service "ec2"' in error.message


@pytest.mark.parametrize(
    ("change", "code", "status"),
    [
        (lambda a: a.replace("AWS4-HMAC-SHA256 ", "AWS4-HMAC-SHA512 "), "InvalidArgument", 400),
        (lambda a: "AWS AKID:c2lnbmF0dXJl", "InvalidRequest", 400),
        (lambda a: a.replace("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256"), "InvalidRequest", 400),
        (lambda a: a.replace("Credential=", "Credentials="), "AuthorizationHeaderMalformed", 400),
        (lambda a: a.replace("/aws4_request", ""), "AuthorizationHeaderMalformed", 400),
        (lambda a: a.replace("/aws4_request", "/aws5_request"), "AuthorizationHeaderMalformed", 400),
        (lambda a: a.replace("/s3/", "/s3x/"), "AuthorizationHeaderMalformed", 400),
        (lambda a: a.split(", Signature=")[0], "AuthorizationHeaderMalformed", 400),
        (lambda a: a.replace("SignedHeaders=", "SignedHeaders=;"), "AuthorizationHeaderMalformed", 400),
        (lambda a: a + ", Signature=00", "AuthorizationHeaderMalformed", 400),
        (lambda a: a.replace(", Signature=", ", Signature=0"), "SignatureDoesNotMatch", 403),
        (lambda a: a.replace(", ", ","), None, 200),  # the AWS examples use bare commas
    ],
)
def test_malformed_authorization(change: Callable[[str], str], code: str | None, status: int) -> None:
    sent = sign("GET", "https://s3.example.test/media/a")
    changed = sent.with_header("Authorization", change(sent.header("Authorization") or ""))
    if code is None:
        assert changed.verify().access_key_id == ACCESS_KEY
    else:
        fails(code, status, changed.verify)


def test_credential_date_must_match_x_amz_date() -> None:
    sent = sign("GET", "https://s3.example.test/media/a")
    authorization = sent.header("Authorization") or ""
    day = (sent.header("x-amz-date") or "")[:8]
    other = (datetime.strptime(day, "%Y%m%d") - timedelta(days=1)).strftime("%Y%m%d")
    changed = sent.with_header("Authorization", authorization.replace(f"/{day}/", f"/{other}/"))
    error = fails("AuthorizationHeaderMalformed", 400, changed.verify)
    assert "not the same as X-Amz-Date" in error.message
    fails("AccessDenied", 403, lambda: sent.with_header("x-amz-date", "2026-12-01T00:00:00Z").verify())


def test_anonymous() -> None:
    auth = authenticate(
        "GET", "/media/a.jpg", "", [("Host", "s3.example.test")], now=datetime.now(UTC), secret_for=secret_for
    )
    assert auth.anonymous and auth.method is AuthMethod.ANONYMOUS
    assert auth.access_key_id is None and auth.signing is None
    assert auth.payload is PayloadMode.UNSIGNED

    # boto3 with signature_version=UNSIGNED still sends aws-chunked bodies with a checksum trailer
    client = make_client(signature_version=botocore.UNSIGNED)
    client.s3.put_object(Bucket="media", Key="a.jpg", Body=b"abc")
    sent = client.last()
    assert sent.header("Authorization") is None
    auth = sent.verify()
    assert auth.anonymous and auth.payload is PayloadMode.STREAMING_UNSIGNED_TRAILER

    declared = [("Host", "h"), ("x-amz-content-sha256", hashlib.sha256(b"abc").hexdigest())]
    auth = authenticate("PUT", "/m/a", "", declared, now=datetime.now(UTC), secret_for=secret_for)
    assert auth.payload is PayloadMode.SIGNED and auth.payload_sha256 == hashlib.sha256(b"abc").hexdigest()
    chained = [("Host", "h"), ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")]
    fails(
        "AccessDenied",
        403,
        lambda: authenticate("PUT", "/m/a", "", chained, now=datetime.now(UTC), secret_for=secret_for),
    )


def test_only_one_mechanism() -> None:
    client = make_client(signature_version="s3v4")
    url = client.s3.generate_presigned_url("get_object", Params={"Bucket": "media", "Key": "a"})
    header_signed = sign("GET", "https://s3.example.test/media/a")
    both = Sent("GET", url, header_signed.headers, b"")
    fails("InvalidArgument", 400, both.verify)


def test_bytes_inputs() -> None:
    sent = sign("GET", "https://s3.example.test/media/a%20b?list-type=2&prefix=x%2Fy")
    auth = authenticate(
        "GET",
        sent.path.encode(),
        sent.query.encode(),
        [(k.encode(), v.encode("latin-1")) for k, v in sent.headers],
        now=sent.at,
        secret_for=secret_for,
    )
    assert auth.access_key_id == ACCESS_KEY


# ---------------------------------------------------------------------------------------------
# The AWS C runtime's signer, driven directly (what the CRT-based SDKs send)


def crt_sign(
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    *,
    payload: str,
    now: datetime | None = None,
    region: str = "us-east-1",
) -> Sent:
    """Sign with aws-c-auth as the CRT-based S3 clients do; header values go on the wire as UTF-8."""
    awscrt_auth = pytest.importorskip("awscrt.auth")
    awscrt_http = pytest.importorskip("awscrt.http")
    now = now or datetime.now(UTC)
    request = awscrt_http.HttpRequest(method, path, awscrt_http.HttpHeaders(headers))
    config = awscrt_auth.AwsSigningConfig(
        algorithm=awscrt_auth.AwsSigningAlgorithm.V4,
        signature_type=awscrt_auth.AwsSignatureType.HTTP_REQUEST_HEADERS,
        credentials_provider=awscrt_auth.AwsCredentialsProvider.new_static(ACCESS_KEY, SECRET),
        region=region,
        service="s3",
        date=now,
        use_double_uri_encode=False,
        should_normalize_uri_path=False,
        signed_body_value=payload,
        signed_body_header_type=awscrt_auth.AwsSignedBodyHeaderType.X_AMZ_CONTENT_SHA_256,
    )
    awscrt_auth.aws_sign_request(request, config).result()
    wire = [(name, value.encode("utf-8").decode("latin-1")) for name, value in request.headers]
    return Sent(method, "https://s3.example.test" + request.path, wire, b"", now)


def test_utf8_metadata() -> None:
    sent = crt_sign(
        "PUT",
        "/media/caf%C3%A9.jpg",
        [("Host", "s3.example.test"), ("x-amz-meta-title", "à  la café\u3000ok")],
        payload="UNSIGNED-PAYLOAD",
    )
    assert sent.verify().access_key_id == ACCESS_KEY
    fails("SignatureDoesNotMatch", 403, lambda: sent.with_header("x-amz-meta-title", "a la cafe ok").verify())


def test_why_not_botocore_canonicalisation() -> None:
    """What the sigv4 module docstring says botocore would get wrong with the raw parts."""
    signer = botocore.auth.S3SigV4Auth(Credentials(ACCESS_KEY, SECRET), "s3", "us-east-1")
    # header bytes arrive latin-1 decoded; "à" is c3 a0 and str.split() takes the a0 for a space
    wire_value = "à la".encode().decode("latin-1")
    assert signer._header_value(wire_value) != wire_value
    # the query as sent is taken as it is: a '/' left bare is not signed as %2F
    request = AWSRequest(method="GET", url="https://s3.example.test/media?prefix=a/b")
    assert signer.canonical_query_string(request) == "prefix=a/b"
