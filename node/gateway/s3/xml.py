"""S3's XML bodies, with no I/O: every response document the gateway sends, and the request documents it reads.

Participants: S3 clients (boto3/botocore's RestXMLParser, @aws-sdk/client-s3, aws-sdk-s3 for Ruby, Flysystem
over the PHP SDK) reading what we write, and sending us DeleteObjects, CompleteMultipartUpload, PutObjectAcl and
CreateBucket bodies; the gateway, which passes body bytes in and sends the bytes we return.

Goals: documents the SDKs parse exactly as they parse Amazon's (namespace
``http://s3.amazonaws.com/doc/2006-03-01/`` on every result, none on ``<Error>``; timestamps as
``2009-10-12T17:50:30.000Z``; ETags quoted), and request parsing that cannot be turned against the node:
bodies over a cap are refused before parsing (the caller should stop reading at ``MAX_*_BODY + 1`` bytes), and
defusedxml refuses any DTD, so entity expansion (billion laughs) and external entities never run.

Non-goals: versioning, ACL grants other than the canned ``private`` and ``public-read`` (anything else is 501
``NotImplemented``), schema validation beyond what S3's error codes need.

Keys that XML 1.0 cannot carry (C0 controls other than tab and newline, U+FFFE, U+FFFF): S3 writes them as
numeric character references (``&#x1;``) even without ``encoding-type=url``, which is not well-formed XML 1.0,
so most parsers fail on such a listing; that is why boto3 always asks for ``encoding-type=url`` on listings and
why S3's documentation tells clients to. We do as S3 does (and write a carriage return as ``&#xd;`` too, since
XML parsers turn a literal one into a newline). In request bodies we accept those references as S3 does
(``<Key>a&#x1;b</Key>`` in DeleteObjects names the key ``"a\\x01b"``), and the raw control bytes botocore
puts in a DeleteObjects body for such a key too. With ``encoding-type=url`` the key-valued elements are
percent-encoded (UTF-8, ``/`` left as is, space as ``%20`` and ``+`` as ``%2B``, which both ``unquote`` and
botocore's ``unquote_plus`` reverse).

Requests (parsers) and their errors: DeleteObjects (``Delete``: 1 to 1000 ``Object``/``Key``, optional
``Quiet``; over 1000 keys is 400 ``MalformedXML``, as S3), CompleteMultipartUpload (1 to 10000 ``Part``s, each
``PartNumber`` 1..10000 and ``ETag``, optional checksums; not ascending is 400 ``InvalidPartOrder``),
AccessControlPolicy (400 ``MalformedACLError``), CreateBucketConfiguration (``LocationConstraint``). Any body
that is not well-formed, or lacks a required element, is 400 ``MalformedXML``; a body over its cap is 400
``MaxMessageLengthExceeded``.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import quote

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from .errors import S3Error
from .etag import quote_etag, unquote_etag
from .listing import ObjectPage, ObjectSummary, PartPage, UploadPage

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTHENTICATED_USERS = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"

MAX_DELETE_KEYS = 1000
MAX_DELETE_BODY = 2 * 1024 * 1024
MAX_COMPLETE_PARTS = 10000
MAX_COMPLETE_BODY = MAX_COMPLETE_PARTS * 1024 + 64 * 1024  # a part with every checksum is ~400 bytes
MAX_ACL_BODY = 64 * 1024
MAX_CREATE_BUCKET_BODY = 64 * 1024

CHECKSUM_ELEMENTS = ("ChecksumCRC32", "ChecksumCRC32C", "ChecksumCRC64NVME", "ChecksumSHA1", "ChecksumSHA256")
CannedAcl = Literal["private", "public-read"]
SUPPORTED_CANNED_ACLS: tuple[CannedAcl, ...] = ("private", "public-read")
# canned ACLs S3 knows: those we cannot represent are 501; for a single owner, bucket-owner-* is private
_UNSUPPORTED_CANNED = ("public-read-write", "authenticated-read", "aws-exec-read", "log-delivery-write")
_PRIVATE_ALIASES = ("bucket-owner-read", "bucket-owner-full-control")

_MALFORMED_XML = "The XML you provided was not well-formed or did not validate against our published schema"
# XML 1.0 forbids these characters outright; a literal carriage return would be read back as a newline
_NOT_XML_10 = re.compile("[\x00-\x08\x0b\x0c\x0d\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _error(code: str, status: int, message: str) -> S3Error:
    return S3Error(code, status, message)


def _malformed() -> S3Error:
    return _error("MalformedXML", 400, _MALFORMED_XML)


# -- writing ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Owner:
    id: str
    display_name: str = ""


def timestamp(epoch: float) -> str:
    """S3's XML time: ``2009-10-12T17:50:30.000Z`` (UTC, milliseconds, truncated)."""
    millis = math.floor(epoch * 1000)
    when = datetime.fromtimestamp(millis // 1000, UTC)
    return f"{when:%Y-%m-%dT%H:%M:%S}.{millis % 1000:03d}Z"


def _char_ref(m: re.Match[str]) -> str:
    return f"&#x{ord(m.group(0)):x};"


def serialize(root: ET.Element) -> bytes:
    """The document as S3 sends it: an XML declaration, then UTF-8; characters XML 1.0 cannot carry written
    as numeric references, as S3 writes them (see the module's docstring)."""
    text = ET.tostring(root, encoding="unicode", short_empty_elements=False)
    text = _NOT_XML_10.sub(_char_ref, text)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + text).encode("utf-8")


