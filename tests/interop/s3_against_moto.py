"""Run every S3 harness in this directory against moto's S3 server, the reference they are proven on.

    python3 -m venv /tmp/s3ref && /tmp/s3ref/bin/pip install 'moto[server]' boto3
    apt-get install -y ruby-aws-sdk-s3
    /tmp/s3ref/bin/python tests/interop/s3_against_moto.py [--wiretap wire.jsonl] [--only peertube,mastodon,laravel]

Run it with the scratch venv's Python (moto and boto3 must never go into the project's venv). It starts
`moto_server -H 127.0.0.1` on a free port, creates the bucket `media` with a CORS rule allowing GET
and HEAD from any origin, installs tests/interop/package.json with npm into the tests' cache directory
(the one tests/integration/test_helia.py uses), runs each harness in each of its modes and prints one line per run:
"PASS name" or "FAIL name" with the harness's reason, then "N passed, N failed". With --wiretap every
request goes through s3_wiretap.py and is recorded in that file.

moto departs from S3 in ways the harnesses list under "deviations" instead of failing; see README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{what} did not listen on 127.0.0.1:{port}")


def npm_dir() -> Path:
    manifest = (HERE / "package.json").read_bytes()
    cache_root = Path(os.environ.get("MEDIANODE_TEST_CACHE", Path.home() / ".cache" / "medianode-tests"))
    target = cache_root / f"helia-{hashlib.sha256(manifest).hexdigest()[:12]}"
    if not (target / "node_modules" / "@aws-sdk" / "client-s3").exists():
        target.mkdir(parents=True, exist_ok=True)
        (target / "package.json").write_bytes(manifest)
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--legacy-peer-deps", "--loglevel=error"],
            cwd=target, check=True, timeout=600,
        )  # fmt: skip
    shutil.copy(HERE / "s3_peertube.mjs", target / "s3_peertube.mjs")
    return target


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--wiretap", help="record every request in this JSONL file")
    parser.add_argument("--only", default="peertube,mastodon,laravel")
    args = parser.parse_args()
    only = set(args.only.split(","))
    moto_bin = Path(sys.executable).with_name("moto_server")
    if not moto_bin.exists():
        raise SystemExit(f"{moto_bin} not found: run this with the Python of a venv that has moto[server]")
    port = free_port()
    tap_port = free_port() if args.wiretap else None
    client_port = tap_port or port
    endpoints = ",".join(f"http://s3.localhost:{p}" for p in {port, client_port})
    work = Path(tempfile.mkdtemp(prefix="s3-against-moto-"))
    procs = []
    env = {**os.environ, "MOTO_S3_CUSTOM_ENDPOINTS": endpoints}
    log = (work / "moto.log").open("w")
    procs.append(subprocess.Popen([str(moto_bin), "-H", "127.0.0.1", "-p", str(port)], env=env, stdout=log, stderr=log))
    try:
        wait_listening(port, "moto_server")
        if tap_port:
            procs.append(subprocess.Popen(
                [sys.executable, str(HERE / "s3_wiretap.py"), "--listen-port", str(tap_port),
                 "--upstream", f"http://127.0.0.1:{port}", "--log", args.wiretap],
                stdout=subprocess.DEVNULL,
            ))  # fmt: skip
            wait_listening(tap_port, "s3_wiretap.py")
        key, secret, region, bucket = "medianode-test", "medianode-test-secret", "us-east-1", "media"
        admin = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name=region,
                             aws_access_key_id=key, aws_secret_access_key=secret)  # fmt: skip
        admin.create_bucket(Bucket=bucket)
        admin.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [
            {"AllowedOrigins": ["*"], "AllowedMethods": ["GET", "HEAD"], "AllowedHeaders": ["*"],
             "ExposeHeaders": ["ETag", "Content-Range", "Content-Length"], "MaxAgeSeconds": 3000}]})  # fmt: skip
        common = ["--region", region, "--access-key-id", key, "--secret-access-key", secret, "--bucket", bucket]
        path_endpoint = f"http://127.0.0.1:{client_port}"
        vhost_endpoint = f"http://s3.localhost:{client_port}"
        runs: list[tuple[str, list[str], Path | None]] = []
        if "peertube" in only:
            node = npm_dir()
            for name, endpoint, extra in (
                ("peertube path when_required", path_endpoint, ["--checksum", "when_required"]),
                ("peertube path when_supported", path_endpoint, ["--checksum", "when_supported"]),
                (
                    "peertube virtual when_required",
                    vhost_endpoint,
                    ["--checksum", "when_required", "--addressing", "virtual"],
                ),
                (
                    "peertube virtual when_supported",
                    vhost_endpoint,
                    ["--checksum", "when_supported", "--addressing", "virtual"],
                ),
            ):
                runs.append((name, ["node", "s3_peertube.mjs", "--endpoint", endpoint, *common, *extra], node))
        if "mastodon" in only:
            for name, endpoint, extra in (
                ("mastodon path", path_endpoint, []),
                ("mastodon virtual", vhost_endpoint, ["--addressing", "virtual"]),
            ):
                runs.append(
                    (name, ["ruby", str(HERE / "s3_mastodon.rb"), "--endpoint", endpoint, *common, *extra], None)
                )
        if "laravel" in only:
            for name, endpoint, extra in (
                ("laravel path when_supported", path_endpoint, ["--checksum", "when_supported"]),
                ("laravel path when_required", path_endpoint, ["--checksum", "when_required"]),
                (
                    "laravel virtual when_supported",
                    vhost_endpoint,
                    ["--checksum", "when_supported", "--addressing", "virtual"],
                ),
            ):
                runs.append(
                    (name, [sys.executable, str(HERE / "s3_laravel.py"), "--endpoint", endpoint, *common, *extra], None)
                )
        passed = failed = 0
        for index, (name, command, cwd) in enumerate(runs):
            command += ["--workdir", str(work / f"run{index}")]
            done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
            lines = done.stdout.strip().splitlines()
            if done.returncode == 0 and lines and json.loads(lines[-1]).get("ok"):
                result = json.loads(lines[-1])
                passed += 1
                print(f"PASS {name}: {len(result['steps'])} steps in {result['total_ms']} ms, "
                      f"{result['effective_addressing']}-style, deviations: {result['deviations']}")  # fmt: skip
                (work / f"run{index}.json").write_text(lines[-1] + "\n")
            else:
                failed += 1
                reason = next(
                    (line for line in done.stderr.splitlines() if line.startswith("FAIL")), done.stderr.strip()[-500:]
                )
                print(f"FAIL {name}: {reason}")
        print(f"results in {work}")
        print(f"{passed} passed, {failed} failed")
        return 0 if failed == 0 else 1
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
