"""IPv6 end to end through the real `openstack` CLI with real guests on the simulated hosts: a
SLAAC subnet made with ``subnet create --ip-version 6 --ipv6-address-mode slaac --ipv6-ra-mode
slaac``, ports that show their EUI-64 address, guests that take exactly that address from their
host's router advertisements and ping each other by it through the default security group
(its remote-group rule matches the members' global IPv6 addresses).

IPv6-only networks (no IPv4 subnet at all), each with a server booted by ``--nic net-id=``: on a
DHCPv6-stateful one the server's port holds an address from IPAM, which is exactly what its host's
dnsmasq hands out for its MAC; on a SLAAC one its port shows the EUI-64 address its host's
advertisements make for its MAC, traffic to that address passes only as its security group's IPv6
rules allow, and its tap lets out its own global and link-local addresses only.

The test guest cannot speak for itself there: its image turns IPv6 off and takes its user data by
IPv4, and it never reaches its user data when its DHCPv4 client fails (as on a network without
IPv4). So once it has booted, it is stopped, and a namespace joined to the network's bridge on its
host with its MAC takes its place as a client (of the host's dnsmasq, of its router adverts, and
behind the server port's filters, which the inet family applies by bridge and address); a probe
namespace with a MAC of its own stands for another machine on the network (no port of fabric's)."""

from __future__ import annotations

import re
import sys

import pytest

from fabric.network.ipv6 import slaac_address
from fabric.network.naming import Names
from fabric.network.secgroups import link_local, short_hash, table_name
from fabric.sim.netns import in_ns, sh
from tests.fixtures.cloud import END, FLAVOR, PROBE_WINDOW
from tests.fixtures.processes import wait_until
from tests.functional.network.test_ipv6 import DHCP6_CLIENT

pytestmark = [pytest.mark.functional, pytest.mark.slow]

PREFIX = "fd00:62::/64"
ONLY6 = "fd00:64::/64"
STATEFUL6 = "fd00:65::/64"
PROBE6, PROBE_MAC = "fd00:64::99", "02:00:00:64:00:99"


def v6_probe(peer: str, window: int) -> str:
    """User data: turn IPv6 on (the image turns it off), print the global addresses taken from the
    advertisements, then ping ``peer`` once a second until it answers (at most ``window`` seconds,
    a bound, not a wait: the peer boots beside this guest, in its own time) and print the count."""
    return f"""#!/bin/sh
echo 0 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6
i=0
while [ $i -lt 30 ] && ! ip -6 addr show dev eth0 scope global | grep -q inet6; do sleep 1; i=$((i + 1)); done
echo "fabric-test: v6 addresses $(ip -6 addr show dev eth0 scope global | grep -o 'inet6 [^ ]*' | tr '\\n' ' ')"
end=$(( $(cut -d. -f1 /proc/uptime) + {window} )); ok=0
while [ $ok -eq 0 ] && [ "$(cut -d. -f1 /proc/uptime)" -lt "$end" ]; do
    ping -6 -c 1 -W 1 {peer} >/dev/null 2>&1 && ok=$((ok + 1))
    sleep 1
done
echo "fabric-test: v6 {peer} answered $ok"
"""


