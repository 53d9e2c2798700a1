"""The driver under eventlet monkey patching: kernel work never blocks the hub."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.functional.network.test_reconcile import ROOT


def test_kernel_work_runs_off_the_hub_and_concurrent_plugs_all_land(netns, tmp_path):
    h1 = netns("g1")
    done = subprocess.run([sys.executable, "-W", "ignore", "-m", "tests.functional.network.green_host",
                           h1, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["hub_free"] is True
    assert len(result["plugged"]) == 16
    assert result["enslaved"] == result["plugged"]
