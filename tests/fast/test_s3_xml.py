"""S3 XML bodies (node/gateway/s3/xml.py), read back by xml.etree and by botocore's own RestXMLParser with the
S3 service model, exactly as boto3 reads Amazon's; request bodies as botocore's serializer writes them; XML
bombs refused. Also the small pure pieces beside them: addressing and names (names.py), ETags and conditional
requests (etag.py)."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from typing import Any

import botocore.session
import pytest
from botocore import handlers
from botocore.parsers import RestXMLParser
from botocore.serialize import create_serializer
from hypothesis import given, settings
from hypothesis import strategies as st

from node.gateway.s3 import xml as X
from node.gateway.s3.errors import S3Error
from node.gateway.s3.etag import (
    Conditions,
    etag_matches,
    evaluate,
    md5_etag,
    multipart_etag,
    parse_etag_list,
    parse_http_date,
    quote_etag,
    unquote_etag,
)
from node.gateway.s3.listing import (
    ObjectSummary,
    PartSummary,
    UploadSummary,
    list_multipart_uploads,
    list_objects_v1,
    list_objects_v2,
    list_parts,
    parts_from_sorted,
    source_from_sorted,
    uploads_from_sorted,
)
from node.gateway.s3.names import (
    bucket_name_problem,
    parse_address,
    percent_decode,
    validate_bucket_name,
    validate_key,
)

MODEL = botocore.session.get_session().get_service_model("s3")
NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
T0 = 1_700_000_000.25
OWNER = X.Owner("75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a", "medianode")


def boto(operation: str, body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """``body`` as boto3 parses it for ``operation`` (errors when ``status`` >= 300)."""
    op = MODEL.operation_model(operation)
    response = {"status_code": status, "headers": headers or {}, "body": body}
    parsed: dict[str, Any] = RestXMLParser().parse(response, op.output_shape if status < 300 else None)
    parsed.pop("ResponseMetadata", None)
    return parsed


def etree(body: bytes) -> ET.Element:
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n')
    return ET.fromstring(body)


def obj(key: str, size: int = 3) -> ObjectSummary:
    return ObjectSummary(key, size, "acbd18db4cc2f85cedef654fccc4a4d8", T0, OWNER.id, OWNER.display_name)


# -- responses -------------------------------------------------------------------------------------------------


def test_list_all_my_buckets() -> None:
    body = X.list_all_my_buckets(OWNER, [("alpha", T0), ("beta.example", 0.0)])
    root = etree(body)
    assert root.tag == NS + "ListAllMyBucketsResult"
    assert [b.findtext(NS + "Name") for b in root.iter(NS + "Bucket")] == ["alpha", "beta.example"]
    parsed = boto("ListBuckets", body)
    assert parsed["Owner"] == {"ID": OWNER.id, "DisplayName": "medianode"}
    assert [b["Name"] for b in parsed["Buckets"]] == ["alpha", "beta.example"]
    assert parsed["Buckets"][0]["CreationDate"].timestamp() == T0
    assert root.find(f"{NS}Buckets/{NS}Bucket/{NS}CreationDate").text == "2023-11-14T22:13:20.250Z"  # type: ignore[union-attr]


def test_list_objects_v1() -> None:
    source = source_from_sorted([(k, obj(k)) for k in ["a/1", "a/2", "b", "c"]])
    page = list_objects_v1(source, delimiter="/", max_keys=2)
    body = X.list_bucket_result("media", page)
    root = etree(body)
    assert root.tag == NS + "ListBucketResult"
    assert [el.tag.removeprefix(NS) for el in root][:7] == [
        "Name", "Prefix", "Marker", "NextMarker", "MaxKeys", "Delimiter", "IsTruncated",
    ]  # fmt: skip
    parsed = boto("ListObjects", body)
    assert parsed["Name"] == "media" and parsed["Marker"] == "" and parsed["Prefix"] == ""
    assert (parsed["IsTruncated"], parsed["NextMarker"], parsed["MaxKeys"], parsed["Delimiter"]) == (True, "b", 2, "/")
    assert parsed["CommonPrefixes"] == [{"Prefix": "a/"}]
    (content,) = parsed["Contents"]
    assert content["Key"] == "b" and content["Size"] == 3 and content["StorageClass"] == "STANDARD"
    assert content["ETag"] == '"acbd18db4cc2f85cedef654fccc4a4d8"'
    assert content["Owner"] == {"ID": OWNER.id, "DisplayName": "medianode"}  # v1 always has the owner
    assert content["LastModified"].timestamp() == T0


def test_list_objects_v2_owner_only_when_fetched() -> None:
    source = source_from_sorted([(k, obj(k)) for k in ["x", "y", "z"]])
    page = list_objects_v2(source, max_keys=2, start_after="")
    parsed = boto("ListObjectsV2", X.list_bucket_result("media", page))
    assert "Owner" not in parsed["Contents"][0]
    assert (parsed["KeyCount"], parsed["IsTruncated"], parsed["StartAfter"]) == (2, True, "")
    assert "Delimiter" not in parsed and "EncodingType" not in parsed
    nxt = list_objects_v2(source, continuation_token=parsed["NextContinuationToken"], fetch_owner=True)
    parsed = boto("ListObjectsV2", X.list_bucket_result("media", nxt))
    assert [c["Key"] for c in parsed["Contents"]] == ["z"] and parsed["Contents"][0]["Owner"]["ID"] == OWNER.id
    assert parsed["ContinuationToken"] == page.next_continuation_token and "NextContinuationToken" not in parsed


def test_encoding_type_url_as_s3_tests_expect() -> None:
    keys = ["foo+1/bar", "foo/bar/xyzzy", "quux ab/thud", "asdf+b"]
    source = source_from_sorted([(k, obj(k)) for k in sorted(keys)])
    page = list_objects_v2(source, delimiter="/", encoding_type="url")
    parsed = boto("ListObjectsV2", X.list_bucket_result("b", page))
    assert parsed["EncodingType"] == "url"
    assert [c["Key"] for c in parsed["Contents"]] == ["asdf%2Bb"]
    assert [p["Prefix"] for p in parsed["CommonPrefixes"]] == ["foo%2B1/", "foo/", "quux%20ab/"]


def boto_listing(operation: str, body: bytes) -> dict[str, Any]:
    """As boto3 returns a listing it asked ``encoding-type=url`` for on its own: decoded again."""
    parsed = boto(operation, body)
    decode = handlers.decode_list_object_v2 if operation == "ListObjectsV2" else handlers.decode_list_object
    decode(parsed, context={"encoding_type_auto_set": True})
    return parsed


key_text = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=30)


@settings(max_examples=150, deadline=None)
@given(st.lists(key_text, min_size=1, max_size=8, unique=True), st.sampled_from(["", "/", "é", " "]), key_text)
def test_any_key_round_trips_through_boto3_with_encoding_type_url(keys: list[str], delimiter: str, marker: str) -> None:
    source = source_from_sorted([(k, obj(k)) for k in sorted(keys)])
    for version in (1, 2):
        if version == 1:
            page = list_objects_v1(source, delimiter=delimiter, marker=marker, encoding_type="url")
        else:
            page = list_objects_v2(source, delimiter=delimiter, start_after=marker, encoding_type="url")
        body = X.list_bucket_result("b", page)
        assert b"&#" not in body  # nothing for a strict XML 1.0 parser to trip on
        parsed = boto_listing("ListObjects" if version == 1 else "ListObjectsV2", body)
        assert [c["Key"] for c in parsed.get("Contents", [])] == [o.key for o in page.contents]
        assert [p["Prefix"] for p in parsed.get("CommonPrefixes", [])] == page.common_prefixes
        assert parsed.get("Delimiter", "") == delimiter
        assert parsed["Marker" if version == 1 else "StartAfter"] == marker


def test_keys_xml_cannot_carry_are_written_as_s3_writes_them() -> None:
    source = source_from_sorted([(k, obj(k)) for k in ["a\rb", "tab\there", "x\x01y"]])
    body = X.list_bucket_result("b", list_objects_v1(source))
    assert b"<Key>x&#x1;y</Key>" in body and b"<Key>a&#xd;b</Key>" in body and b"tab\there" in body
    with pytest.raises(ET.ParseError):  # as with S3 itself: why clients ask for encoding-type=url
        ET.fromstring(body)
    ok = X.list_bucket_result("b", list_objects_v1(source_from_sorted([(k, obj(k)) for k in ["a\rb", "c\nd"]])))
    assert [c["Key"] for c in boto("ListObjects", ok)["Contents"]] == ["a\rb", "c\nd"]  # not turned into \n
    assert X.serialize(ET.Element("K")) == b'<?xml version="1.0" encoding="UTF-8"?>\n<K></K>'


def test_location_constraint() -> None:
    class Response:
        raw = True

        def __init__(self, content: bytes) -> None:
            self.content = content

    for region, expected in ((None, None), ("us-east-1", None), ("eu-west-3", "eu-west-3")):
        body = X.location_constraint(region)
        assert etree(body).tag == NS + "LocationConstraint"
        parsed: dict[str, Any] = {}
        handlers.parse_get_bucket_location(parsed, Response(body))
        assert parsed["LocationConstraint"] == expected


def test_multipart_results() -> None:
    body = X.initiate_multipart_upload_result("b", "videos/a b.mp4", "VXBsb2FkSWQ")
    assert boto("CreateMultipartUpload", body) == {"Bucket": "b", "Key": "videos/a b.mp4", "UploadId": "VXBsb2FkSWQ"}
    etag = multipart_etag(["acbd18db4cc2f85cedef654fccc4a4d8", '"37b51d194a7513e45b56f6524f2d51f2"'])
    body = X.complete_multipart_upload_result("http://s3.example/b/k", "b", "k", etag, {"ChecksumCRC32": "AAAAAA=="})
    parsed = boto("CompleteMultipartUpload", body)
    assert parsed["Location"] == "http://s3.example/b/k" and parsed["ETag"] == f'"{etag}"'
    assert parsed["ChecksumCRC32"] == "AAAAAA==" and (parsed["Bucket"], parsed["Key"]) == ("b", "k")


def test_list_multipart_uploads_result() -> None:
    ups = [UploadSummary("a/x", "u1", T0, OWNER.id, OWNER.display_name), UploadSummary("b", "u2", T0, OWNER.id)]
    page = list_multipart_uploads(uploads_from_sorted(ups), delimiter="/", max_uploads=1, encoding_type="url")
    parsed = boto("ListMultipartUploads", X.list_multipart_uploads_result("bk", page))
    assert (parsed["Bucket"], parsed["IsTruncated"], parsed["MaxUploads"]) == ("bk", True, 1)
    assert parsed["NextKeyMarker"] == "a/"
    assert parsed["CommonPrefixes"] == [{"Prefix": "a/"}] and parsed["EncodingType"] == "url"
    page = list_multipart_uploads(uploads_from_sorted(ups))
    parsed = boto("ListMultipartUploads", X.list_multipart_uploads_result("bk", page))
    first = parsed["Uploads"][0]
    assert (first["Key"], first["UploadId"], first["StorageClass"]) == ("a/x", "u1", "STANDARD")
    assert first["Initiator"] == {"ID": OWNER.id, "DisplayName": "medianode"} and first["Initiated"].timestamp() == T0
    assert parsed["Uploads"][1]["Owner"] == {"ID": OWNER.id}


def test_list_parts_result() -> None:
    parts = [PartSummary(n, f"{n:032x}", 5 << 20, T0, {"ChecksumSHA256": "x" * 44}) for n in (1, 2, 4)]
    page = list_parts(parts_from_sorted(parts), part_number_marker=1, max_parts=1)
    parsed = boto("ListParts", X.list_parts_result("b", "k", "u", page, OWNER))
    assert (parsed["PartNumberMarker"], parsed["NextPartNumberMarker"], parsed["MaxParts"]) == (1, 2, 1)
    assert parsed["IsTruncated"] is True and parsed["Owner"]["ID"] == OWNER.id and parsed["StorageClass"] == "STANDARD"
    (part,) = parsed["Parts"]
    assert (part["PartNumber"], part["ETag"], part["Size"]) == (2, f'"{2:032x}"', 5 << 20)
    assert part["ChecksumSHA256"] == "x" * 44 and part["LastModified"].timestamp() == T0


def test_copy_results() -> None:
    parsed = boto("CopyObject", X.copy_object_result("9b2cf535f27731c974343645a3985328", T0))
    assert parsed["CopyObjectResult"]["ETag"] == '"9b2cf535f27731c974343645a3985328"'
    assert parsed["CopyObjectResult"]["LastModified"].timestamp() == T0
    parsed = boto("UploadPartCopy", X.copy_part_result('"abc"', T0))
    assert parsed["CopyPartResult"]["ETag"] == '"abc"'


def test_delete_result_quiet_and_verbose() -> None:
    outcomes = [
        X.DeleteOutcome("a"),
        X.DeleteOutcome("b&<c>", "AccessDenied", "Access Denied"),
        X.DeleteOutcome("d\r\x7f"),
    ]
    parsed = boto("DeleteObjects", X.delete_result(outcomes))
    assert [d["Key"] for d in parsed["Deleted"]] == ["a", "d\r\x7f"]
    assert parsed["Errors"] == [{"Key": "b&<c>", "Code": "AccessDenied", "Message": "Access Denied"}]
    quiet = boto("DeleteObjects", X.delete_result(outcomes, quiet=True))
    assert "Deleted" not in quiet and len(quiet["Errors"]) == 1
    assert etree(X.delete_result([], quiet=True)).tag == NS + "DeleteResult"
    # a key XML 1.0 cannot carry comes back as S3 writes it, which boto3 cannot parse (DeleteObjects has no
    # encoding-type)
    assert b"<Key>d&#x1;</Key>" in X.delete_result([X.DeleteOutcome("d\x01")])


def test_access_control_policies() -> None:
    for acl in ("private", "public-read"):
        body = X.access_control_policy(OWNER, acl)
        parsed = boto("GetObjectAcl", body)
        assert parsed["Owner"] == {"ID": OWNER.id, "DisplayName": "medianode"}
        grants = [(g["Grantee"]["Type"], g["Grantee"].get("ID") or g["Grantee"].get("URI"), g["Permission"])
                  for g in parsed["Grants"]]  # fmt: skip
        expected = [("CanonicalUser", OWNER.id, "FULL_CONTROL")]
        if acl == "public-read":
            expected.append(("Group", X.ALL_USERS, "READ"))
        assert grants == expected
        assert X.parse_access_control_policy(body, OWNER.id) == acl  # what we write, we read back
    with pytest.raises(ValueError):
        X.access_control_policy(OWNER, "public-read-write")  # type: ignore[arg-type]


def test_error_document() -> None:
    body = X.error_document(
        "NoSuchKey", "The specified key does not exist.", resource="/b/k", request_id="4442587FB7D0A2F9",
        extra={"Key": "k"},
    )  # fmt: skip
    root = etree(body)
    assert root.tag == "Error" and [el.tag for el in root] == ["Code", "Message", "Key", "Resource", "RequestId"]
    parsed = boto("GetObject", body, status=404)
    assert parsed["Error"]["Code"] == "NoSuchKey" and parsed["Error"]["Message"] == "The specified key does not exist."
    err = S3Error("AuthorizationHeaderMalformed", 400, "wrong region", {"Region": "eu-west-3"})
    parsed = boto("GetObject", X.error_body(err, resource="/b", request_id="r"), status=400)
    assert parsed["Error"]["Region"] == "eu-west-3" and parsed["Error"]["Code"] == "AuthorizationHeaderMalformed"


# -- requests, as botocore writes them ---------------------------------------------------------------------------


def serialized(operation: str, params: dict[str, Any]) -> bytes:
    request = create_serializer("rest-xml").serialize_to_request(params, MODEL.operation_model(operation))
    body = request["body"]
    assert isinstance(body, bytes)
    return body


def test_parse_delete_from_botocore() -> None:
    keys = ["a", "x&y <z>", "a\x01b", "emoji \U0001f600", " spaced ", "tab\tnl\n"]
    body = serialized(
        "DeleteObjects", {"Bucket": "b", "Delete": {"Objects": [{"Key": k} for k in keys], "Quiet": True}}
    )
    request = X.parse_delete(body)
    assert request.quiet is True and [k for k, _ in request.objects] == keys
    body = serialized("DeleteObjects", {"Bucket": "b", "Delete": {"Objects": [{"Key": "k", "VersionId": "v1"}]}})
    assert X.parse_delete(body) == X.DeleteRequest([("k", "v1")], False)
    # no namespace, S3's documented entity codes for a carriage return and a control character
    assert X.parse_delete(b"<Delete><Object><Key>a&#13;b&#x1;c&#2;</Key></Object></Delete>").objects == [
        ("a\rb\x01c\x02", None)
    ]
    marker = "\ue000".encode()  # a body that already holds the first private-use marker
    doc = b"<Delete><Object><Key>" + marker + b"&#x1;</Key></Object></Delete>"
    assert X.parse_delete(doc).objects == [("\ue000\x01", None)]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<Delete>",
        b"<Delete></Delete>",  # no object
        b"<Delete><Object><VersionId>1</VersionId></Object></Delete>",  # no key
        b"<Delete><Quiet>maybe</Quiet><Object><Key>a</Key></Object></Delete>",
        b"<Remove><Object><Key>a</Key></Object></Remove>",
        b"<Delete>" + b"<Object><Key>k</Key></Object>" * 1001 + b"</Delete>",  # over 1000 keys
    ],
)
def test_parse_delete_refuses(body: bytes) -> None:
    with pytest.raises(S3Error) as err:
        X.parse_delete(body)
    assert (err.value.code, err.value.status) == ("MalformedXML", 400)


def test_parse_delete_caps_the_body_before_parsing() -> None:
    big = b"<Delete><Object><Key>" + b"k" * X.MAX_DELETE_BODY + b"</Key></Object></Delete>"
    with pytest.raises(S3Error) as err:
        X.parse_delete(big)
    assert (err.value.code, err.value.status) == ("MaxMessageLengthExceeded", 400)
    thousand = b"<Delete>" + b"".join(b"<Object><Key>%d</Key></Object>" % i for i in range(1000)) + b"</Delete>"
    assert len(X.parse_delete(thousand).objects) == 1000


def test_parse_complete_multipart_upload_from_botocore() -> None:
    parts = [
        {"PartNumber": 1, "ETag": '"acbd18db4cc2f85cedef654fccc4a4d8"', "ChecksumCRC32": "AAAAAA=="},
        {"PartNumber": 3, "ETag": "37b51d194a7513e45b56f6524f2d51f2"},
    ]
    body = serialized(
        "CompleteMultipartUpload", {"Bucket": "b", "Key": "k", "UploadId": "u", "MultipartUpload": {"Parts": parts}}
    )
    got = X.parse_complete_multipart_upload(body)
    assert got == [
        X.CompletedPart(1, "acbd18db4cc2f85cedef654fccc4a4d8", {"ChecksumCRC32": "AAAAAA=="}),
        X.CompletedPart(3, "37b51d194a7513e45b56f6524f2d51f2"),
    ]
    quoted = b"<CompleteMultipartUpload><Part><PartNumber> 2 </PartNumber><ETag>&quot;ab&quot;</ETag></Part>"
    assert X.parse_complete_multipart_upload(quoted + b"</CompleteMultipartUpload>")[0].etag == "ab"
    many = b"".join(b"<Part><PartNumber>%d</PartNumber><ETag>e</ETag></Part>" % n for n in range(1, 10001))
    body = b"<CompleteMultipartUpload>" + many + b"</CompleteMultipartUpload>"
    assert len(X.parse_complete_multipart_upload(body)) == 10000


@pytest.mark.parametrize(
    ("parts", "code"),
    [
        ([], "MalformedXML"),
        ([(2, "e"), (1, "e")], "InvalidPartOrder"),
        ([(1, "e"), (1, "e")], "InvalidPartOrder"),
        ([(0, "e")], "InvalidArgument"),
        ([(10001, "e")], "InvalidArgument"),
        ([("x", "e")], "MalformedXML"),
        ([(1, None)], "MalformedXML"),
    ],
)
def test_parse_complete_multipart_upload_refuses(parts: list[tuple[object, str | None]], code: str) -> None:
    inner = "".join(
        f"<Part><PartNumber>{n}</PartNumber>" + ("" if e is None else f"<ETag>{e}</ETag>") + "</Part>" for n, e in parts
    )
    with pytest.raises(S3Error) as err:
        X.parse_complete_multipart_upload(f"<CompleteMultipartUpload>{inner}</CompleteMultipartUpload>".encode())
    assert (err.value.code, err.value.status) == (code, 400)


def acl_body(grants: list[dict[str, Any]], owner_id: str = OWNER.id) -> bytes:
    return serialized(
        "PutObjectAcl",
        {"Bucket": "b", "Key": "k", "AccessControlPolicy": {"Owner": {"ID": owner_id}, "Grants": grants}},
    )


def test_parse_access_control_policy_from_botocore() -> None:
    owner_full = {"Grantee": {"Type": "CanonicalUser", "ID": OWNER.id}, "Permission": "FULL_CONTROL"}
    all_read = {"Grantee": {"Type": "Group", "URI": X.ALL_USERS}, "Permission": "READ"}
    assert X.parse_access_control_policy(acl_body([owner_full]), OWNER.id) == "private"
    assert X.parse_access_control_policy(acl_body([all_read, owner_full, owner_full]), OWNER.id) == "public-read"
    unsupported = [
        [owner_full, {"Grantee": {"Type": "Group", "URI": X.ALL_USERS}, "Permission": "WRITE"}],
        [owner_full, {"Grantee": {"Type": "CanonicalUser", "ID": "someone-else"}, "Permission": "READ"}],
        [owner_full, {"Grantee": {"Type": "Group", "URI": X.AUTHENTICATED_USERS}, "Permission": "READ"}],
        [{"Grantee": {"Type": "CanonicalUser", "ID": OWNER.id}, "Permission": "READ"}],
        [],
    ]
    for grants in unsupported:
        with pytest.raises(S3Error) as err:
            X.parse_access_control_policy(acl_body(grants), OWNER.id)
        assert (err.value.code, err.value.status) == ("NotImplemented", 501)
    with pytest.raises(S3Error) as err:
        X.parse_access_control_policy(acl_body([owner_full], owner_id="someone-else"), OWNER.id)
    assert err.value.status == 501
    for bad in (b"<AccessControlPolicy>", b"<Acl/>", b"<AccessControlPolicy><Owner/></AccessControlPolicy>",
                b"<AccessControlPolicy><AccessControlList><Grant><Grantee><ID>x</ID></Grantee>"
                b"<Permission>ALL</Permission></Grant></AccessControlList></AccessControlPolicy>"):  # fmt: skip
        with pytest.raises(S3Error) as err:
            X.parse_access_control_policy(bad, OWNER.id)
        assert (err.value.code, err.value.status) == ("MalformedACLError", 400)


def test_parse_canned_acl() -> None:
    assert X.parse_canned_acl(None) == "private" and X.parse_canned_acl("public-read") == "public-read"
    assert X.parse_canned_acl("bucket-owner-full-control") == "private"
    with pytest.raises(S3Error) as err:
        X.parse_canned_acl("public-read-write")
    assert err.value.status == 501
    with pytest.raises(S3Error) as err:
        X.parse_canned_acl("everyone")
    assert (err.value.code, err.value.status) == ("InvalidArgument", 400)


def test_parse_create_bucket_configuration() -> None:
    body = serialized("CreateBucket", {"Bucket": "b", "CreateBucketConfiguration": {"LocationConstraint": "eu-west-3"}})
    assert X.parse_create_bucket_configuration(body) == "eu-west-3"
    assert X.parse_create_bucket_configuration(b"") is None
    assert X.parse_create_bucket_configuration(b"<CreateBucketConfiguration/>") is None
    with pytest.raises(S3Error) as err:
        X.parse_create_bucket_configuration(b"<CreateBucketConfiguration>")
    assert err.value.code == "MalformedXML"


# -- XML bombs ---------------------------------------------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<ROOT>&lol9;</ROOT>"""
EXTERNAL = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><ROOT>&xxe;</ROOT>'
PARAMETER = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x.dtd"> %p;]><ROOT/>'
DTD_ONLY = b'<?xml version="1.0"?><!DOCTYPE ROOT SYSTEM "http://127.0.0.1:9/x.dtd"><ROOT/>'

