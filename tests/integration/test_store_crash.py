"""The store under kill -9: a writer process killed at random instants leaves a store that opens consistent."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO
from node.storage.store import BlockStore


def pack_files(store: BlockStore) -> list[str]:
    return sorted(os.listdir(store.root / "packs"))


WRITER = """
import sys, time
from pathlib import Path
from node.storage.store import BlockStore
from node.storage.cid import CID, RAW
store = BlockStore(Path(sys.argv[1]))
i = 0
while True:
    with store.batch() as batch:
        data = (b"%08d" % i) * 32768
        batch.put_verified(CID.for_block(RAW, data), data)
        cid = CID.for_block(RAW, data)
        batch.commit([cid], f"b{i}", len(data), pin=True)
    print(i, flush=True)
    i += 1
"""


def test_kill_9_mid_write_leaves_a_consistent_store(tmp_path: Path) -> None:
    """Kill a writer at random instants; after each restart every indexed block reads back and verifies,
    no pack is left that the index does not know, and every committed pin is complete."""
    data_dir = tmp_path / "s"
    rng = random.Random(3)
    for _round in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(data_dir)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        assert proc.stdout is not None
        proc.stdout.readline()  # at least one commit happened
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        store = BlockStore(data_dir)
        assert store.verify() == []
        conn = sqlite3.connect(data_dir / "index.sqlite")
        known = {row[0] for row in conn.execute("SELECT name FROM packs")}
        conn.close()
        assert set(pack_files(store)) == known
        for cid, _, _ in store.pins():
            assert store.dag_counts(cid)[1] == 0
        store.close()
