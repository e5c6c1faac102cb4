"""Verifying AWS Signature Version 4 the way S3 does, with no I/O.

Participants: an S3 client (boto3/botocore, Ruby aws-sdk-s3 for Mastodon,
@aws-sdk/client-s3 v3 for PeerTube, aws-sdk-php under Flysystem for
Pixelfed and Loops, anything holding a presigned URL) and this node acting as
the S3 endpoint. The client holds an access key id and its secret; the node
knows the secret through ``secret_for``.

Goals: accept exactly the requests those clients sign, unmodified, in both
forms S3 has: the ``Authorization`` header and the presigned URL (query
string auth); say who signed, how the body is declared (its SHA-256, or
``UNSIGNED-PAYLOAD``, or one of the ``STREAMING-*`` aws-chunked modes) and,
for streaming, hand the body layer what it needs to check each chunk's
signature (:class:`SigningContext`). Requests with no authentication at all
are recognised as anonymous; whether that is allowed is the caller's choice.

Non-goals: the body itself (``chunked.py`` decodes aws-chunked bodies,
``checksums.py`` checks digests; a declared SHA-256 is only compared once the
body has been read), authorisation (what a key may do), SigV2 and SigV4a
(``AWS4-ECDSA-P256-SHA256``; both refused as S3 refuses them in regions that
have only SigV4), POST policy uploads from HTML forms, session tokens
(``X-Amz-Security-Token`` is signed like any other header or parameter and
otherwise ignored: we issue no temporary credentials).

Requests arrive as their parts, as the HTTP layer has them: the method, the
raw path exactly as sent (still percent-encoded), the raw query string, the
header pairs in order, and the current time. Header values (and path and
query, if given as ``str``) are the wire bytes decoded as latin-1, as ASGI
servers and Starlette do; ``bytes`` are accepted too. The ``host`` header
must be there: for HTTP/2 the HTTP layer passes ``:authority`` as ``host``.

Header auth: ``Authorization: AWS4-HMAC-SHA256 Credential=AKID/20130524/
us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;
x-amz-date, Signature=<64 hex>`` (the separators may be ``,`` or ``, ``),
with ``x-amz-date`` (or ``Date``) and ``x-amz-content-sha256`` headers.
Query auth: ``X-Amz-Algorithm``, ``X-Amz-Credential``, ``X-Amz-Date``,
``X-Amz-Expires`` (at most 604800 s), ``X-Amz-SignedHeaders`` and
``X-Amz-Signature`` parameters; the payload is ``UNSIGNED-PAYLOAD`` unless an
``X-Amz-Content-Sha256`` parameter says otherwise (the JS and PHP presigners
hoist it into the query).

The string to sign is ``AWS4-HMAC-SHA256``, the timestamp, the scope
``date/region/s3/aws4_request`` and the SHA-256 of the canonical request:
the method, the URI, the query, the signed headers as ``name:value`` lines,
a blank line, the signed header list and the payload line. What S3 clients
rely on:

* The path is not encoded again, and not normalised (``//`` and ``..`` stay):
  every S3 SDK signs the path exactly as it sends it. If that fails we also
  try the path decoded and re-encoded once (RFC 3986 unreserved characters
  kept, ``/`` kept), for a client that sends ``!`` or ``(`` bare but signs
  them encoded; both forms name the same key.
* The query is decoded and re-encoded (``+`` read as a space, as PHP's and
  Go's parsers do), then sorted by encoded name and then value; a parameter
  with no value (``?uploads``) is ``uploads=``. Clients that sign the query
  as sent (Ruby, botocore's URL path) send it already in that form; as a
  fallback the raw pairs sorted as sent are tried too.
* Header names are lower-cased and taken in the order of ``SignedHeaders``;
  values lose leading and trailing whitespace, inner runs of whitespace become
  one space, and repeated headers are joined by ``,`` in the order received.
* ``host`` and every ``x-amz-*`` header present must be signed (S3 answers
  ``AccessDenied`` "There were headers present in the request which were not
  signed" otherwise), and so must ``Date`` when it stands in for
  ``x-amz-date``.

Why not botocore: re-signing an ``AWSRequest`` rebuilt from these parts with
``S3SigV4Auth`` does not reproduce what clients signed. It signs every header
it is given instead of the client's ``SignedHeaders`` list; it takes a URL's
query as sent, so a PHP client that sends ``prefix=a/b`` but signs
``prefix=a%2Fb`` fails; and it collapses whitespace with ``str.split()`` and
hashes the canonical request as UTF-8, which on latin-1 decoded header bytes
both splits UTF-8 characters whose second byte is 0xA0 (``à`` is ``c3 a0``)
and double-encodes every non-ASCII byte of an ``x-amz-meta-*`` value. What
is left, the HMAC chain, is five lines. So the canonical request is built
here, on bytes; the tests check it against botocore's and the AWS C
runtime's signers, and against AWS's published examples.

Responses: :func:`authenticate` returns an :class:`Authorization` or raises
:class:`S3Error`: 403 ``InvalidAccessKeyId`` (unknown key),
``SignatureDoesNotMatch``, ``RequestTimeTooSkewed`` (more than 15 minutes
off, header auth), ``AccessDenied`` ("Request has expired", "Request is not
valid yet", unsigned headers, no valid date); 400
``AuthorizationHeaderMalformed`` (header auth) or
``AuthorizationQueryParametersError`` (query auth) for a malformed
credential, scope, service, terminator or region (with the expected
``Region`` in ``details``, which botocore reads), ``InvalidRequest`` for a
missing ``x-amz-content-sha256`` or an unsupported algorithm,
``InvalidArgument`` for an unknown payload declaration or two auth mechanisms
at once.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import quote_from_bytes, unquote_to_bytes

from .errors import (
    AUTHORIZATION_HEADER_MALFORMED,
    AUTHORIZATION_QUERY_PARAMETERS_ERROR,
    INVALID_ACCESS_KEY_ID,
    INVALID_ARGUMENT,
    REQUEST_TIME_TOO_SKEWED,
    S3Error,
    access_denied,
    invalid_request,
    signature_does_not_match,
)

__all__ = [
    "ALGORITHM",
    "EMPTY_SHA256",
    "MAX_EXPIRES",
    "MAX_SKEW",
    "AuthMethod",
    "Authorization",
    "PayloadMode",
    "SigningContext",
    "authenticate",
    "signing_key",
]

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "s3"
TERMINATOR = "aws4_request"
MAX_SKEW = timedelta(minutes=15)
MAX_EXPIRES = 7 * 24 * 3600
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

Headers = Sequence[tuple[str | bytes, str | bytes]]
SecretLookup = Callable[[str], str | None]

_AMZ_DATE = re.compile(r"(\d{8})T(\d{6})Z")
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_WHITESPACE = re.compile(rb"[ \t\r\n\v\f]+")
_WS = b" \t\r\n\v\f"
_QUERY_AUTH_PARAMS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
)
_NOT_SIGNED = "There were headers present in the request which were not signed"
_NO_DATE = "AWS authentication requires a valid Date or x-amz-date header"
_MAX_AUTH_HEADER = 8192


class PayloadMode(enum.Enum):
    """How the body is declared in ``x-amz-content-sha256`` (or ``X-Amz-Content-Sha256`` for presigned URLs)."""

    SIGNED = "sha256"  # the hex SHA-256 of the body; see Authorization.payload_sha256
    UNSIGNED = "UNSIGNED-PAYLOAD"
    STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
    STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"

    @property
    def streaming(self) -> bool:
        """The body is aws-chunked and must go through ``chunked.AwsChunkedDecoder``."""
        return self.value.startswith("STREAMING-")

    @property
    def chunk_signatures(self) -> bool:
        """Every chunk carries a signature chained from the request's seed signature."""
        return self in (PayloadMode.STREAMING_SIGNED, PayloadMode.STREAMING_SIGNED_TRAILER)

    @property
    def trailer(self) -> bool:
        """Trailing headers (a checksum) follow the last chunk."""
        return self.value.endswith("-TRAILER")


