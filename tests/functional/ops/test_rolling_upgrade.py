"""A rolling upgrade: workers of the previous release and of this one, on one database and broker.

The previous release is the commit before the one that introduced this release's envelope
version (``fabric/rpc/envelope.py``; before that commit exists, the last commit), exported
with ``git archive``. As an operator upgrades:

1. the previous release's ``fabric-manage db sync`` makes its schema; its workers would run;
2. this release's ``fabric-manage db sync --expand`` adds what it needs, old workers unharmed;
3. IPAM, the scheduler and host h1's compute and network stay at the previous release, while
   the API, the objectstore and host h2's workers run this release, set to write the
   previous envelope version (``FABRIC_RPC_ENVELOPE_VERSION``);
4. servers created through the API are built on both hosts: every message between the two
   releases is read (calls, their replies in the caller's version, casts);
5. unpinned, this release's message is refused by the previous release's scheduler (the
   control: the old workers really run the old code, and the pin is what made 4 work);
6. ``db sync --contract`` once the old workers are gone.

Fake virt and network drivers; every worker its own process over RabbitMQ and PostgreSQL.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from fabric import config, rpc
from fabric.rpc import envelope
from tests.fixtures.process_cloud import COMPUTE, Api, prepare
from tests.fixtures.processes import REPO, free_port, stop_process, wait_until

pytestmark = [pytest.mark.functional, pytest.mark.slow]

PASSWORD = "rolling-admin-pw"
SERVERS = 6


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"git {' '.join(args)} failed (the test needs the repository's history): {done.stderr}")
    return done.stdout.strip()


def previous_release() -> str:
    """The newest commit that writes the previous envelope version."""
    introduced = _git("log", "-1", "--format=%H", f"-SVERSION = {envelope.VERSION}", "--", "fabric/rpc/envelope.py")
    commit = _git("rev-parse", f"{introduced}^" if introduced else "HEAD")
    old = _git("show", f"{commit}:fabric/rpc/envelope.py")
    assert f"VERSION = {envelope.VERSION - 1}\n" in old, f"{commit} does not write envelope version {envelope.VERSION - 1}"
    return commit


def export(commit: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def _manage(tree: Path, env: dict[str, str], *args: str) -> str:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")} | env
    environment["PYTHONPATH"] = str(tree)
    done = subprocess.run([sys.executable, str(tree / "bin" / "fabric-manage"), *args], capture_output=True,
                          text=True, env=environment, timeout=120, check=False)
    assert done.returncode == 0, f"{tree.name}: fabric-manage {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


def test_workers_of_the_previous_release_and_this_one_build_servers_together(make_empty_database, spawn, tmp_path,
                                                                             rabbit_vhost):
    old_tree = export(previous_release(), tmp_path / "previous")
    db_url = make_empty_database("postgresql")
    base = {"FABRIC_DATABASE_URL": db_url, "FABRIC_RPC_TRANSPORT_URL": rabbit_vhost}
    _manage(old_tree, base, "db", "sync")
    _manage(old_tree, base, "bootstrap", "--admin-password", PASSWORD)
    expanded = _manage(REPO, base, "db", "sync", "--expand")
    assert "upgraded" in expanded or "nothing to do" in expanded

    api_port, s3_port = free_port(), free_port()
    common = base | {"FABRIC_DEFAULT_DATA_DIR": str(tmp_path / "data"), "FABRIC_COMPUTE_DRIVER": "fake",
                     "FABRIC_NETWORK_DRIVER": "fake", "FABRIC_SERVICE_ADVERTISE_ADDRESS": "127.0.0.1",
                     "FABRIC_SERVICE_REPORT_INTERVAL": "2", "FABRIC_COMPUTE_RESOURCE_REPORT_INTERVAL": "2",
                     "FABRIC_DATABASE_POOL_SIZE": "3", "FABRIC_API_LISTEN": "127.0.0.1",
                     "FABRIC_API_PORT": str(api_port), "FABRIC_OBJECTSTORE_LISTEN": "127.0.0.1",
                     "FABRIC_OBJECTSTORE_PORT": str(s3_port)}
    # This release's workers write what the previous one reads until the upgrade is done.
    pinned = {"FABRIC_RPC_ENVELOPE_VERSION": str(envelope.VERSION - 1)}
    unset = [arg for key in sorted(os.environ) if key.startswith("FABRIC_TEST_") for arg in ("-u", key)]
    plan = [(old_tree, "fabric-ipam", "ctl"), (old_tree, "fabric-scheduler", "ctl"),
            (old_tree, "fabric-network", "h1"), (old_tree, "fabric-compute", "h1"),
            (REPO, "fabric-objectstore", "ctl"), (REPO, "fabric-network", "h2"), (REPO, "fabric-compute", "h2"),
            (REPO, "fabric-api", "ctl")]
    workers = []
    for tree, binary, host in plan:
        env = common | {"FABRIC_DEFAULT_HOST": host} | (pinned if tree == REPO else {})
        # ``env PYTHONPATH=...`` (exec, same PID) picks the release's own package over the checkout's.
        argv = ["env", *unset, f"PYTHONPATH={tree}", sys.executable, str(tree / "bin" / binary)]
        workers.append(spawn(argv, env=env, name=f"{tree.name}-{binary}-{host}"))
    for worker, (_, binary, host) in zip(workers, plan, strict=True):
        worker.wait_for_log(f"Started {binary} on host {host}", timeout=120)

    api = Api(api_port)
    project = api.login(PASSWORD)
    body = prepare(api, project, SERVERS)
    ids = [api.ok("POST", f"{COMPUTE}/servers", {"server": dict(body["server"], name=f"roll-{n}")})["server"]["id"]
           for n in range(SERVERS)]

    def servers() -> dict[str, dict]:
        return {s["id"]: s for s in api.ok("GET", f"{COMPUTE}/servers/detail")["servers"] if s["id"] in ids}

    wait_until(lambda: all(s["status"] == "ACTIVE" for s in servers().values()) and len(servers()) == SERVERS,
               90, "every server ACTIVE", workers=workers, interval=0.5)
    hosts = {s["OS-EXT-SRV-ATTR:host"] for s in servers().values()}
    assert hosts == {"h1", "h2"}, f"built only on {hosts}: both releases' compute hosts must build"
    assert all(s["addresses"] for s in servers().values())  # the old IPAM answered the new computes
    for worker in workers:
        assert "Malformed message" not in worker.log(), f"{worker.name} refused a message of the other release"

    # The control: unpinned, this release writes what the previous one cannot read. The old
    # scheduler refuses it (and so is really the previous release's code).
    scheduler = workers[1]
    transport = rpc.get_transport(config.Settings().replace(rpc={"transport_url": rabbit_vhost}).rpc)
    try:
        rpc.RPCClient(transport, rpc.Target(topic="scheduler", server="ctl")).cast(None, "describe")
    finally:
        transport.cleanup()
    wait_until(lambda: "Malformed message" in scheduler.log(), 30, "the previous release to refuse a newer envelope",
               workers=[scheduler])
    assert f"Envelope version {envelope.VERSION} is newer than this worker reads" in scheduler.log()

    # The old workers leave; what only they needed can go.
    for worker, (tree, _, _) in zip(workers, plan, strict=True):
        if tree == old_tree:
            stop_process(worker.popen)
    contracted = _manage(REPO, base | {"FABRIC_SERVICE_SERVICE_DOWN_TIME": "0.01"}, "db", "sync", "--contract")
    assert "upgraded" in contracted or "nothing to do" in contracted