def test_guests_take_their_slaac_addresses_and_reach_each_other_by_them(cloud, projects, tmp_path):
    jo = projects("jo")
    env = jo.env
    net = cloud.osc(env, "network", "create", "v6net")
    cloud.osc(env, "subnet", "create", "--network", net["id"], "--subnet-range", "10.63.0.0/24", "v4-sub")
    sub6 = cloud.osc(env, "subnet", "create", "--network", net["id"], "--ip-version", "6", "--subnet-range", PREFIX,
                     "--ipv6-address-mode", "slaac", "--ipv6-ra-mode", "slaac", "v6-sub")
    assert (sub6["ipv6_address_mode"], sub6["ipv6_ra_mode"]) == ("slaac", "slaac"), sub6
    ports = {name: cloud.osc(env, "port", "create", "--network", net["id"], name) for name in ("p1", "p2")}
    address6 = {}
    for name, port in ports.items():
        fixed = port["fixed_ips"]
        listed = [f["ip_address"] for f in fixed if f["subnet_id"] == sub6["id"]] if isinstance(fixed, list) \
            else re.findall(r"ip_address='([0-9a-f:]+)', subnet_id='" + sub6["id"], str(fixed))
        address6[name] = slaac_address(PREFIX, port["mac_address"])
        assert listed == [address6[name]], fixed  # shown as the EUI-64 of the port's MAC

    try:
        for name, peer in (("p1", "p2"), ("p2", "p1")):
            (tmp_path / f"{name}.sh").write_text(v6_probe(address6[peer], PROBE_WINDOW))
            cloud.osc(env, "server", "create", "--flavor", FLAVOR, "--image", cloud.image_id, "--nic",
                      f"port-id={ports[name]['id']}", "--user-data", str(tmp_path / f"{name}.sh"), f"vm-{name}")
        for name in ("p1", "p2"):
            cloud.wait_status(env, f"vm-{name}")
        for name, peer in (("p1", "p2"), ("p2", "p1")):
            console = cloud.wait_console(env, f"vm-{name}", rf"{END}, exit \d+").string
            assert f"inet6 {address6[name]}/64" in console, console[-2000:] + cloud.logs()
            answered = re.search(rf"fabric-test: v6 {address6[peer]} answered (\d+)", console)
            assert answered and int(answered[1]) > 0, console[-2000:]
    finally:
        cloud.cli.run(["server", "delete", "--wait", "vm-p1", "vm-p2"], env)
        cloud.cli.run(["port", "delete", "p1", "p2"], env)


def join_bridge(cloud, server: str, env: dict, network_id: str, ns: str, mac: str,
                accept_ra: bool = False) -> tuple[str, str]:
    """Namespace ``ns``'s eth0 (MAC ``mac``, IPv6 on, no DAD) as a port of the network's bridge on
    ``server``'s host, taking router advertisements with ``accept_ra``; (host namespace, the veth
    end there) to remove."""
    host = cloud.host_of(env, server).namespace
    bridge, end = Names(cloud.hosts.prefix).bridge(network_id), f"v6p{ns[-6:]}"[:15]
    mtu = in_ns(host, "cat", f"/sys/class/net/{bridge}/mtu").stdout.strip()
    sh("ip", "-n", host, "link", "add", end, "mtu", mtu, "type", "veth", "peer", "name", "eth0", "netns", ns)
    sh("ip", "-n", host, "link", "set", end, "master", bridge, "up")
    in_ns(ns, "ip", "link", "set", "eth0", "address", mac, "mtu", mtu)
    in_ns(ns, "sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=0", "net.ipv6.conf.eth0.accept_dad=0",
          f"net.ipv6.conf.eth0.accept_ra={int(accept_ra)}")
    in_ns(ns, "ip", "link", "set", "eth0", "up")
    return host, end


def port_of(cloud, env: dict, server: str, network_id: str) -> dict:
    """The server's port on the network, as ``port list`` shows it: {"id", "mac", "ips"}."""
    [port] = cloud.osc(env, "port", "list", "--server", server, "--network", network_id)
    fixed = port["Fixed IP Addresses"]
    ips = [f["ip_address"] for f in fixed] if isinstance(fixed, list) else re.findall(r"ip_address='([^']+)'", fixed)
    return {"id": port["ID"], "mac": port["MAC Address"], "ips": ips}


def booted_and_stopped(cloud, env: dict, server: str) -> None:
    """Wait for ``server``'s guest to have booted (its NIC modules loaded), then stop it."""
    cloud.wait_status(env, server)
    cloud.wait_console(env, server, r"fabric-guest: modules loaded")
    cloud.osc(env, "server", "stop", server, json_out=False)
    cloud.wait_status(env, server, ("SHUTOFF",))


def global_addresses(ns: str) -> list[str]:
    shown = in_ns(ns, "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global").stdout
    return [line.split("inet6 ")[1].split("/")[0] for line in shown.splitlines()]


def ping6(ns: str, address: str, count: int = 1) -> bool:
    return in_ns(ns, "busybox", "ping", "-6", "-c", str(count), "-W", "1", address, check=False).returncode == 0


