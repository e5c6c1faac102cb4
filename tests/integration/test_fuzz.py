"""Fuzzing what hostile peers and clients send, with hypothesis, bounded in examples and time.

Decoders (Bitswap frames and messages, dag-pb/UnixFS nodes, HAMT shards, CAR files) must either decode
or raise their own error type, never anything else and never hang. The gateway, the upload API and the S3
listener of a real ``serve`` must answer every request hypothesis makes up with a status below 500.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from conftest import Served, gen
from dags import file_dag
from node.storage.car import CarError, read_car, write_block, write_header
from node.storage.cid import CID, CIDError
from node.storage.dagpb import DagPBError
from node.storage.hamt import decode_shard
from node.storage.layout import FileNode, NotAFileError
from node.storage.unixfs import UnixFSError
from node.swarm.bitswap.wire import BitswapWireError, FrameReader, decode_message

QUICK = settings(max_examples=300, deadline=None)
OVER_HTTP = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@QUICK
@given(st.binary(max_size=4096))
def test_bitswap_messages_decode_or_are_refused(data: bytes) -> None:
    with contextlib.suppress(BitswapWireError):
        decode_message(data)


@QUICK
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_bitswap_frames_split_anywhere_never_crash(pieces: list[bytes]) -> None:
    reader = FrameReader(max_size=64 * 1024)
    try:
        for piece in pieces:
            for frame in reader.feed(piece):
                decode_message(frame)
    except BitswapWireError:
        pass


@QUICK
@given(st.binary(max_size=2048))
def test_file_and_shard_nodes_decode_or_are_refused(block: bytes) -> None:
    cid = CID.for_block(0x70, block)
    for decode in (lambda: FileNode.decode(cid, block), lambda: decode_shard(cid, block)):
        with contextlib.suppress(UnixFSError, DagPBError, NotAFileError):
            decode()


def _valid_car() -> bytes:
    """A real CAR (a CIDv0 file of five dag-pb leaves and its root) to cut and flip."""
    root, blocks = file_dag(gen(300_000, b"fuzz-car"), chunk=65536)
    out = io.BytesIO()
    write_header(out, [root])
    for cid, block in blocks:
        write_block(out, cid, block)
    return out.getvalue()


VALID_CAR = _valid_car()


@QUICK
@given(st.data())
def test_car_files_cut_or_flipped_are_refused_cleanly(data: st.DataObject) -> None:
    car = bytearray(VALID_CAR)
    for _ in range(data.draw(st.integers(0, 4))):
        at = data.draw(st.integers(0, len(car) - 1))
        car[at] = data.draw(st.integers(0, 255))
    car = car[: data.draw(st.integers(0, len(car)))]
    try:
        _, blocks = read_car(io.BytesIO(bytes(car)))
        for _cid, _block in blocks:
            pass
    except (CarError, CIDError):
        pass


def _latin1(headers: dict[str, str]) -> dict[str, bytes]:
    return {name: value.encode("latin-1") for name, value in headers.items()}


def _send(request: Callable[[], httpx.Response]) -> httpx.Response:
    """The answer, or a rejected example when the client library itself refuses to send the request."""
    try:
        return request()
    except (httpx.InvalidURL, httpx.LocalProtocolError, httpx.UnsupportedProtocol, UnicodeEncodeError):
        reject()
        raise  # unreachable: reject() raises


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, str, str]]:
    served = Served(tmp_path_factory.mktemp("fuzz"))
    source = tmp_path_factory.mktemp("src") / "clip.bin"
    source.write_bytes(gen(700_000, b"fuzz"))
    cid = served.node.ok("add", str(source), "--json").json["cid"]
    token = served.node.ok("token", "create", "--name", "fuzzer", "--json").json["token"]
    yield served, cid, token
    assert served.stop() == 0


# Header values as bytes a client can send (latin-1, no surrounding blanks: h11 refuses those itself).
HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40).map(
    str.strip
)
PATH_TEXT = st.text(st.characters(min_codepoint=33, max_codepoint=0x10FFFF, exclude_categories=("Cs",)), max_size=30)


@OVER_HTTP
@given(
    path=PATH_TEXT,
    query=st.dictionaries(st.sampled_from(["format", "dag-scope", "entity-bytes", "filename", "download"]),
                          HEADER_TEXT, max_size=4),
    range_header=st.one_of(st.none(), HEADER_TEXT, st.from_regex(r"bytes=-?[0-9]{0,9}-?[0-9]{0,9}", fullmatch=True)),
    accept=st.one_of(st.none(), st.sampled_from(["application/vnd.ipld.raw", "application/vnd.ipld.car;version=2",
                                                  "application/vnd.ipld.car; q=0", "*/*"]), HEADER_TEXT),
    prefix=st.booleans(),
)  # fmt: skip
def test_the_gateway_never_answers_5xx(
    node: tuple[Served, str, str], path: str, query: dict[str, str], range_header: str | None,
    accept: str | None, prefix: bool,
) -> None:  # fmt: skip
    served, cid, _ = node
    headers = {k: v for k, v in (("Range", range_header), ("Accept", accept)) if v is not None}
    target = f"/ipfs/{cid}/{path}" if prefix else f"/ipfs/{path}"
    with httpx.Client(timeout=60) as client:
        answer = _send(lambda: client.get(served.url + target, params=query, headers=_latin1(headers)))
    assert answer.status_code < 500 or answer.status_code == 504, (target, query, headers, answer.text[:300])


@OVER_HTTP
@given(
    length=HEADER_TEXT, offset=HEADER_TEXT, body=st.binary(max_size=2000),
    content_type=st.sampled_from(["application/offset+octet-stream", "text/plain", ""]),
)  # fmt: skip
def test_the_upload_api_never_answers_5xx(
    node: tuple[Served, str, str], length: str, offset: str, body: bytes, content_type: str
) -> None:
    served, _, token = node
    auth = {"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0"}
    with httpx.Client(timeout=60) as client:
        created = _send(
            lambda: client.post(f"{served.url}/api/v1/uploads", headers=_latin1({**auth, "Upload-Length": length}))
        )
        assert created.status_code < 500, (length, created.text[:300])
        location = created.headers.get("location")
        if created.status_code == 201 and location:
            url = httpx.URL(served.url).join(location)
            patched = _send(lambda: client.patch(
                url, content=body, headers=_latin1({**auth, "Upload-Offset": offset, "Content-Type": content_type})
            ))  # fmt: skip
            assert patched.status_code < 500, (length, offset, patched.text[:300])
            client.delete(url, headers=auth)


@OVER_HTTP
@given(
    method=st.sampled_from(["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS"]),
    path=PATH_TEXT,
    query=st.dictionaries(
        st.sampled_from(["uploads", "uploadId", "partNumber", "acl", "delete", "list-type", "prefix", "delimiter",
                         "max-keys", "continuation-token", "marker", "location", "X-Amz-Algorithm",
                         "X-Amz-Credential", "X-Amz-Signature", "X-Amz-Date", "X-Amz-Expires",
                         "response-content-type"]),
        HEADER_TEXT, max_size=5),
    headers=st.dictionaries(
        st.sampled_from(["Authorization", "x-amz-date", "x-amz-content-sha256", "Content-MD5", "x-amz-acl",
                         "x-amz-copy-source", "Range", "If-Match", "If-Modified-Since", "x-amz-checksum-crc32",
                         "Content-Encoding", "x-amz-decoded-content-length", "x-amz-trailer"]),
        HEADER_TEXT, max_size=5),
    body=st.binary(max_size=1000),
)  # fmt: skip
def test_the_s3_listener_never_answers_5xx(
    node: tuple[Served, str, str], method: str, path: str, query: dict[str, str], headers: dict[str, str],
    body: bytes,
) -> None:  # fmt: skip
    served, _, _ = node
    assert served.s3_url
    with httpx.Client(timeout=60) as client:
        answer = _send(lambda: client.request(
            method, f"{served.s3_url}/{path}", params=query, headers=_latin1(headers),
            content=body if method in ("PUT", "POST") else None,
        ))  # fmt: skip
    assert answer.status_code < 500 or answer.status_code == 501, (method, path, query, headers, answer.text[:300])