PARSERS = {
    "Delete": (X.parse_delete, "<Object><Key>{}</Key></Object>", "MalformedXML"),
    "CompleteMultipartUpload": (
        X.parse_complete_multipart_upload,
        "<Part><PartNumber>1</PartNumber><ETag>{}</ETag></Part>",
        "MalformedXML",
    ),
    "AccessControlPolicy": (
        lambda body: X.parse_access_control_policy(body, OWNER.id),
        "<AccessControlList><Grant><Grantee><ID>{}</ID></Grantee><Permission>READ</Permission></Grant>"
        "</AccessControlList>",
        "MalformedACLError",
    ),
    "CreateBucketConfiguration": (
        X.parse_create_bucket_configuration,
        "<LocationConstraint>{}</LocationConstraint>",
        "MalformedXML",
    ),
}


@pytest.mark.parametrize("root", sorted(PARSERS))
@pytest.mark.parametrize("bomb", [BILLION_LAUGHS, EXTERNAL, PARAMETER, DTD_ONLY])
def test_xml_bombs_are_refused(root: str, bomb: bytes) -> None:
    parse, inner, code = PARSERS[root]
    entity = b"&lol9;" if bomb is BILLION_LAUGHS else b"&xxe;" if bomb is EXTERNAL else b"x"
    body = bomb.replace(b"<ROOT>&lol9;</ROOT>", b"<ROOT>" + inner.format("@").encode() + b"</ROOT>")
    body = body.replace(b"<ROOT>&xxe;</ROOT>", b"<ROOT>" + inner.format("@").encode() + b"</ROOT>")
    body = body.replace(b"@", entity).replace(b"ROOT", root.encode())
    with pytest.raises(S3Error) as err:
        parse(body)
    assert (err.value.code, err.value.status) == (code, 400)


