"""Where the keys come from: fabric-all makes them on its first start, a worker that lacks
its role's key refuses to start, and ``fabric-manage keys`` generates, rotates and lists."""

from __future__ import annotations

import stat
import subprocess
import sys

from fabric.cmd import workers
from fabric.rpc import signing
from tests.fixtures.processes import REPO


def test_fabric_all_generates_every_roles_keys_on_first_start(spawn, tmp_path):
    data_dir = tmp_path / "data"
    worker = spawn([sys.executable, str(REPO / "bin/fabric-all")],
                   env={"FABRIC_DEFAULT_DATA_DIR": str(data_dir), "FABRIC_DEFAULT_HOST": "allinone",
                        "FABRIC_SIGNING_KEY_DIR": "",  # the default: data_dir/keys
                        "FABRIC_API_PORT": "0", "FABRIC_OBJECTSTORE_PORT": "0"},
                   name="fabric-all")
    for binary in workers.ALL_IN_ONE:
        worker.wait_for_log(f"Started {binary} on host allinone")
    assert f"Generated RPC signing keys for every role in {data_dir / 'keys'}" in worker.log()
    for role in signing.ROLES:
        for suffix in (".key", ".verify"):
            mode = (data_dir / "keys" / f"{role}{suffix}").stat().st_mode
            assert stat.S_IMODE(mode) == 0o600, (role, suffix, oct(mode))
    worker.signal(2)
    assert worker.wait(30) == 0, worker.log()


def test_a_worker_without_its_roles_key_refuses_to_start(spawn, tmp_path):
    signing.generate(tmp_path / "keys", ["api"])
    worker = spawn([sys.executable, str(REPO / "bin/fabric-ipam")],
                   env={"FABRIC_DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite'}",
                        "FABRIC_SIGNING_KEY_DIR": str(tmp_path / "keys")}, name="ipam")
    assert worker.wait(60) != 0
    log = worker.log()
    assert "ipam.key is missing" in log, log


def test_manage_keys_generate_rotate_retire_list(tmp_path):
    def manage(*args):
        return subprocess.run([sys.executable, str(REPO / "bin/fabric-manage"), "keys", *args], capture_output=True,
                              text=True, env={"FABRIC_SIGNING_KEY_DIR": str(tmp_path), "PYTHONPATH": str(REPO)},
                              timeout=120)

    assert "Generated keys for api, scheduler, compute" in manage("generate").stdout
    first = signing.read_masters(tmp_path, "compute")[0].kid
    assert "compute: new key" in manage("rotate", "compute").stdout
    listing = manage("list", "compute").stdout
    assert f"compute  {first}" in listing and "accepted" in listing and "signs" in listing
    manage("retire", "compute")
    assert [k.kid for k in signing.read_masters(tmp_path, "compute")] != [first]
    assert len(signing.read_masters(tmp_path, "compute")) == 1
    bad = manage("rotate", "bogus")
    assert bad.returncode == 2 and "bogus" in bad.stderr and "accepted roles are" in bad.stderr
