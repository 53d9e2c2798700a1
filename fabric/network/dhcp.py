"""One dnsmasq per network on a host (per endpoint on a routed network), serving static
MAC -> address entries.

Each server's files live in ``<state_dir>/dhcp/<network id>/``: the hosts file
(rewritten atomically; the server is told with SIGHUP), its pid file and its
lease file. A running server is recognised by the pid in its pid file *and*
that process's command line naming that pid file, so a recycled pid is never
signalled. dnsmasq daemonises itself, so servers outlive a killed worker and
are found again from their pid files on the next start; :meth:`DhcpServers.stop`
and :meth:`DhcpServers.stop_all` leave no process behind.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import time

from fabric import exception
from fabric.network.kernel import Kernel


def _alive_with(pid: int, marker: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read().decode(errors="replace")
    except OSError:
        return False
    return marker in cmdline


def running(pid: int) -> bool:
    """True while ``pid`` is a live process (not absent, not a zombie awaiting its reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _write_atomically(path: str, text: str) -> bool:
    """Write ``text`` to ``path`` unless it already holds it; True when it changed."""
    try:
        with open(path) as handle:
            if handle.read() == text:
                return False
    except FileNotFoundError:
        pass
    tmp = f"{path}.tmp"
    with open(tmp, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)
    return True


def _read_entries(path: str) -> set[tuple[str, str]]:
    """The (MAC, address) entries of a hosts file (none when it does not exist)."""
    try:
        with open(path) as handle:
            return {tuple(line.strip().split(",", 1)) for line in handle if "," in line}  # type: ignore[misc]
    except FileNotFoundError:
        return set()


def _read_leases(path: str) -> dict[tuple[str, str], str]:
    """(MAC, address) -> client id ("*" when none) of dnsmasq's lease file
    (``<expiry> <mac> <address> <hostname> <client id>`` per line)."""
    try:
        with open(path) as handle:
            rows = [line.split() for line in handle]
    except FileNotFoundError:
        return {}
    return {(row[1].lower(), row[2]): row[4] for row in rows if len(row) >= 5}


class DhcpServers:
    """The dnsmasq servers of one host (one namespace, one state directory)."""

    def __init__(self, kernel: Kernel, state_dir: str, binary: str = "dnsmasq") -> None:
        self.kernel = kernel
        self.root = os.path.join(state_dir, "dhcp")
        self.binary = binary

    def _dir(self, network_id: str) -> str:
        return os.path.join(self.root, network_id)

    def _pid_file(self, network_id: str) -> str:
        return os.path.join(self._dir(network_id), "pid")

    def pid(self, network_id: str) -> int | None:
        """The pid of the network's running dnsmasq, or None."""
        path = self._pid_file(network_id)
        try:
            with open(path) as handle:
                pid = int(handle.read().strip() or 0)
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid and _alive_with(pid, path) else None

    def networks(self) -> list[str]:
        """Networks that have a server directory here (running or not)."""
        try:
            return sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []

    def ensure(self, network_id: str, interface: str, host_address: str,
               entries: list[tuple[str, str]], router: str | None = None) -> int:
        """The network's dnsmasq runs on ``interface`` and serves exactly ``entries``
        (MAC, address), with ``host_address``'s prefix length as their netmask and
        ``router`` as their default gateway (none when None). ``network_id`` names the
        server: a routed network has one per endpoint, named by the endpoint's id.
        Returns its pid. Raises KernelError when dnsmasq fails to start.
        """
        directory = self._dir(network_id)
        os.makedirs(directory, exist_ok=True)
        hosts = os.path.join(directory, "hosts")
        wanted = {(mac.lower(), address) for mac, address in entries}
        gone = _read_entries(hosts) - wanted
        changed = _write_atomically(hosts, "".join(f"{mac},{address}\n" for mac, address in sorted(wanted)))
        pid = self.pid(network_id)
        if pid is not None:
            if changed:
                os.kill(pid, signal.SIGHUP)  # dnsmasq rereads --dhcp-hostsfile on SIGHUP
                self._release(directory, interface, gone)
            return pid
        subnet = ipaddress.ip_interface(host_address).network
        self.kernel.execute([
            self.binary, "--conf-file=/dev/null", "--port=0", "--user=root", "--group=root",
            "--bind-interfaces", f"--interface={interface}", "--except-interface=lo",
            f"--dhcp-range={subnet.network_address},static,{subnet.netmask},12h",
            f"--dhcp-hostsfile={hosts}", f"--pid-file={self._pid_file(network_id)}",
            f"--dhcp-leasefile={os.path.join(directory, 'leases')}",
            "--dhcp-authoritative", f"--dhcp-option=option:router{',' + router if router else ''}",
            f"--log-facility={os.path.join(directory, 'log')}",
        ])
        pid = self.pid(network_id)
        if pid is None:
            raise exception.KernelError(op="start dnsmasq", target=f"network {network_id}",
                                        errno=0, reason="dnsmasq exited without a running server")
        return pid

    def _release(self, directory: str, interface: str, gone: set[tuple[str, str]]) -> None:
        """End the leases of entries no longer served. IPAM hands a released address out again
        at once, and dnsmasq will not give an address that is still leased to another MAC (for
        the lease's 12 hours); ``dhcp_release`` (dnsmasq-utils) asks the running server to drop
        the lease, as Neutron's DHCP agent does."""
        leases = _read_leases(os.path.join(directory, "leases"))
        for mac, address in sorted(gone):
            client_id = leases.get((mac, address))
            if client_id is None:
                continue  # never leased: nothing to end
            argv = ["dhcp_release", interface, address, mac] + ([client_id] if client_id != "*" else [])
            self.kernel.execute(argv)

    def stop(self, network_id: str, timeout: float = 5.0) -> None:
        """Stop the network's dnsmasq (if any) and remove its files."""
        pid = self.pid(network_id)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while running(pid):
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    deadline += timeout
                time.sleep(0.01)
        shutil.rmtree(self._dir(network_id), ignore_errors=True)

    def stop_all(self) -> None:
        for network_id in self.networks():
            self.stop(network_id)
