"""The S3 calls of real fediverse servers, made by their own SDKs, against a real ``serve``.

- PeerTube: ``@aws-sdk/client-s3``, ``@aws-sdk/lib-storage`` and ``@aws-sdk/s3-request-presigner`` under
  Node.js (pinned in tests/interop/package.json), with PeerTube's ``requestChecksumCalculation:
  'WHEN_REQUIRED'`` and with the SDK's default CRC32 checksums, path-style and virtual-host-style.
- Mastodon: Debian's ``ruby-aws-sdk-s3`` (the SDK Mastodon uses): puts with ``public-read``, ``upload_file``
  past the 15 MiB multipart threshold, ranged and parallel downloads, suspension (``acl private``, then an
  anonymous GET must fail), ``delete_objects`` batches.
- Laravel (Loops, Pixelfed): Flysystem's AwsS3V3Adapter call sequence replayed with boto3 (no PHP here).

Each harness (tests/interop/README.md) checks every answer itself and reports ``deviations`` from S3: there
must be none.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from conftest import INTEROP, Served, interop_modules

HARNESSES = {
    "peertube": ["node", "s3_peertube.mjs"],
    "mastodon": ["ruby", str(INTEROP / "s3_mastodon.rb")],
    "laravel": [sys.executable, str(INTEROP / "s3_laravel.py")],
}
FLOWS = [
    ("peertube", "path", "when_required"),
    ("peertube", "path", "when_supported"),
    ("peertube", "virtual", "when_required"),
    ("mastodon", "path", None),
    ("mastodon", "virtual", None),
    ("laravel", "path", "when_supported"),
    ("laravel", "path", "when_required"),
    ("laravel", "virtual", "when_supported"),
]


@pytest.fixture(scope="module")
def node_modules() -> Path:
    target = interop_modules()
    shutil.copy(INTEROP / "s3_peertube.mjs", target / "s3_peertube.mjs")
    return target


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Any:
    data = tmp_path_factory.mktemp("s3-node")
    (data / "config.toml").write_text('[s3]\ndomain = "s3.localhost"\n')
    served = Served(data)
    yield served
    assert served.stop() == 0


@pytest.mark.parametrize(("server", "addressing", "checksum"), FLOWS)
def test_fediverse_server_flows(
    node: Served, node_modules: Path, tmp_path: Path, server: str, addressing: str, checksum: str | None
) -> None:
    if server == "mastodon" and shutil.which("ruby") is None:
        pytest.fail("Ruby is not installed (.ci/run installs ruby-aws-sdk-s3)")
    key = node.node.ok("s3", "key", "create", "--name", f"{server}-{addressing}-{checksum}", "--json").json
    bucket = f"{server}-{addressing}-{checksum or 'default'}".replace("_", "-")
    assert node.s3_url
    boto3.client(
        "s3", endpoint_url=node.s3_url, region_name="us-east-1", aws_access_key_id=key["access_key_id"],
        aws_secret_access_key=key["secret_access_key"], config=Config(signature_version="s3v4"),
    ).create_bucket(Bucket=bucket)  # fmt: skip
    port = node.s3_url.rsplit(":", 1)[1]
    endpoint = node.s3_url if addressing == "path" else f"http://s3.localhost:{port}"
    command = [
        *HARNESSES[server], "--endpoint", endpoint, "--region", "us-east-1", "--access-key-id", key["access_key_id"],
        "--secret-access-key", key["secret_access_key"], "--bucket", bucket, "--workdir", str(tmp_path / "work"),
        "--addressing", addressing, *(["--checksum", checksum] if checksum else []),
    ]  # fmt: skip
    run = subprocess.run(
        command, cwd=node_modules if server == "peertube" else None, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, f"{server} flow failed:\n{run.stderr[-3000:]}"
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["ok"] and report["deviations"] == [], report["deviations"]
    # Everything the flow wrote it also deleted: the tenant's bucket is empty again.
    listed = node.node.ok("s3", "key", "ls", "--json").json["keys"]
    assert next(k for k in listed if k["access_key_id"] == key["access_key_id"])["used"] == 0
