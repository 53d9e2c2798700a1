"""``FABRIC_CONFIG`` names the settings file, as the README says: a worker started with it
and no --config-file reads that file (and the variable is not taken for a setting)."""

from __future__ import annotations

import json
import sys
import urllib.request

import pytest

from tests.fixtures.processes import REPO, free_port, wait_until

pytestmark = [pytest.mark.functional]


def test_a_worker_started_with_fabric_config_reads_that_file(spawn, tmp_path):
    port = free_port()
    conf = tmp_path / "from-env.conf"
    conf.write_text(f"[DEFAULT]\ndata_dir = {tmp_path / 'data'}\nhost = from-env\n"
                    f"[api]\nlisten = 127.0.0.1\nport = {port}\nadmin_password = env-pw\n"
                    f"[objectstore]\nlisten = 127.0.0.1\nport = {free_port()}\n"
                    f"[dashboard]\nport = {free_port()}\n")
    worker = spawn([sys.executable, str(REPO / "bin" / "fabric-all")], env={"FABRIC_CONFIG": str(conf)},
                   name="fabric-all-env")
    worker.wait_for_log("fabric API listening on", timeout=120)
    assert f"127.0.0.1:{port}" in worker.log()  # the port the file names, not the default 8774

    def token() -> int:
        body = json.dumps({"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "domain": {"id": "default"}, "password": "env-pw"}}}}}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v3/auth/tokens", body,
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status

    assert wait_until(token, 30, "a token for the admin the file's password made", workers=[worker]) == 201
    assert (tmp_path / "data" / "fabric.sqlite").exists()  # the file's data_dir