def test_servers_on_ipv6_only_networks_hold_filter_and_guard_their_addresses(cloud, projects, netns):
    kai = projects("kai")
    env = kai.env
    only6 = cloud.osc(env, "network", "create", "only6")
    cloud.osc(env, "subnet", "create", "--network", only6["id"], "--ip-version", "6", "--subnet-range", ONLY6,
              "--ipv6-address-mode", "slaac", "--ipv6-ra-mode", "slaac", "only6-sub")
    stateful = cloud.osc(env, "network", "create", "stateful6")
    cloud.osc(env, "subnet", "create", "--network", stateful["id"], "--ip-version", "6", "--subnet-range", STATEFUL6,
              "--ipv6-address-mode", "dhcpv6-stateful", "--ipv6-ra-mode", "dhcpv6-stateful", "stateful6-sub")
    for name, network in (("vm-stateful6", stateful), ("vm-only6", only6)):
        cloud.osc(env, "server", "create", "--flavor", FLAVOR, "--image", cloud.image_id,
                  "--nic", f"net-id={network['id']}", name)
    veths = []
    try:
        # DHCPv6-stateful: the address IPAM gave the port (shown by the port and the server) is the
        # one the host's dnsmasq hands out for the server's MAC.
        booted_and_stopped(cloud, env, "vm-stateful6")
        held = port_of(cloud, env, "vm-stateful6", stateful["id"])
        assert len(held["ips"]) == 1 and held["ips"][0].startswith("fd00:65::"), held
        shown = cloud.osc(env, "server", "show", "vm-stateful6")["addresses"]
        assert held["ips"][0] in str(shown), shown
        client = netns("dhcp6")
        veths.append(join_bridge(cloud, "vm-stateful6", env, stateful["id"], client, held["mac"]))
        got = in_ns(client, sys.executable, "-c", DHCP6_CLIENT, check=False)
        assert got.stdout.strip() == held["ips"][0], got.stdout + got.stderr + cloud.logs()

        # SLAAC: the port shows the EUI-64 address of its MAC, which the host's adverts make.
        booted_and_stopped(cloud, env, "vm-only6")
        port = port_of(cloud, env, "vm-only6", only6["id"])
        own = slaac_address(ONLY6, port["mac"])
        assert port["ips"] == [own], port
        guest = netns("slaac6")
        veths.append(join_bridge(cloud, "vm-only6", env, only6["id"], guest, port["mac"], accept_ra=True))
        assert wait_until(lambda: global_addresses(guest) == [own], timeout=30, what="the SLAAC address")
        probe = netns("probe6")
        veths.append(join_bridge(cloud, "vm-only6", env, only6["id"], probe, PROBE_MAC))
        in_ns(probe, "ip", "-6", "addr", "add", f"{PROBE6}/64", "dev", "eth0", "nodad")
        # Its default group lets in IPv6 from its members only (the probe is none); it lets all out.
        assert ping6(guest, PROBE6, count=3), cloud.logs()
        assert not ping6(probe, own, count=3)
        [default] = [g["ID"] for g in cloud.osc(env, "security", "group", "list", "--project", kai.project_id)
                     if g["Name"] == "default"]
        cloud.osc(env, "security", "group", "rule", "create", "--ingress", "--ethertype", "IPv6", "--protocol",
                  "ipv6-icmp", default)
        assert wait_until(lambda: ping6(probe, own), timeout=10, what="ICMPv6 let in"), cloud.logs()
        # The server's tap lets out its own IPv6 addresses only: its link-local and global ones.
        host = cloud.host_of(env, "vm-only6").namespace
        listed = in_ns(host, "nft", "list", "chain", "bridge", table_name(Names(cloud.hosts.prefix)),
                       f"s{short_hash(port['id'])}").stdout
        allowed = re.search(r"ip6 saddr != \{ ([^}]*) \} drop", listed)
        assert allowed and set(allowed[1].split(", ")) == {link_local(port["mac"]), own, "::"}, listed
    finally:
        for host, end in veths:
            sh("ip", "-n", host, "link", "del", end, check=False)
        cloud.cli.run(["server", "delete", "--wait", "vm-only6", "vm-stateful6"], env)
