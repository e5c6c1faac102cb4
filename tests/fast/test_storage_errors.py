"""Storage errors sit under medianode's root with the status the HTTP layers answer for them."""

from __future__ import annotations

import pytest

from node.errors import MedianodeError
from node.storage.car import CarError
from node.storage.cid import CIDError
from node.storage.dagpb import DagPBError
from node.storage.directories import PathError
from node.storage.errors import (
    BlockNotFound,
    CorruptBlock,
    InvalidInput,
    NoSpace,
    PinRefused,
    QuotaExceeded,
    StoreError,
)
from node.storage.hamt import HAMTError
from node.storage.importer import UnsupportedInputError
from node.storage.layout import NotAFileError
from node.storage.protobuf import ProtobufError
from node.storage.unixfs import UnixFSError


@pytest.mark.parametrize(
    ("error", "status", "also"),
    [
        (StoreError("index error: disk I/O error"), 500, ()),
        (BlockNotFound("bafy"), 404, (StoreError,)),
        (CorruptBlock("bafy"), 502, (StoreError,)),
        (QuotaExceeded("over"), 507, (StoreError,)),
        (NoSpace("full"), 507, (StoreError,)),
        (InvalidInput("bad CAR"), 400, (StoreError,)),
        (PinRefused("cannot pin"), 409, (StoreError,)),
        (CIDError("bad"), 400, (ValueError,)),
        (CarError("bad"), 400, (ValueError,)),
        (UnsupportedInputError("bad"), 400, (ValueError,)),
        (NotAFileError("dir"), 400, (ValueError,)),
        (UnixFSError("lies"), 422, (ValueError,)),
        (HAMTError("loops"), 422, (UnixFSError, ValueError)),
        (DagPBError("bad"), 422, (ValueError,)),
        (ProtobufError("bad"), 422, (ValueError,)),
        (PathError("no such name"), 404, (LookupError,)),
    ],
)
def test_status_and_the_classes_callers_catch(error: Exception, status: int, also: tuple[type, ...]) -> None:
    assert isinstance(error, MedianodeError)
    assert error.status == status
    for cls in also:
        assert isinstance(error, cls)
