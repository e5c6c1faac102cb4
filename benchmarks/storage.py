"""Storage benchmark: add, get and range reads beside a reference measured in the same run.

    python benchmarks/storage.py [--size-mib 1024] [--rss-size-mib 2048] [--dir DIR]

Prints one table. References: ``openssl dgst -sha256`` (the hashing floor) and
``dd conv=fsync`` (the durable-write floor: add must also write every byte and
fsync it) for ``medianode add``; ``cp`` for ``medianode get``; ``os.pread`` of
the same ranges from the original file for range reads through the store API.
Each figure is the best of ``--repeat`` runs, because this machine's disk
throughput varies by 2x from one run to the next. Peak RSS comes from GNU
time (``/usr/bin/time -f %M``), since ``wait4`` would count the benchmark's
own memory at fork. Input files are synced and read once before timing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchlib import REPO, MiB, make_file, medianode, warm

GNU_TIME = "/usr/bin/time"


def run(cmd: list[str]) -> tuple[float, int, bytes]:
    """Run a command; return (seconds, peak RSS in bytes or -1 if unknown, stdout)."""
    rss_file = Path(tempfile.mktemp(prefix="medianode-rss-"))
    wrapped = [GNU_TIME, "-f", "%M", "-o", str(rss_file), *cmd] if os.path.exists(GNU_TIME) else cmd
    start = time.perf_counter()
    proc = subprocess.run(wrapped, capture_output=True)
    elapsed = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.decode()}")
    rss = int(rss_file.read_text().split()[-1]) * 1024 if rss_file.exists() else -1
    rss_file.unlink(missing_ok=True)
    return elapsed, rss, proc.stdout


def best(times: int, measure: Callable[[], tuple[float, int, bytes]]) -> tuple[float, int, bytes]:
    """Fastest of ``times`` runs, with the highest RSS seen."""
    runs = [measure() for _ in range(times)]
    fastest = min(runs, key=lambda r: r[0])
    return fastest[0], max(r[1] for r in runs), fastest[2]


def row(name: str, ours: float, ref_name: str, ref: float, target: str) -> str:
    return f"| {name} | {ours:,.0f} | {ref_name} | {ref:,.0f} | {ours / ref:.2f} | {target} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rss-size-mib", type=int, default=2048)
    parser.add_argument("--ranges", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, help="work directory (default: a temporary one, removed after)")
    args = parser.parse_args()
    os.chdir(REPO)
    work = Path(tempfile.mkdtemp(prefix="medianode-bench-", dir=args.dir))
    try:
        size = args.size_mib * MiB
        src = work / "clip.bin"
        make_file(src, size)
        warm(src)
        lines = [
            "| measurement | medianode MB/s | reference | reference MB/s | ratio | target |",
            "|---|---|---|---|---|---|",
        ]

        n = args.repeat
        openssl_s, _, _ = best(n, lambda: run(["openssl", "dgst", "-sha256", str(src)]))
        sha256sum_s, _, _ = run(["sha256sum", str(src)])

        def durable_copy() -> tuple[float, int, bytes]:
            result = run(["dd", f"if={src}", f"of={work / 'dd.bin'}", "bs=4M", "conv=fsync"])
            (work / "dd.bin").unlink()
            os.sync()
            return result

        dd_s, _, _ = best(n, durable_copy)

        def add() -> tuple[float, int, bytes]:
            shutil.rmtree(work / "node", ignore_errors=True)
            os.sync()
            return run(medianode(work / "node", "add", str(src), "--json"))

        add_s, add_rss, out = best(n, add)
        cid = json.loads(out)["cid"]
        mbps = size / 1e6
        lines.append(row(f"add {args.size_mib} MiB", mbps / add_s, "openssl dgst -sha256", mbps / openssl_s, ">= 0.5"))
        lines.append(row(f"add {args.size_mib} MiB", mbps / add_s, "dd conv=fsync (durable write)", mbps / dd_s, ""))
        lines.append(f"| (for scale) | | sha256sum | {mbps / sha256sum_s:,.0f} | | |")

        def copy() -> tuple[float, int, bytes]:
            result = run(["cp", str(src), str(work / "cp.bin")])
            (work / "cp.bin").unlink()
            return result

        def get() -> tuple[float, int, bytes]:
            result = run(medianode(work / "node", "get", cid, "-o", str(work / "got.bin")))
            if not filecmp_equal(src, work / "got.bin"):
                raise SystemExit("get returned different bytes")
            (work / "got.bin").unlink()
            return result

        cp_s, _, _ = best(n, copy)
        get_s, get_rss, _ = best(n, get)
        lines.append(row(f"get {args.size_mib} MiB", mbps / get_s, "cp", mbps / cp_s, ">= 0.5"))

        ours, ref = range_reads(work / "node", cid, src, size, args.ranges)
        lines.append(row(f"{args.ranges} random 1 MiB ranges (store API)", ours, "os.pread", ref, ">= 0.5"))

        shutil.rmtree(work / "node")
        src.unlink()
        big = work / "big.bin"
        make_file(big, args.rss_size_mib * MiB)
        warm(big)
        _, add_big_rss, out = run(medianode(work / "rss", "add", str(big), "--json"))
        big_cid = json.loads(out)["cid"]
        _, get_big_rss, _ = run(medianode(work / "rss", "get", big_cid, "-o", str(work / "big-got.bin")))
        lines.append("")
        lines.append("| peak RSS | MiB | target |")
        lines.append("|---|---|---|")
        lines.append(f"| add {args.size_mib} MiB | {add_rss / MiB:.0f} | |")
        lines.append(f"| get {args.size_mib} MiB | {get_rss / MiB:.0f} | |")
        lines.append(f"| add {args.rss_size_mib} MiB | {add_big_rss / MiB:.0f} | < 150 |")
        lines.append(f"| get {args.rss_size_mib} MiB | {get_big_rss / MiB:.0f} | < 150 |")
        print("\n".join(lines))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def filecmp_equal(a: Path, b: Path) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(16 * MiB), fb.read(16 * MiB)
            if x != y:
                return False
            if not x:
                return True


def range_reads(data_dir: Path, cid_text: str, src: Path, size: int, count: int) -> tuple[float, float]:
    """MB/s of ``count`` random 1 MiB ranges through BlockStore.read_range and through os.pread."""
    sys.path.insert(0, str(REPO))
    from node.config import load
    from node.storage.cid import CID
    from node.storage.store import BlockStore

    config = load(data_dir)
    store = BlockStore(data_dir / "store", config.store)
    cid = CID.parse(cid_text)
    rng = random.Random(1)
    offsets = [rng.randrange(0, size - MiB) for _ in range(count)]
    fd = os.open(src, os.O_RDONLY)
    try:
        for off in offsets[:5]:  # warm both paths (layout cache, open packs) and check them against each other
            if b"".join(store.read_range(cid, off, MiB)) != os.pread(fd, MiB, off):
                raise SystemExit("range read returned different bytes")
        best_ours = best_ref = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for off in offsets:
                for _piece in store.read_range(cid, off, MiB):
                    pass
            best_ours = min(best_ours, time.perf_counter() - start)
            start = time.perf_counter()
            for off in offsets:
                os.pread(fd, MiB, off)
            best_ref = min(best_ref, time.perf_counter() - start)
    finally:
        os.close(fd)
        store.close()
    return count * MiB / best_ours / 1e6, count * MiB / best_ref / 1e6


if __name__ == "__main__":
    main()