# -- names and addressing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["abc", "my-bucket.example", "a" * 63, "0-0", "192.168.5.4x", "xn-a", "s3alias", "bucket-s3alia"],
)
def test_valid_bucket_names(name: str) -> None:
    assert validate_bucket_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["ab", "a" * 64, "My-Bucket", "my_bucket", "-abc", "abc-", ".abc", "abc.", "a..b", "a.-b", "a-.b", "192.168.5.4",
     "xn--abc", "sthree-abc", "sthree-configurator", "amzn-s3-demo-x", "abc-s3alias", "abc--ol-s3", "abc.mrap",
     "abc--x-s3", "abc--table-s3", "ab c", "abé"],
)  # fmt: skip
def test_invalid_bucket_names(name: str) -> None:
    assert bucket_name_problem(name) is not None
    with pytest.raises(S3Error) as err:
        validate_bucket_name(name)
    assert (err.value.code, err.value.status) == ("InvalidBucketName", 400)


def test_keys() -> None:
    assert validate_key("é" * 512) == "é" * 512  # 1024 bytes
    with pytest.raises(S3Error) as err:
        validate_key("é" * 512 + "x")
    assert (err.value.code, err.value.status) == ("KeyTooLongError", 400)
    with pytest.raises(S3Error) as err:
        percent_decode("a%FFb")
    assert (err.value.code, err.value.status) == ("InvalidURI", 400)
    with pytest.raises(S3Error):
        validate_key("\ud800")
    assert percent_decode("%E2%82%AC%2B+%252F") == "€++%2F"


