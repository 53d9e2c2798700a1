"""IPv6 subnets on the real kernel: the host's dnsmasq advertises the prefix, endpoints take
their SLAAC address from the advertisements or their address by DHCPv6, IPv6 flows between
ports by their global addresses, and security groups still filter it.

IPv6 is turned on only in the namespaces these tests make (the host's bridge by the driver,
each endpoint's eth0 here), and nothing leaves them.
"""

from __future__ import annotations

import sys

import pytest

from fabric.network.drivers.linux import LinuxDriver
from fabric.network.ipv6 import slaac_address
from fabric.network.model import EndpointSpec, NetworkSpec
from fabric.network.secgroups import RuleSpec, SecurityState
from tests.fixtures.netns import in_ns
from tests.fixtures.processes import wait_until
from tests.functional.network.conftest import host_settings

PREFIX = "fd00:34::/64"
MACS = {n: f"02:00:00:00:34:0{n}" for n in (1, 2, 3)}
#: A DHCPv6 client (RFC 8415: solicit, advertise, request, reply) on eth0; prints the address it got.
DHCP6_CLIENT = r"""
import os, socket, struct, sys
mac = bytes.fromhex(open("/sys/class/net/eth0/address").read().strip().replace(":", ""))
duid = struct.pack("!HH", 3, 1) + mac  # DUID-LL: the server finds the client's entry by its MAC
index = socket.if_nametoindex("eth0")
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
s.bind(("::", 546))
s.settimeout(1)

def option(code, data):
    return struct.pack("!HH", code, len(data)) + data

def options(data):
    found = {}
    while len(data) >= 4:
        code, length = struct.unpack("!HH", data[:4])
        found.setdefault(code, data[4:4 + length])
        data = data[4 + length:]
    return found

def exchange(kind, extra, wanted):
    xid = os.urandom(3)
    message = bytes([kind]) + xid + option(1, duid) + option(8, b"\0\0") + extra
    for _ in range(5):
        s.sendto(message, ("ff02::1:2", 547, 0, index))
        try:
            while True:
                data = s.recv(2048)
                if data[0] == wanted and data[1:4] == xid:
                    return options(data[4:])
        except TimeoutError:
            continue
    sys.exit(f"no answer to DHCPv6 message type {kind}")

advertise = exchange(1, option(3, struct.pack("!III", 1, 0, 0)), 2)
reply = exchange(3, option(2, advertise[2]) + option(3, advertise[3]), 7)
print(socket.inet_ntop(socket.AF_INET6, options(reply[3][12:])[5][:16]))
"""


def network(mode: str) -> NetworkSpec:
    return NetworkSpec(id=f"net-v6-{mode}", network_type="vxlan", segmentation_id=314, host_address="10.34.0.1/24",
                       dhcp=True, ipv6_address="fd00:34::1/64", ipv6_mode=mode)


def lan(netns, tmp_path, mode: str, address6: dict[int, str]) -> tuple[LinuxDriver, dict[int, str]]:
    """A host serving ``mode`` on its network, and three endpoints (IPv6 on, taking advertisements)."""
    h1 = netns("h1")
    driver = LinuxDriver(host_settings("h1", "192.168.84.1", str(tmp_path / "h1")), netns=h1)
    net = network(mode)
    driver.setup_network(net)
    spaces = {}
    for n in (1, 2, 3):
        ns = spaces[n] = netns(f"e{n}")
        driver.plug(EndpointSpec(f"ep-{n}", net.id, MACS[n], address=f"10.34.0.1{n}", kind="veth", netns=ns,
                                 address6=address6[n]))
        in_ns(ns, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0", "net.ipv6.conf.eth0.accept_ra=1",
              "net.ipv6.conf.eth0.disable_ipv6=0")
        netns.configure_endpoint(ns, f"10.34.0.1{n}/24")
    return driver, spaces


def global_addresses(ns: str) -> list[str]:
    shown = in_ns(ns, "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global").stdout
    return [line.split("inet6 ")[1].split("/")[0] for line in shown.splitlines()]


def ping6(ns: str, address: str) -> bool:
    return in_ns(ns, "busybox", "ping", "-6", "-c", "2", "-W", "1", address, check=False).returncode == 0


def filtered(driver: LinuxDriver, addresses: dict[int, str]) -> None:
    """e1 lets in ICMPv6 from members of group B (e2) only; e3 is in C."""
    out = [RuleSpec.checked("egress", "IPv4"), RuleSpec.checked("egress", "IPv6")]
    driver.set_security(SecurityState(
        groups={"A": [RuleSpec.checked("ingress", "IPv6", "icmpv6", remote_group_id="B")] + out,
                "B": list(out), "C": list(out)},
        ports={"ep-1": ["A"], "ep-2": ["B"], "ep-3": ["C"]},
        members={"B": [addresses[2]]}))


@pytest.fixture
def slaac(netns, tmp_path):
    address6 = {n: slaac_address(PREFIX, MACS[n]) for n in (1, 2, 3)}
    driver, spaces = lan(netns, tmp_path, "slaac", address6)
    yield driver, spaces, address6
    driver.stop()


def test_slaac_addresses_come_from_router_advertisements_and_are_filtered(slaac):
    driver, e, address6 = slaac
    for n in (1, 2, 3):  # the host's adverts (answers to the endpoint's solicitations)
        assert wait_until(lambda n=n: global_addresses(e[n]) == [address6[n]], timeout=10,
                          what=f"e{n}'s SLAAC address")
    assert ping6(e[3], address6[1])  # unfiltered: global to global
    filtered(driver, address6)
    assert ping6(e[2], address6[1])  # by its global address, a member of B
    assert not ping6(e[3], address6[1])  # not a member: dropped
    # e3 sending from e2's global address is spoofing: dropped too.
    in_ns(e[3], "ip", "-6", "addr", "add", f"{address6[2]}/128", "dev", "eth0", "nodad")
    assert in_ns(e[3], "busybox", "ping", "-6", "-c", "2", "-W", "1", "-I", address6[2], address6[1],
                 check=False).returncode != 0


def test_stateful_addresses_come_by_dhcpv6(netns, tmp_path):
    address6 = {n: f"fd00:34::1{n}" for n in (1, 2, 3)}
    driver, e = lan(netns, tmp_path, "dhcpv6-stateful", address6)
    try:
        for n in (1, 2):
            got = in_ns(e[n], sys.executable, "-c", DHCP6_CLIENT).stdout.strip()
            assert got == address6[n]  # its port's address, found by its MAC
            in_ns(e[n], "ip", "-6", "addr", "add", f"{got}/64", "dev", "eth0")
        assert global_addresses(e[1]) == [address6[1]]  # managed: no SLAAC address beside it
        filtered(driver, address6)
        assert ping6(e[2], address6[1])
    finally:
        driver.stop()
