"""Security groups on the real kernel: per-port stateful filtering, remote groups,
anti-spoofing, live connections across rule changes, and identical rules after a restart.

One simulated host (a namespace) with a VXLAN network and three veth endpoints in
namespaces of their own, as guests would be on the bridge.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from fabric.network.drivers.linux import LinuxDriver
from fabric.network.model import EndpointSpec, NetworkSpec
from fabric.network.secgroups import RuleSpec, SecurityState, link_local
from fabric.network.secgroups import short_hash as port_hash
from tests.fixtures.netns import in_ns, isolated, mac_of, ping_eventually
from tests.fixtures.processes import wait_until
from tests.functional.network.conftest import host_settings

SERVER = """
import socket, sys, threading
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(8)
    while True:
        c, _ = s.accept()
        threading.Thread(target=lambda c=c: [c.sendall(d) for d in iter(lambda: c.recv(64), b"")],
                         daemon=True).start()
for p in (8080, 8081):
    threading.Thread(target=serve, args=(p,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

CLIENT = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
s.settimeout(2)
print("up", flush=True)
for line in sys.stdin:
    try:
        s.sendall(line.encode()); print(s.recv(64).decode().strip() or "closed", flush=True)
    except OSError as exc:
        print("error", exc, flush=True)
"""

NET = NetworkSpec(id="net-sg", network_type="vxlan", segmentation_id=310, host_address="10.30.0.1/24")
A, B, C = "grp-a", "grp-b", "grp-c"
ALL_EGRESS = [RuleSpec.checked("egress")]


def connects(ns: str, address: str, port: int) -> bool:
    """True when a TCP connection from ``ns`` to ``address:port`` is accepted and echoes."""
    done = in_ns(ns, sys.executable, "-c", CLIENT.replace("for line in sys.stdin:", "for line in ['x\\n']:"),
                 address, str(port), check=False)
    return done.returncode == 0 and "x" in done.stdout


@pytest.fixture
def lan(netns, tmp_path):
    """A host with three endpoints: e1 10.30.0.11, e2 10.30.0.12, e3 10.30.0.13 (no filtering yet)."""
    h1 = netns("h1")
    driver = LinuxDriver(host_settings("h1", "192.168.79.1", str(tmp_path / "h1")), netns=h1)
    driver.setup_network(NET)
    spaces = {}
    for n in (1, 2, 3):
        ns = netns(f"e{n}")
        driver.plug(EndpointSpec(f"ep-{n}", NET.id, f"02:00:00:00:1e:0{n}", address=f"10.30.0.1{n}",
                                 kind="veth", netns=ns))
        netns.configure_endpoint(ns, f"10.30.0.1{n}/24")
        spaces[n] = ns
    server = subprocess.Popen(["ip", "netns", "exec", spaces[1], sys.executable, "-c", SERVER],
                              stdout=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == "ready"
    yield driver, spaces, h1
    server.kill()
    server.wait()
    driver.stop()


def security(members: dict[str, list[str]], a_rules: list[RuleSpec] | None = None) -> SecurityState:
    """e1 in A (tcp 8080 from anywhere), e2 in B (ICMP from members of A), e3 in C (nothing in)."""
    groups = {A: (a_rules if a_rules is not None else [RuleSpec.checked("ingress", protocol="tcp",
                                                                        port_range_min=8080)]) + ALL_EGRESS,
              B: [RuleSpec.checked("ingress", protocol="icmp", remote_group_id=A)] + ALL_EGRESS,
              C: list(ALL_EGRESS)}
    ports = {f"ep-{n}": [g for g, ms in members.items() if f"10.30.0.1{n}" in ms] for n in (1, 2, 3)}
    return SecurityState(groups=groups, ports=ports, members=members)


def test_allowed_ports_reachable_others_not_and_remote_groups_follow_membership(lan):
    driver, e, _ = lan
    # Unfiltered first: everything reaches everything (the probes below can succeed).
    assert connects(e[2], "10.30.0.11", 8081)
    driver.set_security(security({A: ["10.30.0.11"], B: ["10.30.0.12"], C: ["10.30.0.13"]}))

    assert connects(e[2], "10.30.0.11", 8080)  # allowed, and its return traffic flows
    assert not connects(e[2], "10.30.0.11", 8081)  # no rule: dropped
    assert ping_eventually(e[1], "10.30.0.12")  # e1 is in A, B's remote group
    assert isolated(e[3], e[2], "10.30.0.13", "10.30.0.12")  # e3 is not (yet)
    assert isolated(e[2], e[3], "10.30.0.12", "10.30.0.13")  # C lets nothing in

    # e3 joins A: the set of B's remote group follows, and e3 may now ping e2.
    driver.set_security(security({A: ["10.30.0.11", "10.30.0.13"], B: ["10.30.0.12"], C: ["10.30.0.13"]}))
    assert ping_eventually(e[3], "10.30.0.12")


def test_a_member_change_touches_only_its_addresses_in_the_kernels_sets(lan):
    """A port joining and leaving a remote group as announced (change_members: elements added
    and deleted, no rebuild) is enforced as a rebuild from the same state would enforce it."""
    driver, e, _ = lan
    start = security({A: ["10.30.0.11"], B: ["10.30.0.12"], C: ["10.30.0.13"]})
    start.member_ports = {A: {"ep-1": ("10.30.0.11",)}}
    driver.set_security(start)
    before = driver.security_rules()
    assert isolated(e[3], e[2], "10.30.0.13", "10.30.0.12")

    driver.change_members(driver.security.change_members([("ep-3", [A, C], ("10.30.0.13",))]))
    assert ping_eventually(e[3], "10.30.0.12")  # e3 is in A's set now: B lets its ICMP in
    assert connects(e[2], "10.30.0.11", 8080) and not connects(e[2], "10.30.0.11", 8081)  # the rest stays
    delta = driver.security_rules()
    driver.sync(driver.state)  # a rebuild of everything from the same state: the same rules
    assert driver.security_rules() == delta

    driver.change_members(driver.security.change_members([("ep-3", [], ())]))
    assert isolated(e[3], e[2], "10.30.0.13", "10.30.0.12")
    assert driver.security_rules() == before


def test_removing_a_rule_keeps_live_connections_and_stops_new_ones(lan):
    driver, e, _ = lan
    members = {A: ["10.30.0.11"], B: ["10.30.0.12"], C: ["10.30.0.13"]}
    driver.set_security(security(members))
    client = subprocess.Popen(["ip", "netns", "exec", e[2], sys.executable, "-c", CLIENT, "10.30.0.11", "8080"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline().strip() == "up"
        client.stdin.write("one\n")
        client.stdin.flush()
        assert client.stdout.readline().strip() == "one"

        driver.set_security(security(members, a_rules=[]))  # the 8080 rule is gone
        client.stdin.write("two\n")
        client.stdin.flush()
        assert client.stdout.readline().strip() == "two"  # established: documented to keep flowing
        assert not connects(e[2], "10.30.0.11", 8080)  # but no new connection

        driver.set_security(security(members))  # the rule is back: new connections again
        assert connects(e[2], "10.30.0.11", 8080)
    finally:
        client.kill()
        client.wait()


def arrivals(ns: str, source: str) -> int:
    """ICMP echo requests from ``source`` that reached ``ns`` (counted by its own nft table)."""
    listed = in_ns(ns, "nft", "list", "chain", "ip", "probe", "arrive").stdout
    for line in listed.splitlines():
        if f"ip saddr {source} " in line:
            return int(line.split("packets ")[1].split()[0])
    return 0


def test_spoofed_source_address_or_mac_reaches_no_one(lan):
    driver, e, _ = lan
    members = {A: ["10.30.0.11"], B: ["10.30.0.12"], C: ["10.30.0.13"]}
    driver.set_security(security(members, a_rules=[RuleSpec.checked("ingress", protocol="icmp")]))
    subprocess.run(["ip", "netns", "exec", e[1], "nft", "-f", "-"], check=True, text=True, input=(
        "table ip probe {\n chain arrive {\n type filter hook input priority 0;\n"
        " ip saddr 10.30.0.13 icmp type echo-request counter\n"
        " ip saddr 10.30.0.99 icmp type echo-request counter\n }\n}\n"))
    # No ARP needed from e3 (whose ARP for a claimed address would be dropped first).
    in_ns(e[3], "ip", "neigh", "replace", "10.30.0.11", "lladdr", mac_of(e[1]), "dev", "eth0", "nud", "permanent")
    assert ping_eventually(e[3], "10.30.0.11")  # e3's own address and MAC: allowed
    assert arrivals(e[1], "10.30.0.13") >= 1

    # e3 sends from an address that is not its own: nothing arrives.
    in_ns(e[3], "ip", "addr", "add", "10.30.0.99/32", "dev", "eth0")
    in_ns(e[3], "busybox", "ping", "-c", "3", "-W", "1", "-I", "10.30.0.99", "10.30.0.11", check=False)
    assert arrivals(e[1], "10.30.0.99") == 0

    # e3 sends from a MAC that is not its own: nothing arrives. Changing the MAC flushes every
    # neighbour entry of the device, permanent ones too (measured): without pinning e1's again,
    # e3 would ARP with the new MAC and the ARP rule, not the MAC rule, would stop it.
    seen = arrivals(e[1], "10.30.0.13")
    in_ns(e[3], "ip", "link", "set", "eth0", "address", "02:00:00:00:1e:99")
    in_ns(e[3], "ip", "neigh", "replace", "10.30.0.11", "lladdr", mac_of(e[1]), "dev", "eth0", "nud", "permanent")
    in_ns(e[3], "busybox", "ping", "-c", "3", "-W", "1", "10.30.0.11", check=False)
    assert "PERMANENT" in in_ns(e[3], "ip", "neigh", "show", "10.30.0.11").stdout  # no ARP was involved
    assert arrivals(e[1], "10.30.0.13") == seen


def test_restart_rebuilds_identical_rules_and_drops_stale_ones(lan, tmp_path):
    driver, e, h1 = lan
    members = {A: ["10.30.0.11"], B: ["10.30.0.12"], C: ["10.30.0.13"]}
    driver.set_security(security(members))
    before = driver.security_rules()
    assert "jump" in before and "ct state established,related accept" in before
    state = driver.state

    # A new worker (same host, same desired state) rebuilds exactly the same rules.
    restarted = LinuxDriver(host_settings("h1", "192.168.79.1", str(tmp_path / "h1")), netns=h1)
    restarted.security = security(members)
    restarted.sync(state)
    assert restarted.security_rules() == before
    assert connects(e[2], "10.30.0.11", 8080) and not connects(e[2], "10.30.0.11", 8081)

    # Without e3's filtering, its chains go (nothing of fabric's that no longer belongs stays).
    smaller = security(members)
    del smaller.ports["ep-3"]
    restarted.set_security(smaller)
    after = restarted.security_rules()
    assert after != before
    for chain in (f"e{port_hash('ep-3')}", f"i{port_hash('ep-3')}", f"s{port_hash('ep-3')}"):
        assert f"chain {chain} " in before and f"chain {chain} " not in after
    restarted.stop()


#: Sends one ICMPv6 packet to all nodes from this namespace's eth0 and its link-local address
#: argv[2]: ``advert`` (an unsolicited, overriding neighbour advertisement claiming address
#: argv[3] for eth0's MAC) or ``router`` (a router advertisement: "I am your default router").
FORGED = """
import socket, struct, sys
kind, source = sys.argv[1], sys.argv[2]
mac = bytes.fromhex(open("/sys/class/net/eth0/address").read().strip().replace(":", ""))
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
index = socket.if_nametoindex("eth0")
s.bind((source, 0, 0, index))
if kind == "advert":  # type 136, checksum (the kernel fills it), flags: override; target; option 2: MAC
    packet = (struct.pack("!BBHI", 136, 0, 0, 0x20000000) + socket.inet_pton(socket.AF_INET6, sys.argv[3])
              + bytes([2, 1]) + mac)
else:  # type 134: hop limit 64, router lifetime 1800 s; option 1: source MAC
    packet = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0) + bytes([1, 1]) + mac
s.sendto(packet, ("ff02::1", 0, 0, index))
"""


def enable_ipv6(ns: str) -> str:
    """Turn IPv6 on for ``ns``'s eth0 only (no DAD, no router solicitations: it stays on the
    test's bridge); returns its link-local address."""
    in_ns(ns, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0", "net.ipv6.conf.eth0.router_solicitations=0",
          "net.ipv6.conf.eth0.disable_ipv6=0")
    shown = in_ns(ns, "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link").stdout
    return shown.split("inet6 ")[1].split("/")[0]


def ping6(ns: str, address: str, count: int = 2) -> bool:
    return in_ns(ns, "busybox", "ping", "-6", "-c", str(count), "-W", "1", f"{address}%eth0",
                 check=False).returncode == 0


def neighbour_mac(ns: str, address: str) -> str | None:
    shown = in_ns(ns, "ip", "-6", "neigh", "show", address, "dev", "eth0").stdout
    return shown.split("lladdr ")[1].split()[0] if "lladdr " in shown else None


def default_router(ns: str) -> str:
    return in_ns(ns, "ip", "-6", "route", "show", "default").stdout.strip()


def test_ipv6_rules_are_enforced_and_foreign_neighbour_or_router_advertisements_dropped(lan):
    driver, e, _ = lan
    lla = {n: enable_ipv6(e[n]) for n in (1, 2, 3)}
    assert lla == {n: link_local(f"02:00:00:00:1e:0{n}") for n in (1, 2, 3)}
    # Unfiltered first: IPv6 flows, and a forged advertisement (e3 claiming e1) takes e2's entry.
    assert ping6(e[2], lla[1])
    in_ns(e[3], sys.executable, "-c", FORGED, "advert", lla[3], lla[1])
    assert wait_until(lambda: neighbour_mac(e[2], lla[1]) == mac_of(e[3]), timeout=5)
    in_ns(e[2], "ip", "-6", "neigh", "flush", "dev", "eth0")
    # ... and a guest's router advertisement makes it everyone's default router.
    in_ns(e[3], sys.executable, "-c", FORGED, "router", lla[3])
    assert wait_until(lambda: lla[3] in default_router(e[2]), timeout=5)
    in_ns(e[2], "ip", "-6", "route", "flush", "default")

    all_egress = [RuleSpec.checked("egress", "IPv4"), RuleSpec.checked("egress", "IPv6")]
    members = {A: ["10.30.0.11", lla[1]], B: ["10.30.0.12", lla[2]], C: ["10.30.0.13", lla[3]]}

    def enforce(a_ingress: list[RuleSpec]) -> None:
        groups = {A: a_ingress + all_egress, B: list(all_egress), C: list(all_egress)}
        driver.set_security(SecurityState(groups=groups, ports={f"ep-{n}": [g] for n, g in ((1, A), (2, B), (3, C))},
                                          members=members))

    # An IPv4 rule opens IPv4 only: IPv6 to e1 has no rule, so it is dropped.
    enforce([RuleSpec.checked("ingress", "IPv4", "icmp")])
    assert ping_eventually(e[2], "10.30.0.11")
    assert not ping6(e[2], lla[1])
    # An IPv6 rule from remote group B: B's member (by its link-local address) gets through, C's does not.
    enforce([RuleSpec.checked("ingress", "IPv6", "icmpv6", remote_group_id=B)])
    assert ping6(e[2], lla[1])
    assert neighbour_mac(e[2], lla[1]) == mac_of(e[1])  # neighbour discovery works through the filter
    assert not ping6(e[3], lla[1])
    # Filtered, e3's forged advertisement for e1's address and its router advertisement reach no one.
    in_ns(e[3], sys.executable, "-c", FORGED, "advert", lla[3], lla[1])
    in_ns(e[3], sys.executable, "-c", FORGED, "router", lla[3])
    assert ping6(e[2], lla[1], count=1)
    assert neighbour_mac(e[2], lla[1]) == mac_of(e[1]) and default_router(e[2]) == ""