@pytest.mark.parametrize(
    ("host", "path", "base", "expected"),
    [
        ("s3.example", "/", "s3.example", (None, None)),
        ("s3.example", "/media", "s3.example", ("media", None)),
        ("s3.example", "/media/", "s3.example", ("media", None)),
        ("s3.example", "/media/a/b%20c.jpg", "s3.example", ("media", "a/b c.jpg")),
        ("s3.example", "/media//double/slash/", "s3.example", ("media", "/double/slash/")),
        ("s3.example", "/media/a%2Fb%252F%3F+", "s3.example", ("media", "a/b%2F?+")),
        ("media.s3.example", "/a/b.jpg", "s3.example", ("media", "a/b.jpg")),
        ("Media.S3.Example.", "/", "s3.example", ("media", None)),
        ("my.dotted.bucket.s3.example:443", "/k", "s3.example", ("my.dotted.bucket", "k")),
        ("media.s3.example", "//k", "s3.example", ("media", "/k")),
        ("127.0.0.1:9000", "/media/k", "127.0.0.1:9000", ("media", "k")),
        ("media.localhost:9000", "/k", "localhost:9000", ("media", "k")),
        ("media.localhost:9001", "/other/k", "localhost:9000", ("other", "k")),  # another port: path-style
        ("localhost", "/media/k?acl", "s3.example", ("media", "k")),  # not our name: path-style
        (None, "/media/%C3%A9", "s3.example", ("media", "é")),
        ("[::1]:9000", "/media/k", "[::1]:9000", ("media", "k")),
    ],
)
def test_parse_address(host: str | None, path: str, base: str, expected: tuple[str | None, str | None]) -> None:
    assert parse_address(host, path, base) == expected
    assert parse_address(host, path.encode(), base) == expected


