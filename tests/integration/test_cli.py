"""The ``medianode`` command as a user runs it: each command, its --json output, and bad input."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, Node, gen

MiB = 1024 * 1024


def test_add_cat_get_roundtrip_and_vector_cid(node: Node, tmp_path: Path) -> None:
    data = gen(45613057)
    src = tmp_path / "clip.mp4"
    src.write_bytes(data)
    added = node.ok("add", str(src), "--json").json
    cid = "bafybeidqwlytt2o7dyksbvptf4wzxisp7376knyyzkrjzbxvk6ing5ty74"
    assert added == {"cid": cid, "size": len(data), "name": "clip.mp4", "pinned": True,
                     "url": f"http://127.0.0.1:8080/ipfs/{cid}"}  # fmt: skip
    assert node.ok("cat", added["cid"]).stdout == data
    part = node.ok("cat", added["cid"], "--offset", "1000000", "--length", "300000").stdout
    assert part == data[1000000:1300000]
    out = tmp_path / "back.mp4"
    got = node.ok("get", added["cid"], "-o", str(out), "--json").json
    assert got["size"] == len(data) and out.read_bytes() == data
    stat = node.ok("stat", added["cid"], "--json").json
    assert stat["type"] == "file" and stat["size"] == len(data) and stat["pinned"] and stat["missing_blocks"] == 0
    # Plain text output names the CID too.
    assert added["cid"] in node.ok("add", str(src)).text


def test_one_mebibyte_chunks_and_stdin(node: Node, tmp_path: Path) -> None:
    data = gen(1048577)
    (tmp_path / "f").write_bytes(data)
    assert node.ok("add", str(tmp_path / "f"), "--chunk-size", "1048576", "--json").json["cid"] == (
        "bafybeibkeyr5vlz34czx7f65yxwaas2g2sjyqpsd572opm5adfg6y7zdie"
    )
    piped = node.ok("add", "-", "--json", stdin=data).json
    assert piped["cid"] == "bafybeiatim3jpspxindj2ppw76gcv5cbsghnlld2cxkeoxlbxnjvqzyjs4"
    assert node.ok("cat", piped["cid"]).stdout == data


def test_directory_add_ls_get(node: Node, tmp_path: Path) -> None:
    top = tmp_path / "flat"
    top.mkdir()
    for name, size in (("a", 10), ("b", 0), ("c.txt", 262145)):
        (top / name).write_bytes(gen(size, ("jsanchors-v1/" + name).encode()))
    assert node.run("add", str(top)).code != 0  # a directory needs -r
    cid = node.ok("add", "-r", str(top), "--json").json["cid"]
    assert cid == "bafybeig25fdrgrsvbueirzcjlsc4hadygl57kmowwxki2ln23nos35slle"
    entries = node.ok("ls", cid, "--json").json["entries"]
    assert [(e["name"], e["type"], e["size"]) for e in entries] == [
        ("a", "file", 10),
        ("b", "file", 0),
        ("c.txt", "file", 262145),
    ]
    assert node.ok("cat", f"/ipfs/{cid}/c.txt").stdout == (top / "c.txt").read_bytes()
    node.ok("get", cid, "-o", str(tmp_path / "copy"))
    for name in ("a", "b", "c.txt"):
        assert (tmp_path / "copy" / name).read_bytes() == (top / name).read_bytes()


def test_pins_gc_and_repo_stat(node: Node, tmp_path: Path) -> None:
    (tmp_path / "keep").write_bytes(gen(MiB, b"keep"))
    (tmp_path / "cache").write_bytes(gen(MiB, b"cache"))
    keep = node.ok("add", str(tmp_path / "keep"), "--json").json["cid"]
    cache = node.ok("add", str(tmp_path / "cache"), "--no-pin", "--json").json["cid"]
    assert [p["cid"] for p in node.ok("pin", "ls", "--json").json["pins"]] == [keep]
    gc = node.ok("gc", "--json").json
    assert gc["blocks_removed"] == 5
    assert node.run("cat", cache).code != 0
    assert node.ok("cat", keep).stdout == gen(MiB, b"keep")
    node.ok("pin", "rm", keep)
    assert node.ok("pin", "ls", "--json").json["pins"] == []
    node.ok("gc")
    stat = node.ok("repo", "stat", "--json").json
    assert stat["blocks"] == 0 and stat["size"] == 0 and stat["quota"] == 10 * 1024**3


def test_export_import_car_both_compressions(node: Node, tmp_path: Path) -> None:
    data = gen(3 * MiB + 5)
    (tmp_path / "f").write_bytes(data)
    cid = node.ok("add", str(tmp_path / "f"), "--json").json["cid"]
    for name in ("out.car", "out.car.zst"):
        target = tmp_path / name
        exported = node.ok("export", cid, "-o", str(target), "--json").json
        assert exported["blocks"] == 14 and target.exists()
        other = Node(tmp_path / f"other-{name}")
        imported = other.ok("import", str(target), "--json").json
        assert imported["roots"] == [cid] and imported["blocks"] == 14
        assert other.ok("cat", cid).stdout == data
        assert other.ok("stat", cid, "--json").json["pinned"]


def test_verify_exit_code_reports_corruption(node: Node, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(gen(MiB))
    node.ok("add", str(tmp_path / "f"))
    assert node.ok("verify", "--json").json["corrupt"] == []
    pack = next((node.data_dir / "store" / "packs").iterdir())
    with open(pack, "r+b") as f:
        f.seek(12345)
        f.write(b"\xff\xfe")
    result = node.run("verify", "--json")
    assert result.code == 1
    assert len(result.json["corrupt"]) == 1


def test_init_and_json_everywhere(node: Node) -> None:
    created = node.ok("init", "--quota", "2GiB", "--json").json
    assert created["created"] and created["quota"] == 2 * 1024**3
    assert not node.ok("init", "--json").json["created"]
    assert 'quota = "2GiB"' in (node.data_dir / "config.toml").read_text()


# -- bad input: one-line error, non-zero exit, store unchanged ---------------------------


@pytest.fixture
def seeded(node: Node, tmp_path: Path) -> Node:
    (tmp_path / "seed").write_bytes(gen(MiB, b"seed"))
    node.ok("add", str(tmp_path / "seed"))
    return node


def test_missing_file(seeded: Node, tmp_path: Path) -> None:
    """Tried: adding a path that does not exist."""
    before = seeded.snapshot()
    seeded.fails("add", str(tmp_path / "nope.mp4"), match="No such file")
    assert seeded.snapshot() == before


def test_unreadable_file(seeded: Node, tmp_path: Path) -> None:
    """Tried: adding a file the user may not read (run as an unprivileged user when the tests run as root)."""
    shared = Path(os.environ.get("TMPDIR", "/tmp")) / f"medianode-unreadable-{os.getpid()}"
    shared.mkdir(mode=0o777, exist_ok=True)
    os.chmod(shared, 0o777)
    secret = shared / "secret.mp4"
    secret.write_bytes(b"x" * 100)
    os.chmod(secret, 0)
    try:
        prefix: tuple[str, ...] = ()
        node = seeded
        if os.geteuid() == 0:
            if not shutil.which("setpriv"):
                pytest.skip("running as root without setpriv: cannot make a file unreadable")
            node = Node(shared / "node")
            prefix = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
            (shared / "readable").write_bytes(b"fine")
            assert node.run("add", str(shared / "readable"), prefix=prefix).code == 0
        before = node.snapshot()
        node.fails("add", str(secret), match="Permission denied", prefix=prefix)
        assert node.snapshot() == before
    finally:
        shutil.rmtree(shared, ignore_errors=True)


@pytest.mark.parametrize(
    "bad", ["notacid", "bafy!!", "Qm123", "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyk"]
)
def test_malformed_cid(seeded: Node, bad: str) -> None:
    """Tried: cat, get, stat, pin add and export with malformed CIDs."""
    before = seeded.snapshot()
    for command in (("cat", bad), ("get", bad), ("stat", bad), ("pin", "add", bad), ("export", bad, "-o", "x.car")):
        seeded.fails(*command, match="invalid CID")
    assert seeded.snapshot() == before


def test_cid_not_in_store(seeded: Node) -> None:
    """Tried: commands on a well-formed CID this node does not have."""
    absent = "bafkreie43rmrkrsaa3d6wejceoptbb6eplcakj44pjyagbkuf6chzrf7nu"
    before = seeded.snapshot()
    for command in (("cat", absent), ("stat", absent), ("pin", "add", absent), ("ls", absent)):
        seeded.fails(*command, match="not in the store")
    assert seeded.snapshot() == before


def test_errors_are_one_line_without_traceback(seeded: Node, tmp_path: Path) -> None:
    """Tried: cat of a directory, stat of a malformed CID, cat of a CID the store lacks: each fails with exit 1 and
    one line on stderr, never a traceback."""
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "clip.mp4").write_bytes(gen(1000, b"folder"))
    directory = seeded.ok("add", "-r", str(tmp_path / "folder"), "--json").json["cid"]
    absent = "bafkreie43rmrkrsaa3d6wejceoptbb6eplcakj44pjyagbkuf6chzrf7nu"
    before = seeded.snapshot()
    for command, match in (
        (("cat", directory), f"{directory} is a directory, not a file"),
        (("stat", "bafy!!"), "invalid CID 'bafy!!'"),
        (("cat", absent), f"{absent} is not in the store"),
    ):
        result = seeded.fails(*command, match=match)
        assert result.code == 1 and "Traceback" not in result.stderr, result
    assert seeded.snapshot() == before


def test_serve_on_a_busy_port(node: Node) -> None:
    """Tried: serve with its gateway address taken by another listener: one line, exit 1, no exception group."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = node.fails("serve", "--gateway", f"127.0.0.1:{port}", "--no-s3", "--listen", "/ip4/127.0.0.1/tcp/0",
                            "--workers", "1", "--no-mdns", match="address already in use")  # fmt: skip
    assert result.code == 1 and "Traceback" not in result.stderr, result