def _root(tag: str) -> ET.Element:
    return ET.Element(tag, {"xmlns": S3_NS})


def _add(parent: ET.Element, tag: str, text: str | int | None = None) -> ET.Element:
    el = ET.SubElement(parent, tag)
    if text is not None:
        el.text = str(text)
    return el


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _owner(parent: ET.Element, tag: str, owner_id: str, display_name: str) -> None:
    el = _add(parent, tag)
    _add(el, "ID", owner_id)
    if display_name:
        _add(el, "DisplayName", display_name)


def _encoder(encoding_type: str | None) -> Callable[[str], str]:
    if encoding_type == "url":
        return lambda value: quote(value, safe="/")
    return lambda value: value


def _checksums(parent: ET.Element, checksums: Mapping[str, str]) -> None:
    for name in CHECKSUM_ELEMENTS:
        if name in checksums:
            _add(parent, name, checksums[name])
    if "ChecksumType" in checksums:
        _add(parent, "ChecksumType", checksums["ChecksumType"])


def list_all_my_buckets(
    owner: Owner,
    buckets: Iterable[tuple[str, float]],
    *,
    continuation_token: str | None = None,
    prefix: str | None = None,
) -> bytes:
    """ListBuckets: ``buckets`` are (name, creation time) pairs, in name order."""
    root = _root("ListAllMyBucketsResult")
    _owner(root, "Owner", owner.id, owner.display_name)
    container = _add(root, "Buckets")
    for name, created in buckets:
        bucket = _add(container, "Bucket")
        _add(bucket, "Name", name)
        _add(bucket, "CreationDate", timestamp(created))
    if continuation_token is not None:
        _add(root, "ContinuationToken", continuation_token)
    if prefix is not None:
        _add(root, "Prefix", prefix)
    return serialize(root)


def _contents(parent: ET.Element, obj: ObjectSummary, enc: Callable[[str], str], with_owner: bool) -> None:
    el = _add(parent, "Contents")
    _add(el, "Key", enc(obj.key))
    _add(el, "LastModified", timestamp(obj.last_modified))
    _add(el, "ETag", quote_etag(obj.etag))
    _add(el, "Size", obj.size)
    if with_owner:
        _owner(el, "Owner", obj.owner_id, obj.owner_display_name)
    _add(el, "StorageClass", obj.storage_class)