def test_parse_address_refuses() -> None:
    with pytest.raises(S3Error) as err:
        parse_address("s3.example", "/media/%C3", "s3.example")
    assert err.value.code == "InvalidURI"
    with pytest.raises(S3Error) as err:
        parse_address("media.s3.example", "/" + "k" * 1025, "s3.example")
    assert err.value.code == "KeyTooLongError"


# -- ETags and conditional requests ------------------------------------------------------------------------------


def test_etags() -> None:
    a, b = b"a" * (5 << 20), b"tail"
    expected = hashlib.md5(hashlib.md5(a).digest() + hashlib.md5(b).digest()).hexdigest() + "-2"
    assert multipart_etag([md5_etag(a), quote_etag(md5_etag(b))]) == expected
    assert multipart_etag([hashlib.md5(a).digest(), hashlib.md5(b).digest()]) == expected
    for bad in ([], ["xyz"], [b"short"]):
        with pytest.raises(ValueError):
            multipart_etag(bad)
    assert quote_etag("abc") == '"abc"' == quote_etag('"abc"') and unquote_etag(' W/"abc" ') == "abc"
    assert parse_etag_list('"a", W/"b" ,c, "d,e"') == [(False, "a"), (True, "b"), (False, "c"), (False, "d,e")]
    assert parse_etag_list(" * ") is None
    assert etag_matches('"x", "abc"', '"abc"', weak=False) and etag_matches("abc", "abc", weak=False)
    assert not etag_matches('W/"abc"', "abc", weak=False) and etag_matches('W/"abc"', "abc", weak=True)
    assert etag_matches("*", "abc", weak=False) and not etag_matches("*", None, weak=True)


