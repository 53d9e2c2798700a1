"""A thin wrapper over pyroute2: links, addresses, routes, FDB entries, sysctls.

Every call runs in the native thread of one network namespace (see
:mod:`fabric.network.kernel.offhub`). Netlink errors come back as
:class:`~fabric.exception.KernelError` naming the operation, the object and the
errno; ``ensure_*`` calls are idempotent (they create what is missing and leave
what is already right), and ``delete_*`` calls succeed when the object is
already gone. Routes fabric adds carry :data:`RTPROT_FABRIC` so fabric can tell
its own routes from everyone else's.
"""

from __future__ import annotations

import errno as errnos
import ipaddress
import os
import socket
import struct
import subprocess
from collections.abc import Callable
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from fabric import exception
from fabric.network.kernel import offhub

#: Route protocol number marking routes fabric owns (``ip route ... proto 176``); unassigned
#: in iproute2's rt_protos (186-192 belong to routing daemons).
RTPROT_FABRIC = 176
IFNAMSIZ = 15
ZERO_MAC = "00:00:00:00:00:00"


def _ipr(local: dict[str, Any]) -> IPRoute:
    ipr = local.get("ipr")
    if ipr is None:
        ipr = local["ipr"] = IPRoute()
    return ipr


def _index(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def _link_info(ipr: IPRoute, msg: Any, names: dict[int, str]) -> dict[str, Any]:
    info = msg.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
    master = msg.get_attr("IFLA_MASTER")
    link = {
        "name": msg.get_attr("IFLA_IFNAME"),
        "index": msg["index"],
        "kind": kind,
        "master": names.get(master) if master else None,
        "up": bool(msg["flags"] & 1),
        "mac": msg.get_attr("IFLA_ADDRESS"),
        "mtu": msg.get_attr("IFLA_MTU"),
    }
    if kind == "vxlan" and data is not None:
        link["vni"] = data.get_attr("IFLA_VXLAN_ID")
        link["local"] = data.get_attr("IFLA_VXLAN_LOCAL")
        link["port"] = data.get_attr("IFLA_VXLAN_PORT")
    if kind == "vlan" and data is not None:
        link["vlan_id"] = data.get_attr("IFLA_VLAN_ID")
    return link


def check_name(name: str) -> str:
    """Return ``name`` if it is a usable Linux interface name, else raise Invalid."""
    if not name or len(name) > IFNAMSIZ or "/" in name or any(c.isspace() for c in name):
        raise exception.Invalid(reason=f"interface name {name!r} must be 1-{IFNAMSIZ} characters "
                                       "without spaces or '/'")
    return name


class Kernel:
    """Kernel networking of one namespace (``netns=None``: this process's own)."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._thread = offhub.thread_for(netns)

    # --- plumbing -------------------------------------------------------------

    def _run(self, op: str, target: str, fn: Callable[..., Any], *args: Any) -> Any:
        def call(local: dict[str, Any]) -> Any:
            try:
                return fn(_ipr(local), *args)
            except NetlinkError as exc:
                raise exception.KernelError(op=op, target=f"{target} in {self.where}",
                                            errno=exc.code, reason=os.strerror(exc.code)) from None

        return self._thread.run(call)

    @property
    def where(self) -> str:
        return f"netns {self.netns}" if self.netns else "the host namespace"

    # --- links ------------------------------------------------------------------

    def links(self, prefix: str = "") -> list[dict[str, Any]]:
        """Every link whose name starts with ``prefix``: name, kind, master, up, mac, mtu."""
        def dump(ipr: IPRoute) -> list[dict[str, Any]]:
            msgs = list(ipr.get_links())
            names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in msgs}
            return [_link_info(ipr, m, names) for m in msgs
                    if m.get_attr("IFLA_IFNAME", "").startswith(prefix)]

        return self._run("dump links", prefix or "*", dump)

    def link(self, name: str) -> dict[str, Any] | None:
        """The link called ``name``, or None."""
        return next((lk for lk in self.links(name) if lk["name"] == name), None)

    def _ensure(self, name: str, create: Callable[[IPRoute], None], master: str | None,
                mtu: int | None, up: bool = True, recreate_if: Callable[[dict], bool] | None = None) -> None:
        check_name(name)

        def ensure(ipr: IPRoute) -> None:
            idx = _index(ipr, name)
            if idx is not None and recreate_if is not None:
                msgs = list(ipr.get_links(idx))
                if recreate_if(_link_info(ipr, msgs[0], {})):
                    ipr.link("del", index=idx)
                    idx = None
            if idx is None:
                try:
                    create(ipr)
                except NetlinkError as exc:
                    if exc.code != errnos.EEXIST:  # lost a race with ourselves: fine
                        raise
                idx = _index(ipr, name)
            changes: dict[str, Any] = {}
            if master is not None:
                master_idx = _index(ipr, master)
                if master_idx is None:
                    raise NetlinkError(errnos.ENODEV, f"master {master} is missing")
                changes["master"] = master_idx
            if mtu:
                changes["mtu"] = mtu
            if up:
                changes["state"] = "up"
            if changes:
                ipr.link("set", index=idx, **changes)

        self._run("ensure link", name, ensure)

    def ensure_bridge(self, name: str, mtu: int | None = None) -> None:
        """A bridge called ``name`` exists and is up (IPv6 off on it)."""
        self._ensure(name, lambda ipr: ipr.link("add", ifname=name, kind="bridge"), None, mtu)
        self.set_sysctl(f"net/ipv6/conf/{name}/disable_ipv6", "1", missing_ok=True)

    def ensure_tap(self, name: str, mac: str | None = None, master: str | None = None,
                   mtu: int | None = None) -> None:
        """A persistent tap called ``name`` exists, optionally enslaved to ``master``, and is up."""
        def create(ipr: IPRoute) -> None:
            ipr.link("add", ifname=name, kind="tuntap", mode="tap")
            if mac:
                ipr.link("set", index=_index(ipr, name), address=mac)

        self._ensure(name, create, master, mtu)
        self.set_sysctl(f"net/ipv6/conf/{name}/disable_ipv6", "1", missing_ok=True)

    def ensure_veth(self, name: str, peer_netns: str | None, peer_name: str,
                    peer_mac: str | None = None, master: str | None = None,
                    mtu: int | None = None) -> None:
        """A veth pair: ``name`` here (enslaved to ``master``, up) and ``peer_name`` in
        ``peer_netns`` (up, with ``peer_mac``). Raises NamespaceNotFound for a missing peer namespace.
        """
        check_name(peer_name)
        peer: dict[str, Any] = {"ifname": peer_name}
        if peer_mac:
            peer["address"] = peer_mac
        if peer_netns is not None:
            if not os.path.exists(os.path.join(offhub.NETNS_RUN_DIR, peer_netns)):
                raise exception.NamespaceNotFound(netns=peer_netns)
            peer["net_ns_fd"] = peer_netns
        self._ensure(name, lambda ipr: ipr.link("add", ifname=name, kind="veth", peer=peer), master, mtu)
        self.set_sysctl(f"net/ipv6/conf/{name}/disable_ipv6", "1", missing_ok=True)
        peer_kernel = Kernel(peer_netns) if peer_netns != self.netns else self
        peer_kernel.set_up(peer_name)

    def ensure_vxlan(self, name: str, vni: int, local: str, port: int = 4789,
                     master: str | None = None, mtu: int | None = None) -> None:
        """A VXLAN device for ``vni`` from ``local`` with learning off, enslaved and up.

        A device of that name with another VNI, local address or port is replaced.
        """
        def create(ipr: IPRoute) -> None:
            ipr.link("add", ifname=name, kind="vxlan", vxlan_id=vni, vxlan_local=local,
                     vxlan_port=port, vxlan_learning=0)

        def stale(link: dict[str, Any]) -> bool:
            return (link.get("vni"), link.get("local"), link.get("port")) != (vni, local, port)

        self._ensure(name, create, master, mtu, recreate_if=stale)

    def ensure_vlan(self, name: str, parent: str, vlan_id: int, master: str | None = None,
                    mtu: int | None = None) -> None:
        """An 802.1Q device for ``vlan_id`` on ``parent``, enslaved to ``master`` and up."""
        def create(ipr: IPRoute) -> None:
            parent_idx = _index(ipr, parent)
            if parent_idx is None:
                raise NetlinkError(errnos.ENODEV, f"trunk {parent} is missing")
            ipr.link("add", ifname=name, kind="vlan", link=parent_idx, vlan_id=vlan_id)
            ipr.link("set", index=parent_idx, state="up")

        def stale(link: dict[str, Any]) -> bool:
            return link.get("vlan_id") != vlan_id

        self._ensure(name, create, master, mtu, recreate_if=stale)

    def set_up(self, name: str) -> None:
        """Bring ``name`` up. Raises KernelError (errno ENODEV) when it does not exist."""
        def up(ipr: IPRoute) -> None:
            idx = _index(ipr, name)
            if idx is None:
                raise NetlinkError(errnos.ENODEV)
            ipr.link("set", index=idx, state="up")

        self._run("link up", name, up)

    def delete_link(self, name: str) -> bool:
        """Delete ``name`` if present; True when something was deleted."""
        def delete(ipr: IPRoute) -> bool:
            idx = _index(ipr, name)
            if idx is None:
                return False
            try:
                ipr.link("del", index=idx)
            except NetlinkError as exc:
                if exc.code == errnos.ENODEV:
                    return False
                raise
            return True

        return self._run("delete link", name, delete)

    # --- addresses -----------------------------------------------------------------

    def addresses(self, name: str, fabric_only: bool = False) -> list[str]:
        """IPv4 addresses on ``name`` as CIDR strings (empty when the link is missing); with
        ``fabric_only``, only those added with ``marked`` (proto :data:`RTPROT_FABRIC`)."""
        def dump(ipr: IPRoute) -> list[str]:
            idx = _index(ipr, name)
            if idx is None:
                return []
            return [f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
                    for a in ipr.get_addr(index=idx, family=2)
                    if not fabric_only or a.get_attr("IFA_PROTO") == RTPROT_FABRIC]

        return self._run("dump addresses", name, dump)

    def ensure_address(self, name: str, cidr: str, marked: bool = False) -> None:
        """``cidr`` (e.g. ``10.0.0.1/24``) is on ``name``; other IPv4 addresses are left alone.

        ``marked``: the address carries proto :data:`RTPROT_FABRIC`, so fabric can tell it
        from the administrator's on an interface it does not own.
        """
        iface = ipaddress.ip_interface(cidr)

        def add(ipr: IPRoute) -> None:
            idx = _index(ipr, name)
            if idx is None:
                raise NetlinkError(errnos.ENODEV)
            extra = {"proto": RTPROT_FABRIC} if marked else {}
            try:
                ipr.addr("add", index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen, **extra)
            except NetlinkError as exc:
                if exc.code != errnos.EEXIST:
                    raise

        self._run("add address", f"{cidr} on {name}", add)

    def remove_address(self, name: str, cidr: str) -> None:
        """``cidr`` is not on ``name`` (no error when it, or the link, is gone)."""
        iface = ipaddress.ip_interface(cidr)

        def remove(ipr: IPRoute) -> None:
            idx = _index(ipr, name)
            if idx is None:
                return
            try:
                ipr.addr("del", index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen)
            except NetlinkError as exc:
                if exc.code not in (errnos.EADDRNOTAVAIL, errnos.ENODEV):
                    raise

        self._run("remove address", f"{cidr} on {name}", remove)

    # --- routes ----------------------------------------------------------------------

    def routes(self) -> list[dict[str, Any]]:
        """fabric's IPv4 routes (proto :data:`RTPROT_FABRIC`): dst (CIDR), via, dev."""
        def dump(ipr: IPRoute) -> list[dict[str, Any]]:
            names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in ipr.get_links()}
            found = []
            for r in ipr.get_routes(family=2, table=254):
                if r["proto"] != RTPROT_FABRIC:
                    continue
                oif = r.get_attr("RTA_OIF")
                found.append({"dst": f"{r.get_attr('RTA_DST')}/{r['dst_len']}",
                              "via": r.get_attr("RTA_GATEWAY"), "dev": names.get(oif)})
            return found

        return self._run("dump routes", "main table", dump)

    def ensure_route(self, dst: str, dev: str | None = None, via: str | None = None) -> None:
        """A fabric route to ``dst`` through ``dev`` and/or gateway ``via`` (replaces any other to ``dst``)."""
        net = ipaddress.ip_network(dst)

        def replace(ipr: IPRoute) -> None:
            spec: dict[str, Any] = {"dst": str(net), "proto": RTPROT_FABRIC}
            if dev is not None:
                idx = _index(ipr, dev)
                if idx is None:
                    raise NetlinkError(errnos.ENODEV)
                spec["oif"] = idx
            if via is not None:
                spec["gateway"] = via
            ipr.route("replace", **spec)

        self._run("replace route", f"{dst} via {via or dev}", replace)

    def delete_route(self, dst: str) -> None:
        """No fabric route to ``dst`` remains (no error when there is none)."""
        net = ipaddress.ip_network(dst)

        def delete(ipr: IPRoute) -> None:
            for route in ipr.get_routes(family=2, table=254):
                if (route["proto"] != RTPROT_FABRIC or route["dst_len"] != net.prefixlen
                        or (route.get_attr("RTA_DST") or "0.0.0.0") != str(net.network_address)):
                    continue
                spec = {"dst": str(net), "proto": RTPROT_FABRIC, "table": 254, "scope": route["scope"]}
                if route.get_attr("RTA_OIF"):
                    spec["oif"] = route.get_attr("RTA_OIF")
                if route.get_attr("RTA_GATEWAY"):
                    spec["gateway"] = route.get_attr("RTA_GATEWAY")
                try:
                    ipr.route("del", **spec)
                except NetlinkError as exc:
                    if exc.code != errnos.ESRCH:  # gone meanwhile: fine
                        raise

        self._run("delete route", dst, delete)

    # --- VXLAN forwarding entries ---------------------------------------------------

    def flood_destinations(self, name: str) -> list[str]:
        """Remote tunnel addresses of the all-zero FDB entries of VXLAN device ``name``."""
        def dump(ipr: IPRoute) -> list[str]:
            idx = _index(ipr, name)
            if idx is None:
                return []
            return [e.get_attr("NDA_DST") for e in ipr.fdb("dump", ifindex=idx)
                    if e.get_attr("NDA_LLADDR") == ZERO_MAC and e.get_attr("NDA_DST")]

        return self._run("dump fdb", name, dump)

    def add_flood_destination(self, name: str, remote: str) -> None:
        """Append an all-zero FDB entry toward ``remote`` on ``name`` (idempotent)."""
        def append(ipr: IPRoute) -> None:
            idx = _index(ipr, name)
            if idx is None:
                raise NetlinkError(errnos.ENODEV)
            try:
                ipr.fdb("append", ifindex=idx, lladdr=ZERO_MAC, dst=remote)
            except NetlinkError as exc:
                if exc.code != errnos.EEXIST:
                    raise

        self._run("append fdb", f"{remote} on {name}", append)

    def remove_flood_destination(self, name: str, remote: str) -> None:
        """Remove the all-zero FDB entry toward ``remote`` (no error when absent)."""
        def delete(ipr: IPRoute) -> None:
            idx = _index(ipr, name)
            if idx is None:
                return
            try:
                ipr.fdb("del", ifindex=idx, lladdr=ZERO_MAC, dst=remote)
            except NetlinkError as exc:
                if exc.code not in (errnos.ENOENT, errnos.ENODEV):
                    raise

        self._run("delete fdb", f"{remote} on {name}", delete)

    # --- announcements --------------------------------------------------------------------

    def announce(self, name: str, address: str, mac: str | None = None) -> None:
        """Tell every neighbour on link ``name`` that IPv4 ``address`` is at ``mac`` (default: the
        link's own MAC), at once: a gratuitous ARP request and a gratuitous ARP reply, broadcast.
        A neighbour holding an entry for ``address`` replaces it (Linux takes either form without
        ``arp_accept``; some stacks take only one); one that has none creates none.

        Raises KernelError when the link does not exist or the frame cannot be sent.
        """
        def send(local: dict[str, Any]) -> None:
            try:
                with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
                    sock.bind((name, 0))
                    sender = bytes.fromhex(mac.replace(":", "")) if mac else sock.getsockname()[4]
                    ip = socket.inet_aton(address)
                    for op, target in ((1, bytes(6)), (2, sender)):  # request; reply (RFC 2002's target MAC)
                        arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + sender + ip + target + ip
                        sock.send((b"\xff" * 6 + sender + b"\x08\x06" + arp).ljust(60, b"\0"))
            except OSError as exc:
                raise exception.KernelError(op="announce", target=f"{address} on {name} in {self.where}",
                                            errno=exc.errno or 0, reason=exc.strerror or str(exc)) from None

        self._thread.run(send)

    # --- sysctls and commands ---------------------------------------------------------

    def set_sysctl(self, key: str, value: str, missing_ok: bool = False) -> None:
        """Write ``value`` to ``/proc/sys/<key>`` in this namespace (``net/ipv4/ip_forward``)."""
        path = os.path.join("/proc/sys", key)

        def write(local: dict[str, Any]) -> None:
            try:
                with open(path, "w") as handle:
                    handle.write(value)
            except FileNotFoundError:
                if not missing_ok:
                    raise exception.KernelError(op="sysctl", target=f"{key} in {self.where}",
                                                errno=errnos.ENOENT, reason="no such sysctl") from None
            except OSError as exc:
                raise exception.KernelError(op="sysctl", target=f"{key} in {self.where}",
                                            errno=exc.errno, reason=exc.strerror) from None

        self._thread.run(write)

    def get_sysctl(self, key: str) -> str:
        """The value of ``/proc/sys/<key>`` in this namespace."""
        def read(local: dict[str, Any]) -> str:
            with open(os.path.join("/proc/sys", key)) as handle:
                return handle.read().strip()

        return self._thread.run(read)

    def execute(self, argv: list[str], stdin: str | None = None, check: bool = True,
                timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a short command inside this namespace and return its completed process.

        Raises KernelError with the command's stderr when it fails and ``check`` is set.
        """
        def run(local: dict[str, Any]) -> subprocess.CompletedProcess:
            try:
                done = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                                      timeout=timeout, close_fds=True)
            except FileNotFoundError:
                raise exception.KernelError(op=argv[0], target=self.where, errno=errnos.ENOENT,
                                            reason=f"{argv[0]} is not installed") from None
            if check and done.returncode != 0:
                raise exception.KernelError(op=" ".join(argv[:3]), target=self.where,
                                            errno=done.returncode,
                                            reason=(done.stderr or done.stdout).strip()[:2000])
            return done

        return self._thread.run(run)