def list_bucket_result(bucket: str, page: ObjectPage) -> bytes:
    """ListObjects (``page.version == 1``) or ListObjectsV2 (``2``) as S3 writes it."""
    enc = _encoder(page.encoding_type)
    root = _root("ListBucketResult")
    _add(root, "Name", bucket)
    _add(root, "Prefix", enc(page.prefix))
    if page.version == 1:
        _add(root, "Marker", enc(page.marker))
        if page.next_marker is not None:
            _add(root, "NextMarker", enc(page.next_marker))
    else:
        if page.start_after is not None:
            _add(root, "StartAfter", enc(page.start_after))
        if page.continuation_token is not None:
            _add(root, "ContinuationToken", page.continuation_token)
        if page.next_continuation_token is not None:
            _add(root, "NextContinuationToken", page.next_continuation_token)
        _add(root, "KeyCount", page.key_count)
    _add(root, "MaxKeys", page.max_keys)
    if page.delimiter:
        _add(root, "Delimiter", enc(page.delimiter))
    if page.encoding_type is not None:
        _add(root, "EncodingType", page.encoding_type)
    _add(root, "IsTruncated", _bool(page.is_truncated))
    with_owner = page.version == 1 or page.fetch_owner
    for obj in page.contents:
        _contents(root, obj, enc, with_owner)
    for cp in page.common_prefixes:
        _add(_add(root, "CommonPrefixes"), "Prefix", enc(cp))
    return serialize(root)


def location_constraint(region: str | None) -> bytes:
    """GetBucketLocation: empty for us-east-1 (and when no region is set), as S3 answers."""
    root = _root("LocationConstraint")
    if region and region != "us-east-1":
        root.text = region
    return serialize(root)


def initiate_multipart_upload_result(bucket: str, key: str, upload_id: str) -> bytes:
    root = _root("InitiateMultipartUploadResult")
    _add(root, "Bucket", bucket)
    _add(root, "Key", key)
    _add(root, "UploadId", upload_id)
    return serialize(root)


def complete_multipart_upload_result(
    location: str, bucket: str, key: str, etag: str, checksums: Mapping[str, str] | None = None
) -> bytes:
    """``location`` is the object's URL; ``checksums`` maps ``ChecksumCRC32``... (and ``ChecksumType``)."""
    root = _root("CompleteMultipartUploadResult")
    _add(root, "Location", location)
    _add(root, "Bucket", bucket)
    _add(root, "Key", key)
    _add(root, "ETag", quote_etag(etag))
    _checksums(root, checksums or {})
    return serialize(root)


def copy_object_result(etag: str, last_modified: float, checksums: Mapping[str, str] | None = None) -> bytes:
    root = _root("CopyObjectResult")
    _add(root, "LastModified", timestamp(last_modified))
    _add(root, "ETag", quote_etag(etag))
    _checksums(root, checksums or {})
    return serialize(root)


def copy_part_result(etag: str, last_modified: float, checksums: Mapping[str, str] | None = None) -> bytes:
    root = _root("CopyPartResult")
    _add(root, "LastModified", timestamp(last_modified))
    _add(root, "ETag", quote_etag(etag))
    _checksums(root, checksums or {})
    return serialize(root)


@dataclass(frozen=True)
class DeleteOutcome:
    """What became of one key of a DeleteObjects request: deleted (``code is None``) or an error."""

    key: str
    code: str | None = None
    message: str = ""
    version_id: str | None = None