class AuthMethod(enum.Enum):
    ANONYMOUS = "anonymous"
    HEADER = "header"
    QUERY = "query"


def signing_key(secret: str, date: str, region: str, service: str = SERVICE) -> bytes:
    """The SigV4 signing key for ``date`` (YYYYMMDD), ``region`` and ``service``."""
    key = _hmac(("AWS4" + secret).encode("utf-8"), date.encode("ascii"))
    key = _hmac(key, region.encode("utf-8"))
    key = _hmac(key, service.encode("utf-8"))
    return _hmac(key, TERMINATOR.encode("ascii"))


@dataclass(frozen=True)
class SigningContext:
    """What the body layer needs to verify aws-chunked chunk and trailer signatures."""

    signing_key: bytes
    amz_date: str  # the request timestamp, 20130524T000000Z
    scope: str  # 20130524/us-east-1/s3/aws4_request
    seed_signature: str  # the request's own signature, lower-case hex: the first "previous signature"

    def chunk_signature(self, previous: str, data_sha256: str) -> str:
        """The signature of a chunk whose data hashes to ``data_sha256`` (hex), following ``previous``."""
        string_to_sign = "\n".join(
            ("AWS4-HMAC-SHA256-PAYLOAD", self.amz_date, self.scope, previous, EMPTY_SHA256, data_sha256)
        )
        return hmac.new(self.signing_key, string_to_sign.encode("ascii"), hashlib.sha256).hexdigest()

    def trailer_signature(self, previous: str, canonical_trailers: bytes) -> str:
        """The signature of the trailing headers (``name:value\\n`` each), following the final chunk's."""
        string_to_sign = "\n".join(
            (
                "AWS4-HMAC-SHA256-TRAILER",
                self.amz_date,
                self.scope,
                previous,
                hashlib.sha256(canonical_trailers).hexdigest(),
            )
        )
        return hmac.new(self.signing_key, string_to_sign.encode("ascii"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Authorization:
    """Who signed a request and how its body is declared."""

    method: AuthMethod
    access_key_id: str | None  # None when anonymous
    payload: PayloadMode
    payload_sha256: str | None = None  # lower-case hex, when payload is SIGNED
    region: str | None = None  # the region in the credential scope
    request_time: datetime | None = None
    expires_at: datetime | None = None  # presigned URLs only
    signed_headers: tuple[str, ...] = ()
    signing: SigningContext | None = None  # None when anonymous

    @property
    def anonymous(self) -> bool:
        return self.method is AuthMethod.ANONYMOUS


def authenticate(
    method: str,
    raw_path: str | bytes,
    raw_query: str | bytes,
    headers: Headers,
    *,
    now: datetime,
    secret_for: SecretLookup,
    region: str | None = None,
) -> Authorization:
    """Check the SigV4 signature of a request given as its raw parts.

    ``now`` is the current time (timezone-aware). ``region``, if given, is the
    only region accepted in the credential scope; otherwise any is. Raises
    :class:`S3Error` for anything S3 would refuse (see the module docstring).
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    request = _Request.parse(method, raw_path, raw_query, headers)
    authorizations = request.header_values("authorization")
    query_auth = any(name in request.query_names for name in ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature"))
    if authorizations and query_auth:
        raise S3Error(
            INVALID_ARGUMENT,
            400,
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string "
            "parameter or the Authorization header should be specified",
        )
    if authorizations:
        return _header_auth(request, authorizations, now, secret_for, region)
    if query_auth:
        return _query_auth(request, now, secret_for, region)
    if "AWSAccessKeyId" in request.query_names and "Signature" in request.query_names:
        raise _unsupported_mechanism()
    return _anonymous(request)


# ---------------------------------------------------------------------------------------------
# The request as bytes


def _as_bytes(value: str | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def _text(value: bytes) -> str:
    return value.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class _Request:
    method: bytes
    raw_path: bytes
    raw_query: bytes
    headers: dict[str, list[bytes]]  # lower-case name -> values in order
    query: list[tuple[bytes, bytes, bytes, bytes]]  # raw name, raw value, decoded name, decoded value
    query_names: frozenset[str]

    @classmethod
    def parse(cls, method: str, raw_path: str | bytes, raw_query: str | bytes, headers: Headers) -> _Request:
        by_name: dict[str, list[bytes]] = {}
        for name, value in headers:
            by_name.setdefault(_as_bytes(name).decode("latin-1").strip().lower(), []).append(_as_bytes(value))
        query_bytes = _as_bytes(raw_query)
        if query_bytes.startswith(b"?"):
            query_bytes = query_bytes[1:]
        pairs = []
        for piece in query_bytes.split(b"&"):
            if not piece:
                continue
            name, _, value = piece.partition(b"=")
            pairs.append((name, value, _unquote(name), _unquote(value)))
        return cls(
            method=method.encode("latin-1"),
            raw_path=_as_bytes(raw_path) or b"/",
            raw_query=query_bytes,
            headers=by_name,
            query=pairs,
            query_names=frozenset(_text(decoded) for _, _, decoded, _ in pairs),
        )

    def header_values(self, name: str) -> list[bytes]:
        return self.headers.get(name, [])

    def header(self, name: str) -> str | None:
        values = self.headers.get(name)
        return None if not values else _text(_canonical_value(values))

    def param(self, name: str, error: Callable[[str], S3Error]) -> str | None:
        values = [decoded_value for _, _, decoded_name, decoded_value in self.query if decoded_name == name.encode()]
        if len(values) > 1:
            raise error(f"the {name} parameter is given more than once")
        return _text(values[0]) if values else None


def _unquote(value: bytes) -> bytes:
    return unquote_to_bytes(value.replace(b"+", b" "))


def _encode(value: bytes, safe: str = "") -> bytes:
    # quote_from_bytes keeps RFC 3986's unreserved characters (A-Z a-z 0-9 - . _ ~) and ``safe``,
    # and writes upper-case hex: SigV4's UriEncode.
    return quote_from_bytes(value, safe=safe).encode("ascii")


def _canonical_value(values: Iterable[bytes]) -> bytes:
    return b",".join(_WHITESPACE.sub(b" ", value.strip(_WS)) for value in values)


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


# ---------------------------------------------------------------------------------------------
# Canonical request


def _canonical_uris(request: _Request) -> list[bytes]:
    as_sent = request.raw_path
    reencoded = _encode(unquote_to_bytes(as_sent), safe="/")
    return [as_sent] if reencoded == as_sent else [as_sent, reencoded]


def _canonical_queries(request: _Request, exclude_signature: bool) -> list[bytes]:
    pairs = [p for p in request.query if not (exclude_signature and p[2] == b"X-Amz-Signature")]
    encoded = sorted((_encode(decoded_name), _encode(decoded_value)) for _, _, decoded_name, decoded_value in pairs)
    canonical = b"&".join(name + b"=" + value for name, value in encoded)
    as_sent = b"&".join(name + b"=" + value for name, value in sorted((n, v) for n, v, _, _ in pairs))
    return [canonical] if as_sent == canonical else [canonical, as_sent]


def _canonical_requests(request: _Request, signed: Sequence[str], payload: str, presigned: bool) -> list[bytes]:
    header_lines = b"".join(
        name.encode("latin-1") + b":" + _canonical_value(request.header_values(name.lower())) + b"\n" for name in signed
    )
    tail = b"\n" + header_lines + b"\n" + ";".join(signed).encode("latin-1") + b"\n" + payload.encode("ascii")
    return [
        request.method + b"\n" + uri + b"\n" + query + tail
        for uri in _canonical_uris(request)
        for query in _canonical_queries(request, exclude_signature=presigned)
    ]


def _string_to_sign(amz_date: str, scope: str, canonical_request: bytes) -> bytes:
    digest = hashlib.sha256(canonical_request).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}".encode("ascii")


def _check_signature(
    request: _Request,
    *,
    signed: Sequence[str],
    payload: str,
    presigned: bool,
    key: bytes,
    amz_date: str,
    scope: str,
    access_key_id: str,
    provided: str,
) -> None:
    provided_bytes = provided.lower().encode("ascii", errors="replace")
    candidates = _canonical_requests(request, signed, payload, presigned)
    for canonical in candidates:
        expected = hmac.new(key, _string_to_sign(amz_date, scope, canonical), hashlib.sha256).hexdigest()
        if hmac.compare_digest(expected.encode("ascii"), provided_bytes):
            return
    raise signature_does_not_match(
        details={
            "AWSAccessKeyId": access_key_id,
            "StringToSign": _string_to_sign(amz_date, scope, candidates[0]).decode("ascii"),
            "SignatureProvided": provided,
            "CanonicalRequest": candidates[0].decode("latin-1"),
        }
    )


# ---------------------------------------------------------------------------------------------
# Pieces shared by both mechanisms


def _unsupported_mechanism() -> S3Error:
    return invalid_request(
        "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256."
    )


def _malformed_header(message: str, details: dict[str, str] | None = None) -> S3Error:
    return S3Error(AUTHORIZATION_HEADER_MALFORMED, 400, f"The authorization header is malformed; {message}", details)


def _malformed_query(message: str, details: dict[str, str] | None = None) -> S3Error:
    return S3Error(AUTHORIZATION_QUERY_PARAMETERS_ERROR, 400, message, details)


@dataclass(frozen=True)
class _Scope:
    access_key_id: str
    date: str
    region: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{SERVICE}/{TERMINATOR}"


def _parse_credential(value: str, region: str | None, error: Callable[..., S3Error], query: bool) -> _Scope:
    prefix = "Error parsing the X-Amz-Credential parameter; " if query else ""
    parts = value.rsplit("/", 4)
    if len(parts) != 5 or not all(parts):
        raise error(
            f'{prefix}the Credential is mal-formed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
        )
    access_key_id, date, scope_region, service, terminator = parts
    if not re.fullmatch(r"\d{8}", date):
        raise error(
            f'{prefix}incorrect date format "{date}". This date in the credential must be in the format "yyyyMMdd".'
        )
    if service != SERVICE:
        raise error(f'{prefix}incorrect service "{service}". This endpoint belongs to "{SERVICE}".')
    if terminator != TERMINATOR:
        raise error(f'{prefix}incorrect terminal "{terminator}". This endpoint uses "{TERMINATOR}".')
    if region is not None and scope_region != region:
        raise error(f"{prefix}the region '{scope_region}' is wrong; expecting '{region}'", {"Region": region})
    return _Scope(access_key_id, date, scope_region)


def _parse_amz_date(value: str) -> datetime | None:
    match = _AMZ_DATE.fullmatch(value)
    if not match:
        return None
    try:
        return datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _signed_list(value: str, error: Callable[[str], S3Error]) -> tuple[str, ...]:
    names = tuple(value.split(";"))
    if not value or not all(names) or any(name != name.strip() for name in names):
        raise error("the SignedHeaders list is empty or malformed")
    return names


def _require_signed(request: _Request, signed: Sequence[str], also: Iterable[str] = ()) -> None:
    """``host``, every ``x-amz-*`` header present and ``also`` must be among the signed headers."""
    signed_lower = {name.lower() for name in signed}
    required = ["host", *also]
    required += sorted(name for name in request.headers if name.startswith("x-amz-"))
    missing = [name for name in dict.fromkeys(required) if name not in signed_lower]
    if missing:
        raise access_denied(_NOT_SIGNED, {"HeadersNotSigned": ", ".join(missing)})


def _payload(value: str, error: Callable[[str], S3Error]) -> tuple[PayloadMode, str | None]:
    if _SHA256_HEX.fullmatch(value):
        return PayloadMode.SIGNED, value.lower()
    for mode in PayloadMode:
        if mode is not PayloadMode.SIGNED and value == mode.value:
            return mode, None
    raise error(
        "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, "
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER or a valid sha256 value."
    )


def _invalid_argument(message: str) -> S3Error:
    return S3Error(INVALID_ARGUMENT, 400, message)


def _secret(secret_for: SecretLookup, access_key_id: str) -> str:
    secret = secret_for(access_key_id)
    if secret is None:
        raise S3Error(
            INVALID_ACCESS_KEY_ID,
            403,
            "The AWS Access Key Id you provided does not exist in our records.",
            {"AWSAccessKeyId": access_key_id},
        )
    return secret


# ---------------------------------------------------------------------------------------------
# Header auth


def _header_auth(
    request: _Request, values: list[bytes], now: datetime, secret_for: SecretLookup, region: str | None
) -> Authorization:
    if len(values) > 1:
        raise _malformed_header("more than one Authorization header was given.")
    value = values[0].decode("latin-1").strip()
    if len(value) > _MAX_AUTH_HEADER:
        raise _malformed_header("the Authorization header is too long.")
    algorithm, _, rest = value.partition(" ")
    if algorithm != ALGORITHM:
        if algorithm in ("AWS", "AWS4-ECDSA-P256-SHA256"):
            raise _unsupported_mechanism()
        raise _invalid_argument("Unsupported Authorization Type")
    fields: dict[str, str] = {}
    for component in rest.split(","):
        field, equals, field_value = component.strip().partition("=")
        if not field and not equals:
            continue
        if not equals or field in fields:
            raise _malformed_header(f"the component {component.strip()!r} is not of the form key=value, or repeated.")
        fields[field] = field_value.strip()
    for required in ("Credential", "SignedHeaders", "Signature"):
        if required not in fields:
            raise _malformed_header(f"Authorization header requires '{required}' parameter.")
    scope = _parse_credential(fields["Credential"], region, _malformed_header, query=False)
    signed = _signed_list(fields["SignedHeaders"], _malformed_header)

    amz_date = request.header("x-amz-date")
    also: list[str] = []
    if amz_date is not None:
        moment = _parse_amz_date(amz_date)
    else:
        date_header = request.header("date")
        if date_header is None:
            raise access_denied(_NO_DATE)
        try:
            moment = parsedate_to_datetime(date_header)
        except (TypeError, ValueError):
            moment = None
        if moment is not None and moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)  # "-0000", which botocore's formatdate() writes: UTC
        if moment is not None:
            moment = moment.astimezone(UTC)
            amz_date = moment.strftime("%Y%m%dT%H%M%SZ")
        also.append("date")
    if moment is None or amz_date is None:
        raise access_denied(_NO_DATE)
    if scope.date != amz_date[:8]:
        raise _malformed_header(
            f'Invalid credential date "{scope.date}". This date is not the same as X-Amz-Date: "{amz_date[:8]}".'
        )
    _require_signed(request, signed, also)

    content_sha256 = request.header("x-amz-content-sha256")
    if content_sha256 is None:
        raise invalid_request("Missing required header for this request: x-amz-content-sha256")
    mode, sha256 = _payload(content_sha256, _invalid_argument)

    if abs(now - moment) > MAX_SKEW:
        raise S3Error(
            REQUEST_TIME_TOO_SKEWED,
            403,
            "The difference between the request time and the current time is too large.",
            {
                "RequestTime": amz_date,
                "ServerTime": _iso(now),
                "MaxAllowedSkewMilliseconds": str(int(MAX_SKEW.total_seconds() * 1000)),
            },
        )
    secret = _secret(secret_for, scope.access_key_id)
    key = signing_key(secret, scope.date, scope.region)
    provided = fields["Signature"]
    _check_signature(
        request,
        signed=signed,
        payload=content_sha256,
        presigned=False,
        key=key,
        amz_date=amz_date,
        scope=scope.scope,
        access_key_id=scope.access_key_id,
        provided=provided,
    )
    return Authorization(
        method=AuthMethod.HEADER,
        access_key_id=scope.access_key_id,
        payload=mode,
        payload_sha256=sha256,
        region=scope.region,
        request_time=moment,
        signed_headers=signed,
        signing=SigningContext(key, amz_date, scope.scope, provided.lower()),
    )


# ---------------------------------------------------------------------------------------------
# Query auth (presigned URLs)


def _query_auth(request: _Request, now: datetime, secret_for: SecretLookup, region: str | None) -> Authorization:
    params = {name: request.param(name, _malformed_query) for name in (*_QUERY_AUTH_PARAMS, "X-Amz-Content-Sha256")}
    if params["X-Amz-Algorithm"] is not None and params["X-Amz-Algorithm"] != ALGORITHM:
        if params["X-Amz-Algorithm"] == "AWS4-ECDSA-P256-SHA256":
            raise _unsupported_mechanism()
        raise _malformed_query('X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"')
    if any(params[name] is None for name in _QUERY_AUTH_PARAMS):
        raise _malformed_query(
            "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, "
            "X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters."
        )
    credential = params["X-Amz-Credential"] or ""
    amz_date = params["X-Amz-Date"] or ""
    expires_text = params["X-Amz-Expires"] or ""
    provided = params["X-Amz-Signature"] or ""
    scope = _parse_credential(credential, region, _malformed_query, query=True)
    moment = _parse_amz_date(amz_date)
    if moment is None:
        raise _malformed_query("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    if scope.date != amz_date[:8]:
        raise _malformed_query(
            f'Invalid credential date "{scope.date}". This date is not the same as X-Amz-Date: "{amz_date[:8]}".'
        )
    if not expires_text.isascii() or not expires_text.isdigit():
        raise _malformed_query("X-Amz-Expires should be a number")
    expires = int(expires_text)
    if expires > MAX_EXPIRES:
        raise _malformed_query(f"X-Amz-Expires must be less than a week (in seconds) that is {MAX_EXPIRES}")
    signed = _signed_list(params["X-Amz-SignedHeaders"] or "", _malformed_query)
    _require_signed(request, signed)

    declared = params["X-Amz-Content-Sha256"]
    mode, sha256 = (PayloadMode.UNSIGNED, None) if declared is None else _payload(declared, _invalid_argument)
    if mode.chunk_signatures:
        raise invalid_request(f"{mode.value} needs the Authorization header; a presigned URL cannot use it")

    expires_at = moment + timedelta(seconds=expires)
    if moment - now > MAX_SKEW:
        raise access_denied("Request is not valid yet", {"X-Amz-Date": amz_date, "ServerTime": _iso(now)})
    if now > expires_at:
        raise access_denied(
            "Request has expired",
            {"X-Amz-Expires": expires_text, "Expires": _iso(expires_at), "ServerTime": _iso(now)},
        )
    secret = _secret(secret_for, scope.access_key_id)
    key = signing_key(secret, scope.date, scope.region)
    _check_signature(
        request,
        signed=signed,
        payload=declared or PayloadMode.UNSIGNED.value,
        presigned=True,
        key=key,
        amz_date=amz_date,
        scope=scope.scope,
        access_key_id=scope.access_key_id,
        provided=provided,
    )
    return Authorization(
        method=AuthMethod.QUERY,
        access_key_id=scope.access_key_id,
        payload=mode,
        payload_sha256=sha256,
        region=scope.region,
        request_time=moment,
        expires_at=expires_at,
        signed_headers=signed,
        signing=SigningContext(key, amz_date, scope.scope, provided.lower()),
    )


# ---------------------------------------------------------------------------------------------
# Anonymous


def _anonymous(request: _Request) -> Authorization:
    declared = request.header("x-amz-content-sha256")
    if declared is not None:
        mode, sha256 = _payload(declared, _invalid_argument)
        if mode.chunk_signatures:
            raise access_denied(f"{mode.value} needs a signed request")
        return Authorization(method=AuthMethod.ANONYMOUS, access_key_id=None, payload=mode, payload_sha256=sha256)
    # botocore with signature_version=UNSIGNED still sends aws-chunked bodies with a checksum trailer,
    # and then sets no x-amz-content-sha256 at all.
    encodings = [part.strip().lower() for part in (request.header("content-encoding") or "").split(",")]
    mode = PayloadMode.STREAMING_UNSIGNED_TRAILER if "aws-chunked" in encodings else PayloadMode.UNSIGNED
    return Authorization(method=AuthMethod.ANONYMOUS, access_key_id=None, payload=mode)