def _car(node: Node, tmp_path: Path, name: str) -> tuple[str, bytes]:
    (tmp_path / "carsrc").write_bytes(gen(2 * MiB, b"car"))
    source = Node(tmp_path / "carsrc-node")
    cid = source.ok("add", str(tmp_path / "carsrc"), "--json").json["cid"]
    source.ok("export", cid, "-o", str(tmp_path / name))
    return cid, (tmp_path / name).read_bytes()


@pytest.mark.parametrize("cut", [5, 60, 300000, -1000])
def test_truncated_car(seeded: Node, tmp_path: Path, cut: int) -> None:
    """Tried: importing a CAR cut off inside the header, a section header, and block data."""
    cid, car = _car(seeded, tmp_path, "whole.car")
    (tmp_path / "cut.car").write_bytes(car[:cut])
    before = seeded.snapshot()
    seeded.fails("import", str(tmp_path / "cut.car"), match="truncated")
    assert seeded.snapshot() == before
    assert seeded.run("stat", cid).code != 0


def test_corrupt_car(seeded: Node, tmp_path: Path) -> None:
    """Tried: importing a CAR with one flipped byte inside a block, and a compressed CAR with garbage."""
    _, car = _car(seeded, tmp_path, "whole.car")
    flipped = bytearray(car)
    flipped[len(car) // 2] ^= 0x40
    (tmp_path / "bad.car").write_bytes(bytes(flipped))
    before = seeded.snapshot()
    seeded.fails("import", str(tmp_path / "bad.car"), match="match")
    (tmp_path / "bad.car.zst").write_bytes(b"\x28\xb5\x2f\xfd" + os.urandom(200))
    seeded.fails("import", str(tmp_path / "bad.car.zst"), match="zstd")
    assert seeded.snapshot() == before


def test_quota_exceeded(node: Node, tmp_path: Path) -> None:
    """Tried: pinning a file larger than the quota's remaining room."""
    node.ok("init", "--quota", "3MiB")
    (tmp_path / "one").write_bytes(gen(2 * MiB, b"one"))
    (tmp_path / "two").write_bytes(gen(2 * MiB, b"two"))
    node.ok("add", str(tmp_path / "one"))
    before = node.snapshot()
    node.fails("add", str(tmp_path / "two"), match="quota")
    assert node.snapshot() == before


def test_full_disk(tmp_path: Path) -> None:
    """Tried: adding 8 MiB to a store on a 4 MiB filesystem (a real tmpfs in a private mount namespace)."""
    if not shutil.which("unshare"):
        pytest.skip("unshare is not installed: cannot mount a small filesystem")
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a mount namespace here: {probe.stderr.decode().strip()}")
    mount = tmp_path / "small"
    mount.mkdir()
    (tmp_path / "big").write_bytes(gen(8 * MiB, b"big"))
    (tmp_path / "little").write_bytes(gen(100000, b"little"))
    data = mount / "node"
    script = f"""
set -u
mount -t tmpfs -o size=4m tmpfs {mount}
medianode() {{ MEDIANODE_DATA={data} python3 -m node.cli "$@"; }}
medianode add {tmp_path / "little"} --json || exit 10
medianode add {tmp_path / "big"} 2> {tmp_path / "err"}; echo "exit=$?" > {tmp_path / "code"}
medianode repo stat --json > {tmp_path / "stat"}
medianode verify --json > {tmp_path / "verify"} || exit 11
ls {data}/store/packs > {tmp_path / "packs"}
cid=$(medianode add {tmp_path / "little"} --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["cid"])')
medianode cat "$cid" | cmp - {tmp_path / "little"} || exit 12
"""
    env = {**os.environ, "PATH": f"{Path(os.sys.executable).parent}:{os.environ['PATH']}"}
    run = subprocess.run(
        ["unshare", "-rm", "bash", "-c", script],
        capture_output=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr.decode()
    assert (tmp_path / "code").read_text().strip() == "exit=1"
    err = (tmp_path / "err").read_text().strip().splitlines()
    assert len(err) == 1 and "no space left" in err[0].lower(), err
    import json

    assert json.loads((tmp_path / "stat").read_text())["blocks"] == 1
    assert len((tmp_path / "packs").read_text().split()) == 1  # the big add left no pack behind