def delete_result(outcomes: Iterable[DeleteOutcome], *, quiet: bool = False) -> bytes:
    """DeleteObjects: ``Deleted`` for each key deleted (left out when ``quiet``), ``Error`` for each failure.

    Deleting a key that does not exist is a success in S3 (report it as deleted)."""
    root = _root("DeleteResult")
    for outcome in outcomes:
        if outcome.code is None:
            if quiet:
                continue
            el = _add(root, "Deleted")
            _add(el, "Key", outcome.key)
            if outcome.version_id is not None:
                _add(el, "VersionId", outcome.version_id)
        else:
            el = _add(root, "Error")
            _add(el, "Key", outcome.key)
            if outcome.version_id is not None:
                _add(el, "VersionId", outcome.version_id)
            _add(el, "Code", outcome.code)
            _add(el, "Message", outcome.message)
    return serialize(root)


def list_multipart_uploads_result(bucket: str, page: UploadPage) -> bytes:
    enc = _encoder(page.encoding_type)
    root = _root("ListMultipartUploadsResult")
    _add(root, "Bucket", bucket)
    _add(root, "KeyMarker", enc(page.key_marker))
    _add(root, "UploadIdMarker", page.upload_id_marker)
    _add(root, "NextKeyMarker", enc(page.next_key_marker))
    _add(root, "NextUploadIdMarker", page.next_upload_id_marker)
    if page.delimiter:
        _add(root, "Delimiter", enc(page.delimiter))
    _add(root, "Prefix", enc(page.prefix))
    _add(root, "MaxUploads", page.max_uploads)
    _add(root, "IsTruncated", _bool(page.is_truncated))
    if page.encoding_type is not None:
        _add(root, "EncodingType", page.encoding_type)
    for upload in page.uploads:
        el = _add(root, "Upload")
        _add(el, "Key", enc(upload.key))
        _add(el, "UploadId", upload.upload_id)
        _owner(el, "Initiator", upload.owner_id, upload.owner_display_name)
        _owner(el, "Owner", upload.owner_id, upload.owner_display_name)
        _add(el, "StorageClass", upload.storage_class)
        _add(el, "Initiated", timestamp(upload.initiated))
    for cp in page.common_prefixes:
        _add(_add(root, "CommonPrefixes"), "Prefix", enc(cp))
    return serialize(root)


def list_parts_result(
    bucket: str, key: str, upload_id: str, page: PartPage, owner: Owner, storage_class: str = "STANDARD"
) -> bytes:
    root = _root("ListPartsResult")
    _add(root, "Bucket", bucket)
    _add(root, "Key", key)
    _add(root, "UploadId", upload_id)
    _owner(root, "Initiator", owner.id, owner.display_name)
    _owner(root, "Owner", owner.id, owner.display_name)
    _add(root, "StorageClass", storage_class)
    _add(root, "PartNumberMarker", page.part_number_marker)
    _add(root, "NextPartNumberMarker", page.next_part_number_marker)
    _add(root, "MaxParts", page.max_parts)
    _add(root, "IsTruncated", _bool(page.is_truncated))
    for part in page.parts:
        el = _add(root, "Part")
        _add(el, "PartNumber", part.part_number)
        _add(el, "LastModified", timestamp(part.last_modified))
        _add(el, "ETag", quote_etag(part.etag))
        _add(el, "Size", part.size)
        for name in CHECKSUM_ELEMENTS:
            if name in part.checksums:
                _add(el, name, part.checksums[name])
    return serialize(root)


def _grant(parent: ET.Element, permission: str, *, user: Owner | None = None, group: str | None = None) -> None:
    grant = _add(parent, "Grant")
    grantee = ET.SubElement(grant, "Grantee", {"xmlns:xsi": XSI_NS, "xsi:type": "CanonicalUser" if user else "Group"})
    if user is not None:
        _add(grantee, "ID", user.id)
        if user.display_name:
            _add(grantee, "DisplayName", user.display_name)
    else:
        _add(grantee, "URI", group)
    _add(grant, "Permission", permission)


