"""S3 access keys: the secret a new key gets."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from node.gateway.s3.catalog import Catalog


def test_a_new_secret_never_starts_with_a_dash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What was tried: the random source's first two answers begin with "-". A secret like that read as an option
    # where it was passed on a command line (a fresh-clone CI run: "argument --secret-access-key: expected one
    # argument" from the Laravel flow's harness), one key in 64.
    answers = iter(["-first", "-second", "third"])
    monkeypatch.setattr(secrets, "token_urlsafe", lambda nbytes: next(answers))
    key = Catalog(tmp_path / "s3.sqlite").create_key("laravel.example")
    assert key.secret == "third"
