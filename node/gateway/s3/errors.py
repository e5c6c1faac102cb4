"""The errors the S3 protocol modules raise, as S3 names them.

Every refusal in ``node.gateway.s3`` is an :class:`S3Error`: ``code`` is the
string S3 puts in ``<Error><Code>``, ``status`` the HTTP status to answer
with, ``message`` one line for ``<Message>``, and ``details`` the extra
elements S3 adds for some codes (``Region`` for a wrong region, which botocore
reads to retry in the right one; ``HeadersNotSigned``; ``RequestTime`` and
``ServerTime`` for a skewed clock; ``StringToSign`` and ``CanonicalRequest``
for a signature mismatch, so a client author can see what we computed).
Rendering the XML is the HTTP layer's job; the order of ``details`` is the
order S3 uses.

The constructors below fix status and wording per code, so every module says
the same thing for the same failure.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "ACCESS_DENIED",
    "AUTHORIZATION_HEADER_MALFORMED",
    "AUTHORIZATION_QUERY_PARAMETERS_ERROR",
    "BAD_DIGEST",
    "INCOMPLETE_BODY",
    "INVALID_ACCESS_KEY_ID",
    "INVALID_ARGUMENT",
    "INVALID_DIGEST",
    "INVALID_REQUEST",
    "MALFORMED_TRAILER",
    "REQUEST_TIME_TOO_SKEWED",
    "SIGNATURE_DOES_NOT_MATCH",
    "X_AMZ_CONTENT_SHA256_MISMATCH",
    "S3Error",
    "access_denied",
    "bad_digest",
    "incomplete_body",
    "invalid_request",
    "signature_does_not_match",
]

ACCESS_DENIED = "AccessDenied"
AUTHORIZATION_HEADER_MALFORMED = "AuthorizationHeaderMalformed"
AUTHORIZATION_QUERY_PARAMETERS_ERROR = "AuthorizationQueryParametersError"
BAD_DIGEST = "BadDigest"
INCOMPLETE_BODY = "IncompleteBody"
INVALID_ACCESS_KEY_ID = "InvalidAccessKeyId"
INVALID_ARGUMENT = "InvalidArgument"
INVALID_DIGEST = "InvalidDigest"
INVALID_REQUEST = "InvalidRequest"
MALFORMED_TRAILER = "MalformedTrailerError"
REQUEST_TIME_TOO_SKEWED = "RequestTimeTooSkewed"
SIGNATURE_DOES_NOT_MATCH = "SignatureDoesNotMatch"
X_AMZ_CONTENT_SHA256_MISMATCH = "XAmzContentSHA256Mismatch"


class S3Error(Exception):
    """A request S3 would refuse: answer ``status`` with an ``<Error>`` naming ``code``."""

    def __init__(self, code: str, status: int, message: str, details: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.status = status
        self.message = message
        self.details: dict[str, str] = dict(details or {})

    def __repr__(self) -> str:
        return f"S3Error({self.code!r}, {self.status}, {self.message!r})"


def access_denied(message: str = "Access Denied", details: Mapping[str, str] | None = None) -> S3Error:
    return S3Error(ACCESS_DENIED, 403, message, details)


def signature_does_not_match(
    message: str = (
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method."
    ),
    details: Mapping[str, str] | None = None,
) -> S3Error:
    return S3Error(SIGNATURE_DOES_NOT_MATCH, 403, message, details)


def invalid_request(message: str) -> S3Error:
    return S3Error(INVALID_REQUEST, 400, message)


def incomplete_body(
    message: str = "You did not provide the number of bytes specified by the Content-Length HTTP header",
) -> S3Error:
    return S3Error(INCOMPLETE_BODY, 400, message)


def bad_digest(message: str) -> S3Error:
    return S3Error(BAD_DIGEST, 400, message)
