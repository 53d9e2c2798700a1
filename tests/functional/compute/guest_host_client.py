"""Drive a simulated compute host (compute_host.py) running inside a test namespace."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from fabric import exception
from tests.fixtures.netns import pids_in

REPO = Path(__file__).resolve().parents[3]


class GuestHost:
    """compute_host.py in a process inside namespace ``ns``; its files under ``root``."""

    def __init__(self, ns: str, root: Path, log: Path, bridge: str, gateway_cidr: str, image: dict,
                 uri: str | None = None, enter: list[str] | None = None) -> None:
        """``enter``: argv prefix that puts the process in its namespaces (default ``ip netns exec ns``)."""
        self.ns = ns
        self.root = root
        self.instances = root / "instances"
        self._log = open(log, "wb")
        env = dict(os.environ, PYTHONPATH=str(REPO), LIBVIRT_LOG_OUTPUTS="3:stderr")
        self.proc = subprocess.Popen(
            [*(enter or ["ip", "netns", "exec", ns]), sys.executable, "-W", "ignore", "-m",
             "tests.functional.compute.compute_host", str(root), bridge, gateway_cidr, json.dumps(image),
             *([uri] if uri else [])],
            cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True)
        hello = self._read()
        self.virt_type = hello["virt_type"]
        #: The hosts file of the network worker's dnsmasq for the host's network.
        self.dhcp_hosts = Path(hello["dhcp_hosts"])

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"guest host exited ({self.proc.poll()})")
        return json.loads(line)

    def call(self, method: str, **args):
        """Call a method in the host process (see compute_host.py); its FabricError is raised here."""
        self.proc.stdin.write(json.dumps({"method": method, "args": args}) + "\n")
        self.proc.stdin.flush()
        reply = self._read()
        if not reply["ok"]:
            raise exception.rebuild(reply["error"])
        return reply["result"]

    def qemu_pids(self) -> list[int]:
        """QEMU processes in this host's network namespace."""
        found = []
        for pid in pids_in(self.ns):
            try:
                if b"qemu-system" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
            except OSError:
                continue
        return found

    def close(self) -> None:
        """End input (the host tears down and exits); kill it, and any QEMU left, by PID if it hangs."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(30)
            except (subprocess.TimeoutExpired, BrokenPipeError):
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(10)
        for pid in self.qemu_pids():
            os.kill(pid, signal.SIGKILL)
        self._log.close()
