"""The browser player's pure parts (the piece picker, the codec against the wire contract, the clip builder against
the shared clip vectors), run under Node.js's own test runner."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import TESTS

JS_TESTS = TESTS / "js"


def test_piece_picker_under_node() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js not found: the JavaScript tests need it (Debian: apt-get install nodejs)")
    result = subprocess.run([node, "--test", str(JS_TESTS)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout and "# pass 0" not in result.stdout