LM = parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT")
BEFORE, SAME, AFTER = "Wed, 21 Oct 2015 07:27:59 GMT", "Wed, 21 Oct 2015 07:28:00 GMT", "Wed, 21 Oct 2015 07:28:01 GMT"


@pytest.mark.parametrize(
    ("conditions", "method", "expected"),
    [
        (Conditions(), "GET", None),
        (Conditions(if_match='"e"'), "GET", None),
        (Conditions(if_match='"other"'), "GET", 412),
        (Conditions(if_match="*"), "GET", None),
        (Conditions(if_none_match='"e"'), "GET", 304),
        (Conditions(if_none_match='"e"'), "HEAD", 304),
        (Conditions(if_none_match='"other"'), "GET", None),
        (Conditions(if_none_match="*"), "PUT", 412),  # conditional write over an existing key
        (Conditions(if_modified_since=SAME), "GET", 304),
        (Conditions(if_modified_since=BEFORE), "GET", None),
        (Conditions(if_modified_since=SAME), "PUT", None),  # only for GET and HEAD
        (Conditions(if_unmodified_since=BEFORE), "GET", 412),
        (Conditions(if_unmodified_since=SAME), "GET", None),
        (Conditions(if_modified_since="not a date"), "GET", None),  # ignored
        (Conditions(if_modified_since="Wed Oct 21 07:28:00 2015"), "GET", 304),  # asctime
        (Conditions(if_modified_since="Wednesday, 21-Oct-15 07:28:00 GMT"), "GET", 304),  # RFC 850
        # S3's documented pairs
        (Conditions(if_match='"e"', if_unmodified_since=BEFORE), "GET", None),  # 200 OK
        (Conditions(if_none_match='"e"', if_modified_since=BEFORE), "GET", 304),
        (Conditions(if_none_match='"other"', if_modified_since=AFTER), "GET", None),
        (Conditions(if_match='"other"', if_none_match='"other"'), "GET", 412),
    ],
)
def test_conditional_requests(conditions: Conditions, method: str, expected: int | None) -> None:
    assert LM is not None
    assert evaluate(conditions, '"e"', LM + 0.75, method=method) == expected


def test_conditional_copy_sources_and_missing_objects() -> None:
    assert LM is not None
    headers = {"x-amz-copy-source-if-none-match": '"e"', "x-amz-copy-source-if-modified-since": BEFORE}
    assert evaluate(Conditions.from_copy_source_headers(headers), "e", LM, copy_source=True) == 412
    headers = {"x-amz-copy-source-if-modified-since": AFTER}
    assert evaluate(Conditions.from_copy_source_headers(headers), "e", LM, copy_source=True) == 412
    headers = {"x-amz-copy-source-if-match": '"e"', "x-amz-copy-source-if-unmodified-since": BEFORE}
    assert evaluate(Conditions.from_copy_source_headers(headers), "e", LM, copy_source=True) is None
    assert evaluate(Conditions(if_none_match="*"), None, None, method="PUT") is None
    assert evaluate(Conditions(if_match='"e"'), None, None, method="PUT") == 404
    assert Conditions.from_headers({"if-match": '"e"'}).present() and not Conditions().present()
