"""``tools/hosts``: a run killed with SIGKILL leaves namespaces behind; the next
``tools/hosts cleanup`` removes them and what runs inside them, and nothing
whose name is not one of its own."""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys

import pytest

from fabric.sim import hosts as sim
from fabric.sim.netns import SimulationError, is_same_process, list_namespaces, pids_in, start_time
from tests.fixtures.databases import create_schema_database, unavailable
from tests.fixtures.netns import sh
from tests.fixtures.processes import REPO, wait_until

pytestmark = [pytest.mark.functional, pytest.mark.slow]


def test_a_killed_run_is_cleaned_up_by_name_and_nothing_else(database_servers, rabbit_vhost, spawn, tmp_path):
    try:
        sim.preflight()
    except SimulationError as exc:
        unavailable(exc.message)
    cloud = f"t{secrets.token_hex(3)}"
    conf = tmp_path / "fabric.conf"
    conf.write_text(f"[DEFAULT]\ndata_dir = {tmp_path / 'data'}\n[database]\n"
                    f"url = {create_schema_database(database_servers)}\n[rpc]\ntransport_url = {rabbit_vhost}\n")
    tool = spawn([str(REPO / "tools/hosts"), "up", "1", "--config", str(conf), "--cloud", cloud,
                  "--log-dir", str(tmp_path / "logs")], name="tools-hosts")
    tool.wait_for_log("up; Ctrl-C", timeout=180)
    host_ns, underlay_ns = f"fab-{cloud}-h1", f"fab-{cloud}-ul"
    bystander = f"fab-{cloud}-keep"  # fabric's prefix and this cloud's name, but not a name the tool gives
    sh("ip", "netns", "add", bystander)
    guest = None
    try:
        # Something still running inside the host, as a guest would be.
        guest = subprocess.Popen(["ip", "netns", "exec", host_ns, sys.executable, "-c", "import time; time.sleep(600)"],
                                 start_new_session=True)
        wait_until(lambda: guest.pid in pids_in(host_ns), 10, "the stand-in guest to start")
        guest_started = start_time(guest.pid)
        workers = [(p, start_time(p)) for p in pids_in(host_ns) if p != guest.pid]
        assert len(workers) >= 2, "the host's compute and network workers run inside its namespace"

        tool.signal(signal.SIGKILL)
        tool.wait(10)
        assert {host_ns, underlay_ns} <= set(list_namespaces())  # left behind
        assert sim.StateDir(sim.state_dir_of("fab", cloud)).path.exists()

        done = subprocess.run([str(REPO / "tools/hosts"), "cleanup"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert f"namespace {host_ns}" in done.stdout and f"namespace {underlay_ns}" in done.stdout
        assert not {host_ns, underlay_ns} & set(list_namespaces())
        assert bystander in list_namespaces()
        guest.wait(10)
        assert not is_same_process(guest.pid, guest_started)
        assert not [pid for pid, started in workers if is_same_process(pid, started)]
        assert not sim.state_dir_of("fab", cloud).exists()
    finally:
        if guest is not None and guest.poll() is None:
            guest.kill()
            guest.wait(10)
        sh("ip", "netns", "del", bystander, check=False)
        sim.cleanup_leftovers("fab", cloud=cloud)
