"""``tools/run``'s real mode (fabric/sim/local.py): one real host, and a newcomer's first server.

What `tools/run` execs after installing: fabric-all in its own namespace on the libvirt
and linux drivers, the API forwarded to the root namespace, the cloud seeded through the
public API. The test then types what it prints: the real `openstack` CLI creates a
server with the printed flavor, image and network, and the printed ping command reaches
the guest; SIGTERM removes every guest, process and the namespace.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fabric.sim import local, netns
from tests.fixtures.cloud import qemu_pids
from tests.fixtures.databases import unavailable
from tests.fixtures.processes import REPO, free_port, wait_until

pytestmark = [pytest.mark.functional, pytest.mark.slow]

CLOUD = "runtest"
START_DEADLINE = 180.0


@dataclasses.dataclass
class Running:
    popen: subprocess.Popen
    instructions: str
    namespace: str

    @property
    def env(self) -> dict[str, str]:
        """The OS_* variables the instructions export."""
        return dict(re.findall(r"(OS_[A-Z_]+)=(\S+)", self.instructions))


def _read_until(popen: subprocess.Popen, marker: str, deadline: float) -> str:
    """What ``popen`` printed up to the line holding ``marker``; fails when it exits or time runs out."""
    lines: queue.Queue[str] = queue.Queue()
    # A reader thread: select() cannot see lines already in the text wrapper's buffer.
    threading.Thread(target=lambda: [lines.put(line) for line in popen.stdout] and None, daemon=True).start()
    seen: list[str] = []
    while not seen or marker not in seen[-1]:
        try:
            seen.append(lines.get(timeout=max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            state = "exited" if popen.poll() is not None else "is still starting"
            pytest.fail(f"tools/run printed no {marker!r} within {START_DEADLINE:g}s ({state}):\n{''.join(seen)}")
    return "".join(seen)


@pytest.fixture
def running(guest, tmp_path):
    reason = local.why_real_guests_cannot_run()
    if reason:
        unavailable(reason)
    guest_json = tmp_path / "guest.json"
    guest_json.write_text(json.dumps(dataclasses.asdict(guest)))
    popen = subprocess.Popen(
        [sys.executable, "-m", "fabric.sim.local", "--port", str(free_port()), "--guest-image", str(guest_json),
         "--log-dir", str(tmp_path / "logs"), "--cloud", CLOUD],
        cwd=REPO, env=os.environ | {"PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        instructions = _read_until(popen, local.READY_LINE, time.monotonic() + START_DEADLINE)
        yield Running(popen, instructions, f"fab-{CLOUD}-h1")
    finally:
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(90)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(10)


def test_the_printed_commands_boot_a_guest_that_answers_ping_and_stopping_removes_everything(running, osc):
    # Exactly what the instructions say to type.
    create = re.search(r"openstack (server create .* vm1)", running.instructions)[1].split()
    server = osc(running.env, *create)
    assert server["status"] == "ACTIVE"
    # As a user would: once the console says the guest is up (it boots after ACTIVE), the
    # printed ping line, run by a shell as printed (the openstack script on PATH).
    wait_until(lambda: "fabric-guest: ready" in osc(running.env, "console", "log", "show", "vm1", json_out=False),
               timeout=120, what="the guest's console to say it is ready", interval=0.5)
    [ping_line] = [line.strip() for line in running.instructions.splitlines() if "busybox ping" in line]
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    pinged = subprocess.run(["bash", "-c", ping_line], capture_output=True, text=True, timeout=120,
                            env=os.environ | running.env | {"PATH": path})
    assert pinged.returncode == 0 and " 0% packet loss" in pinged.stdout, pinged.stdout + pinged.stderr
    qemus = qemu_pids(running.namespace)
    assert len(qemus) == 1

    running.popen.send_signal(signal.SIGTERM)
    assert running.popen.wait(90) == 0
    assert running.namespace not in netns.list_namespaces()
    assert not any(netns.start_time(pid) for pid in qemus), "the guest's QEMU outlived tools/run"
    assert not Path(f"/run/fabric-sim/fab-{CLOUD}").exists()
