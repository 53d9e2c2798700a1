"""The RPC layer in a monkey-patched process (how the bin/ launchers run it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.functional


def test_rpc_works_in_a_monkey_patched_process(rabbit, signing_keys):
    worker = Path(__file__).with_name("patched_worker.py")
    root = Path(__file__).parents[3]
    done = subprocess.run([sys.executable, "-W", "ignore", str(worker), rabbit.url, rabbit.name],
                          capture_output=True, text=True, timeout=120, cwd=root,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                               "FABRIC_SIGNING_KEY_DIR": str(signing_keys)})
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    assert done.stdout.splitlines() == ["call ok", "unroutable ok", "concurrent calls ok",
                                        "casts across a reconnect ok"]
