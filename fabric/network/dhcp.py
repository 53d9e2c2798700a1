"""The DHCP servers of one host, each a dnsmasq serving static MAC -> address entries:
one per L2 network (on its bridge), and one for all of the host's routed endpoints.

A routed network has no bridge: each endpoint is a device of its own, and the
endpoints come and go. The routed server listens on the gateway device (which holds
the host's gateway address) and takes every endpoint device as an alias of it
(dnsmasq's ``--bridge-interface``, a wildcard), so requests arriving on an endpoint's
device are answered from the gateway address and a new endpoint needs only its entry.
It hands out each endpoint's address as a /32 with classless static routes (option
121): the gateway on-link, then the default route via it. A wildcard interface needs
``--bind-dynamic``: the server's socket is then bound to no device, and requests on the
L2 networks' bridges still reach their own servers, whose sockets are bound to their
bridge (the kernel prefers the bound socket).

Each server's files live in ``<state_dir>/dhcp/<server name>/``: the hosts file
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

#: The ``--dhcp-range`` mode of each IPv6 mode: SLAAC from router advertisements only; SLAAC
#: plus DHCPv6 for the rest; addresses by DHCPv6 (static entries by MAC, adverts say "managed").
IPV6_RANGE_MODES = {"slaac": "ra-only", "dhcpv6-stateless": "ra-stateless", "dhcpv6-stateful": "static"}


def entry_text(address: str | None, address6: str | None = None) -> str:
    """The address part of a hosts-file entry: ``10.0.0.5``, ``[fd00::5]`` or both, comma-separated."""
    return ",".join(([address] if address else []) + ([f"[{address6}]"] if address6 else []))


def _alive_with(pid: int, marker: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read().decode(errors="replace")
    except OSError:
        return False
    return marker in cmdline


def _cmdline(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return None


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

    def ensure(self, network_id: str, interface: str, host_address: str | None,
               entries: list[tuple[str, str]], router: str | None = None,
               ipv6: tuple[str, str] | None = None) -> int:
        """The network's dnsmasq runs on ``interface`` and serves exactly ``entries``
        (MAC, address: see :func:`entry_text`), with ``host_address``'s prefix length as their
        netmask and ``router`` as their default gateway (none when None); no IPv4 service
        without ``host_address``. With ``ipv6`` (the interface's IPv6 CIDR, a mode of
        :data:`fabric.network.ipv6.MODES`) it also sends router advertisements for that prefix
        and, in the DHCPv6 modes, answers DHCPv6. ``network_id`` names the server.
        Returns its pid. Raises KernelError when dnsmasq fails to start.
        """
        listen = ["--bind-interfaces", f"--interface={interface}"]
        ranges, options = [], []
        if host_address:
            subnet = ipaddress.ip_interface(host_address).network
            ranges.append(f"--dhcp-range={subnet.network_address},static,{subnet.netmask},12h")
            options.append(f"--dhcp-option=option:router{',' + router if router else ''}")
        if ipv6 is not None:
            prefix, mode = ipaddress.ip_interface(ipv6[0]).network, ipv6[1]
            ranges.append(f"--dhcp-range={prefix.network_address},{IPV6_RANGE_MODES[mode]},{prefix.prefixlen},12h")
            # Router lifetime 0: the prefix is on-link, but this host is nobody's IPv6 default
            # router (it neither forwards nor translates IPv6); unsolicited adverts every 30 s.
            options += ["--enable-ra", f"--ra-param={interface},30,0"]
        return self._ensure(network_id, listen, ranges, options, entries, interface)

    def ensure_routed(self, name: str, gateway_device: str, endpoint_devices: str, gateway: str, block: str,
                      entries: list[tuple[str, str]]) -> int:
        """The routed server ``name`` answers on ``gateway_device`` (which holds ``gateway``) and
        on every device matching ``endpoint_devices`` (a dnsmasq wildcard such as ``fabt*``), and
        serves exactly ``entries`` (MAC, address in ``block``), each as a /32 whose routes (option
        121) are ``gateway`` on-link and the default via it. Returns its pid. Raises KernelError
        when dnsmasq fails to start.
        """
        listen = ["--bind-dynamic", f"--interface={gateway_device}", f"--interface={endpoint_devices}",
                  f"--bridge-interface={gateway_device},{endpoint_devices}"]
        options = ["--dhcp-option=option:netmask,255.255.255.255", f"--dhcp-option=option:router,{gateway}",
                   # Forced: a /32 lease is useless without its routes, and clients such as busybox
                   # udhcpc do not ask for them (RFC 3442: with them, the router option is ignored).
                   "--dhcp-option-force=option:classless-static-route,"
                   f"{gateway}/32,0.0.0.0,0.0.0.0/0,{gateway}"]
        subnet = ipaddress.ip_network(block)
        ranges = [f"--dhcp-range={subnet.network_address},static,{subnet.netmask},12h"]
        return self._ensure(name, listen, ranges, options, entries, gateway_device)

    def _ensure(self, name: str, listen: list[str], ranges: list[str], options: list[str],
                entries: list[tuple[str, str]], interface: str) -> int:
        """Server ``name`` runs with exactly this configuration and serves exactly ``entries``:
        a running server with other arguments is replaced; new entries reach a running one by
        its hosts file and SIGHUP, and the leases of entries that went are released."""
        directory = self._dir(name)
        hosts = os.path.join(directory, "hosts")
        argv = [
            self.binary, "--conf-file=/dev/null", "--port=0", "--user=root", "--group=root",
            *listen, "--except-interface=lo",
            *ranges,
            f"--dhcp-hostsfile={hosts}", f"--pid-file={self._pid_file(name)}",
            f"--dhcp-leasefile={os.path.join(directory, 'leases')}",
            "--dhcp-authoritative", *options,
            f"--log-facility={os.path.join(directory, 'log')}",
        ]
        pid = self.pid(name)
        if pid is not None and _cmdline(pid) != argv:
            self._terminate(pid)  # configured otherwise (a new gateway, a new release): start it anew
            pid = None
        os.makedirs(directory, exist_ok=True)
        wanted = {(mac.lower(), address) for mac, address in entries}
        gone = _read_entries(hosts) - wanted
        changed = _write_atomically(hosts, "".join(f"{mac},{address}\n" for mac, address in sorted(wanted)))
        if pid is not None:
            if changed:
                os.kill(pid, signal.SIGHUP)  # dnsmasq rereads --dhcp-hostsfile on SIGHUP
                self._release(directory, interface, gone)
            return pid
        self.kernel.execute(argv)
        pid = self.pid(name)
        if pid is None:
            raise exception.KernelError(op="start dnsmasq", target=f"DHCP server {name}",
                                        errno=0, reason="dnsmasq exited without a running server")
        return pid

    def entries(self, name: str) -> set[tuple[str, str]]:
        """The (MAC, address) entries server ``name`` is told to serve (none when it has no files)."""
        return _read_entries(os.path.join(self._dir(name), "hosts"))

    def _release(self, directory: str, interface: str, gone: set[tuple[str, str]]) -> None:
        """End the leases of entries no longer served. IPAM hands a released address out again
        at once, and dnsmasq will not give an address that is still leased to another MAC (for
        the lease's 12 hours); ``dhcp_release`` (dnsmasq-utils) asks the running server to drop
        the lease, as Neutron's DHCP agent does."""
        leases = _read_leases(os.path.join(directory, "leases"))
        for mac, addresses in sorted(gone):
            address = addresses.split(",")[0]
            if address.startswith("["):
                continue  # IPv6 only: DHCPv6 leases are the client's (by DUID), not ended here
            client_id = leases.get((mac, address))
            if client_id is None:
                continue  # never leased: nothing to end
            argv = ["dhcp_release", interface, address, mac] + ([client_id] if client_id != "*" else [])
            self.kernel.execute(argv)

    def stop(self, network_id: str, timeout: float = 5.0) -> None:
        """Stop the network's dnsmasq (if any) and remove its files."""
        pid = self.pid(network_id)
        if pid is not None:
            self._terminate(pid, timeout)
        shutil.rmtree(self._dir(network_id), ignore_errors=True)

    @staticmethod
    def _terminate(pid: int, timeout: float = 5.0) -> None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while running(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                deadline += timeout
            time.sleep(0.01)

    def stop_all(self) -> None:
        for network_id in self.networks():
            self.stop(network_id)
