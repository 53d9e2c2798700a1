"""A filtered port may ask for an address by DHCP but never answer as a DHCP server (v4 or v6),
on the real kernel: a rogue dnsmasq on one endpoint, the host's own dnsmasq, another
endpoint's DHCP client.

One simulated host (a namespace) with a VXLAN network and DHCP on, two veth endpoints in
namespaces of their own, as guests would be on the bridge.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from fabric.network.drivers.linux import LinuxDriver
from fabric.network.model import EndpointSpec, NetworkSpec
from fabric.network.secgroups import RuleSpec, SecurityState
from tests.fixtures.netns import in_ns
from tests.fixtures.processes import wait_until
from tests.functional.network.conftest import host_settings
from tests.functional.network.test_secgroups import enable_ipv6

NET = NetworkSpec(id="net-dg", network_type="vxlan", segmentation_id=312, host_address="10.32.0.1/24", dhcp=True)
CLIENT_MAC, ROGUE_MAC = "02:00:00:00:2d:02", "02:00:00:00:2d:03"
#: Every direction open: only anti-spoofing can stop what these ports send.
OPEN = [RuleSpec.checked(direction, ethertype) for direction in ("ingress", "egress") for ethertype in ("IPv4", "IPv6")]
SECURITY = SecurityState(groups={"open": OPEN}, ports={"ep-c": ["open"], "ep-r": ["open"]}, members={})

#: Prints "bound <ip> <server id>" when udhcpc gets its lease.
UDHCPC_SCRIPT = """#!/bin/sh
[ "$1" = bound ] && echo "bound $ip $serverid"
exit 0
"""

#: Counts, in the client's namespace, the DHCP answers that arrive from each server (and the
#: test's canary, which follows the rogue's answers on the same path).
PROBE = """table ip probe {
 chain arrive {
  type filter hook prerouting priority -300;
  ip saddr 10.32.0.1 udp sport 67 counter
  ip saddr 10.32.0.13 udp sport 67 counter
  ip saddr 10.32.0.13 udp sport 40000 counter
 }
}
"""

#: Sends one UDP datagram from argv[1]:argv[2] to argv[3]:argv[4] on eth0 (IPv4 or IPv6).
SEND = """
import socket, sys
source, sport, target, dport = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
family = socket.AF_INET6 if ":" in target else socket.AF_INET
s = socket.socket(family, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
index = socket.if_nametoindex("eth0")
s.bind((source, sport, 0, index) if family == socket.AF_INET6 else (source, sport))
s.sendto(sys.argv[5].encode(), (target, dport, 0, index) if family == socket.AF_INET6 else (target, dport))
"""

#: Prints every datagram that arrives on UDP port 546 (DHCPv6's client port) of eth0, as it arrives.
LISTEN6 = """
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
s.bind(("::", 546))
print("ready", flush=True)
while True:
    print(s.recv(100).decode(), flush=True)
"""


@pytest.fixture
def lan(netns, tmp_path):
    """Host h1 serving DHCP on NET; endpoint c (the client, unconfigured, entry 10.32.0.12) and
    endpoint r (10.32.0.13, configured) that will run a rogue DHCP server."""
    h1 = netns("h1")
    driver = LinuxDriver(host_settings("h1", "192.168.81.1", str(tmp_path / "h1")), netns=h1)
    driver.setup_network(NET)
    client, rogue = netns("c"), netns("r")
    driver.plug(EndpointSpec("ep-c", NET.id, CLIENT_MAC, address="10.32.0.12", kind="veth", netns=client))
    driver.plug(EndpointSpec("ep-r", NET.id, ROGUE_MAC, address="10.32.0.13", kind="veth", netns=rogue))
    in_ns(client, "ip", "link", "set", "eth0", "up")
    netns.configure_endpoint(rogue, "10.32.0.13/24")
    yield driver, client, rogue
    driver.stop()


def probe(ns: str) -> None:
    """(Re)load the counters of :data:`PROBE` in ``ns``, all at zero."""
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], text=True, check=True,
                   input=f"table ip probe\ndelete table ip probe\n{PROBE}")


def counted(ns: str, match: str) -> int:
    listed = in_ns(ns, "nft", "list", "chain", "ip", "probe", "arrive").stdout
    line = next(line for line in listed.splitlines() if match in line)
    return int(line.split("packets ")[1].split()[0])


def dhcp_exchange(ns: str, script: str) -> str:
    """One DHCP exchange from ``ns``'s eth0; the script's "bound ..." line (or "")."""
    done = in_ns(ns, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "5", "-T", "1", "-A", "1",
                 "-s", script, check=False)
    return next((line for line in done.stdout.splitlines() if line.startswith("bound ")), "")


def test_a_port_answering_as_a_dhcp_server_reaches_no_one(lan, tmp_path):
    driver, client, rogue = lan
    script = tmp_path / "udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)
    log = tmp_path / "rogue.log"
    # A rogue server on r that offers any client an address of its own range.
    server = subprocess.Popen(["ip", "netns", "exec", rogue, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
                               "--port=0", "--user=root", "--group=root", "--bind-interfaces", "--interface=eth0",
                               "--dhcp-range=10.32.0.100,10.32.0.150,12h", "--dhcp-authoritative",
                               f"--dhcp-leasefile={tmp_path / 'rogue.leases'}", f"--log-facility={log}"])
    try:
        probe(client)

        def rogue_offered() -> bool:
            return log.exists() and "DHCPOFFER(eth0)" in log.read_text() and CLIENT_MAC in log.read_text()

        # Unfiltered first: the rogue's offers reach the client (this test can fail).
        dhcp_exchange(client, str(script))
        wait_until(rogue_offered, timeout=10, what="the rogue's offer")
        assert wait_until(lambda: counted(client, "ip saddr 10.32.0.13 udp sport 67"), timeout=5)

        driver.set_security(SECURITY)
        probe(client)  # counted afresh
        log.write_text("")
        bound = dhcp_exchange(client, str(script))
        assert bound == "bound 10.32.0.12 10.32.0.1"  # the host's server, the port's own address
        wait_until(rogue_offered, timeout=10, what="the rogue's offer")
        # A canary from r after its offer, on the same path: once it is in, the offer would be too.
        in_ns(rogue, sys.executable, "-c", SEND, "10.32.0.13", "40000", "255.255.255.255", "68", "canary")
        wait_until(lambda: counted(client, "udp sport 40000"), timeout=5, what="the canary")
        assert counted(client, "ip saddr 10.32.0.13 udp sport 67") == 0
        assert counted(client, "ip saddr 10.32.0.1 udp sport 67") >= 2  # offer and ack
    finally:
        server.kill()
        server.wait()


def test_a_port_answering_as_a_dhcpv6_server_reaches_no_one(lan):
    driver, client, rogue = lan
    lla = {ns: enable_ipv6(ns) for ns in (client, rogue)}
    listener = subprocess.Popen(["ip", "netns", "exec", client, sys.executable, "-c", LISTEN6],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout.readline().strip() == "ready"
        # Unfiltered first: a DHCPv6 server's answer from r reaches the client.
        in_ns(rogue, sys.executable, "-c", SEND, lla[rogue], "547", lla[client], "546", "advertise-1")
        assert listener.stdout.readline().strip() == "advertise-1"

        driver.set_security(SECURITY)
        in_ns(rogue, sys.executable, "-c", SEND, lla[rogue], "547", lla[client], "546", "advertise-2")
        # The canary (not from the server port) follows on the same path and is allowed.
        in_ns(rogue, sys.executable, "-c", SEND, lla[rogue], "40000", lla[client], "546", "canary")
        assert listener.stdout.readline().strip() == "canary"
    finally:
        listener.kill()
        listener.wait()