def access_control_policy(owner: Owner, acl: CannedAcl) -> bytes:
    """GetObjectAcl / GetBucketAcl for a canned ACL: the owner has FULL_CONTROL; ``public-read`` adds READ for
    the AllUsers group."""
    if acl not in SUPPORTED_CANNED_ACLS:
        raise ValueError(f"not a canned ACL we keep: {acl!r}")
    root = _root("AccessControlPolicy")
    _owner(root, "Owner", owner.id, owner.display_name)
    grants = _add(root, "AccessControlList")
    _grant(grants, "FULL_CONTROL", user=owner)
    if acl == "public-read":
        _grant(grants, "READ", group=ALL_USERS)
    return serialize(root)


def error_document(
    code: str,
    message: str,
    *,
    resource: str | None = None,
    request_id: str | None = None,
    host_id: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> bytes:
    """S3's ``<Error>`` (no namespace): Code, Message, any ``extra`` elements S3 adds for that error (``Key``,
    ``BucketName``, ``Condition``, ...), Resource, RequestId, HostId."""
    root = ET.Element("Error")
    _add(root, "Code", code)
    _add(root, "Message", message)
    for name, value in (extra or {}).items():
        _add(root, name, value)
    if resource is not None:
        _add(root, "Resource", resource)
    if request_id is not None:
        _add(root, "RequestId", request_id)
    if host_id is not None:
        _add(root, "HostId", host_id)
    return serialize(root)


def error_body(
    error: S3Error, *, resource: str | None = None, request_id: str | None = None, host_id: str | None = None
) -> bytes:
    """``error_document`` for an ``S3Error``, its ``details`` as the extra elements."""
    return error_document(
        error.code, error.message, resource=resource, request_id=request_id, host_id=host_id, extra=error.details
    )


# -- reading ------------------------------------------------------------------------------------------------

# a character reference, or a raw C0 control byte (never part of a multi-byte UTF-8 sequence)
_CONTROL = re.compile(rb"&#(?:[xX]([0-9a-fA-F]{1,6})|([0-9]{1,7}));|([\x00-\x08\x0b\x0c\x0e-\x1f])")


def _not_xml_10(value: int) -> bool:
    return (value <= 0x1F and value not in (0x9, 0xA, 0xD)) or value in (0xFFFE, 0xFFFF)


class _Refs:
    """Code points XML 1.0 forbids, as character references (``&#x1;``, what S3 writes and its documentation
    tells clients to send) or raw (what botocore's serializer sends for such a key), swapped before parsing for
    a private-use marker the body does not contain, and restored in the text we read out."""

    def __init__(self, body: bytes) -> None:
        self.marker: str | None = None
        self.body = body
        if _CONTROL.search(body) is None:
            return
        for code in range(0xE000, 0xF900):
            marker = chr(code)
            if marker.encode("utf-8") not in body:
                break
        else:
            return
        found = False

        def swap(m: re.Match[bytes]) -> bytes:
            nonlocal found
            if m.group(3) is not None:
                value = m.group(3)[0]
            else:
                value = int(m.group(1), 16) if m.group(1) is not None else int(m.group(2))
            if not _not_xml_10(value):
                return m.group(0)
            found = True
            return f"{marker}{value:x}{marker}".encode()

        body = _CONTROL.sub(swap, body)
        if found:
            self.marker = marker
            self.body = body
            self._restore = re.compile(f"{marker}([0-9a-f]+){marker}")

    def text(self, value: str | None) -> str:
        if value is None:
            return ""
        if self.marker is None or self.marker not in value:
            return value
        return self._restore.sub(lambda m: chr(int(m.group(1), 16)), value)


def _parse(body: bytes, cap: int, error: Callable[[], S3Error]) -> tuple[ET.Element, _Refs]:
    if len(body) > cap:
        raise _error("MaxMessageLengthExceeded", 400, "Your request was too big.")
    refs = _Refs(body)
    try:
        root = SafeET.fromstring(refs.body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (ET.ParseError, DefusedXmlException, ValueError, UnicodeError):
        raise error() from None
    return root, refs


def _local(tag: str) -> str:
    """A tag without its namespace: clients send S3's namespace or none."""
    return tag.rsplit("}", 1)[-1] if tag.startswith("{") else tag


def _children(el: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in el if _local(child.tag) == name]


def _child(el: ET.Element, name: str) -> ET.Element | None:
    found = _children(el, name)
    return found[0] if found else None


@dataclass(frozen=True)
class DeleteRequest:
    objects: list[tuple[str, str | None]]  # (key, version id): version ids are read but we keep no versions
    quiet: bool = False


def parse_delete(body: bytes) -> DeleteRequest:
    """A DeleteObjects body: ``<Delete><Quiet>true</Quiet><Object><Key>k</Key></Object>...</Delete>``."""
    root, refs = _parse(body, MAX_DELETE_BODY, _malformed)
    if _local(root.tag) != "Delete":
        raise _malformed()
    quiet = False
    quiet_el = _child(root, "Quiet")
    if quiet_el is not None:
        text = (quiet_el.text or "").strip().lower()
        if text not in ("true", "false"):
            raise _malformed()
        quiet = text == "true"
    objects: list[tuple[str, str | None]] = []
    for obj in _children(root, "Object"):
        key_el = _child(obj, "Key")
        if key_el is None:
            raise _malformed()
        version_el = _child(obj, "VersionId")
        objects.append((refs.text(key_el.text), None if version_el is None else refs.text(version_el.text)))
        if len(objects) > MAX_DELETE_KEYS:
            raise _malformed()
    if not objects:
        raise _malformed()
    return DeleteRequest(objects, quiet)


@dataclass(frozen=True)
class CompletedPart:
    part_number: int
    etag: str  # unquoted, as ``etag.multipart_etag`` and a part's stored MD5 compare
    checksums: Mapping[str, str] = field(default_factory=dict)


def parse_complete_multipart_upload(body: bytes) -> list[CompletedPart]:
    """A CompleteMultipartUpload body: ``<CompleteMultipartUpload><Part><PartNumber>1</PartNumber>
    <ETag>"..."</ETag></Part>...``. Parts must ascend (400 ``InvalidPartOrder``), numbers are 1..10000
    (400 ``InvalidArgument``); whether each part exists and matches its ETag is the caller's (``InvalidPart``),
    as is ``EntityTooSmall`` (every part but the last at least 5 MiB)."""
    root, refs = _parse(body, MAX_COMPLETE_BODY, _malformed)
    if _local(root.tag) != "CompleteMultipartUpload":
        raise _malformed()
    parts: list[CompletedPart] = []
    for part in _children(root, "Part"):
        number_el = _child(part, "PartNumber")
        etag_el = _child(part, "ETag")
        if number_el is None or etag_el is None:
            raise _malformed()
        text = (number_el.text or "").strip()
        if not text.isascii() or not text.lstrip("-").isdigit():
            raise _malformed()
        number = int(text)
        if not 1 <= number <= MAX_COMPLETE_PARTS:
            raise _error("InvalidArgument", 400, "Part number must be an integer between 1 and 10000, inclusive")
        if parts and number <= parts[-1].part_number:
            raise _error(
                "InvalidPartOrder",
                400,
                "The list of parts was not in ascending order. "
                "The parts list must be specified in order by part number.",
            )
        checksums = {}
        for name in CHECKSUM_ELEMENTS:
            el = _child(part, name)
            if el is not None:
                checksums[name] = (el.text or "").strip()
        parts.append(CompletedPart(number, unquote_etag(refs.text(etag_el.text)), checksums))
        if len(parts) > MAX_COMPLETE_PARTS:
            raise _malformed()
    if not parts:
        raise _malformed()
    return parts


def _malformed_acl() -> S3Error:
    return _error("MalformedACLError", 400, _MALFORMED_XML)


def _not_implemented() -> S3Error:
    return _error("NotImplemented", 501, "A header you provided implies functionality that is not implemented")


def parse_access_control_policy(body: bytes, owner_id: str) -> CannedAcl:
    """A PutObjectAcl / PutBucketAcl body, as the canned ACL it amounts to: ``private`` (only the owner,
    FULL_CONTROL) or ``public-read`` (that, and READ for AllUsers). Any other set of grants is 501
    ``NotImplemented``; a body that is not an AccessControlPolicy is 400 ``MalformedACLError``."""
    root, refs = _parse(body, MAX_ACL_BODY, _malformed_acl)
    if _local(root.tag) != "AccessControlPolicy":
        raise _malformed_acl()
    owner_el = _child(root, "Owner")
    if owner_el is not None:
        id_el = _child(owner_el, "ID")
        if id_el is not None and refs.text(id_el.text).strip() != owner_id:
            raise _not_implemented()  # handing the object to someone else
    acl_el = _child(root, "AccessControlList")
    if acl_el is None:
        raise _malformed_acl()
    grants: set[tuple[str, str]] = set()
    for grant in _children(acl_el, "Grant"):
        grantee = _child(grant, "Grantee")
        permission_el = _child(grant, "Permission")
        if grantee is None or permission_el is None:
            raise _malformed_acl()
        permission = (permission_el.text or "").strip()
        if permission not in ("FULL_CONTROL", "READ", "WRITE", "READ_ACP", "WRITE_ACP"):
            raise _malformed_acl()
        kind = grantee.get(f"{{{XSI_NS}}}type")
        id_el, uri_el = _child(grantee, "ID"), _child(grantee, "URI")
        if kind is None:
            kind = "CanonicalUser" if id_el is not None else "Group" if uri_el is not None else None
        if kind == "CanonicalUser" and id_el is not None:
            who = "owner" if refs.text(id_el.text).strip() == owner_id else "other"
        elif kind == "Group" and uri_el is not None:
            uri = refs.text(uri_el.text).strip()
            who = "all" if uri == ALL_USERS else "group"
        elif kind in ("CanonicalUser", "Group", "AmazonCustomerByEmail"):
            if kind == "AmazonCustomerByEmail" and _child(grantee, "EmailAddress") is not None:
                who = "other"
            else:
                raise _malformed_acl()
        else:
            raise _malformed_acl()
        grants.add((who, permission))
    if grants == {("owner", "FULL_CONTROL")}:
        return "private"
    if grants == {("owner", "FULL_CONTROL"), ("all", "READ")}:
        return "public-read"
    raise _not_implemented()


def parse_canned_acl(value: str | None, default: CannedAcl = "private") -> CannedAcl:
    """An ``x-amz-acl`` header: ``private`` / ``public-read``; ``bucket-owner-read`` and
    ``bucket-owner-full-control`` are ``private`` (the writer owns the bucket); canned ACLs we cannot keep are
    501 ``NotImplemented``; anything else 400 ``InvalidArgument``."""
    if value is None:
        return default
    text = value.strip()
    if text == "private" or text in _PRIVATE_ALIASES:
        return "private"
    if text == "public-read":
        return "public-read"
    if text in _UNSUPPORTED_CANNED:
        raise _not_implemented()
    raise _error("InvalidArgument", 400, f"Argument x-amz-acl must be a canned ACL, not {text!r}")


def parse_create_bucket_configuration(body: bytes) -> str | None:
    """A CreateBucket body's ``LocationConstraint`` (``None`` for no body or no constraint)."""
    if not body.strip():
        return None
    root, refs = _parse(body, MAX_CREATE_BUCKET_BODY, _malformed)
    if _local(root.tag) != "CreateBucketConfiguration":
        raise _malformed()
    el = _child(root, "LocationConstraint")
    if el is None:
        return None
    return refs.text(el.text).strip() or None
