"""Two simulated hosts, VXLAN tenant networks, real guests, through the real `openstack` CLI.

Every worker runs as its own process over the real RabbitMQ and PostgreSQL
(tests/fixtures/cloud.py); each host is a network namespace with its own
``fabric-compute`` (libvirt, QEMU) and ``fabric-network`` (linux driver).

Reachability is shown from the guests themselves: each runs a user-data
script that pings the addresses it is given for a while and prints how many
answered on its console, read back with ``openstack console log show``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from fabric.db.models import AddressAllocation
from fabric.network import dhcp
from tests.fixtures.cloud import (
    BEGIN,
    CLI_POLL_SECONDS,
    FLAVOR,
    PROBE_WINDOW,
    PROBES,
    address_of,
    dnsmasq_pids,
    links,
    nft_rules,
    probe_results,
    probe_script,
    qemu_pids,
)
from tests.fixtures.netns import ping, ping_eventually, sh
from tests.fixtures.processes import wait_until

pytestmark = [pytest.mark.functional, pytest.mark.slow]

CIDR = "10.9.0.0/24"
TAP = re.compile(r"fabt[0-9a-f]{10}")
NETWORK_LINK = re.compile(r"fab[bx][0-9a-f]{10}")


def _network(cloud, env, name: str, vni: int) -> dict:
    network = cloud.osc(env, "network", "create", "--provider-network-type", "vxlan", "--provider-segment", str(vni),
                        name)
    cloud.osc(env, "subnet", "create", "--network", name, "--subnet-range", CIDR, f"{name}-sub")
    return network


def dhcp_server_running(host, network_id: str) -> bool:
    """Whether ``host``'s DHCP server for the network runs (its pid file names a live dnsmasq of it)."""
    pid_file = host.state_dir / "data" / "network" / host.name / "dhcp" / network_id / "pid"
    try:
        pid = int(pid_file.read_text().strip() or 0)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if pid else b""
    except (FileNotFoundError, ValueError):
        return False
    return dhcp.running(pid) and str(pid_file).encode() in cmdline


def _boot(cloud, env, name: str, network_id: str, address: str, user_data, *extra: str, wait: bool = True) -> dict:
    created = cloud.osc(env, "server", "create", "--flavor", FLAVOR, "--image", cloud.image_id,
                        "--nic", f"net-id={network_id},v4-fixed-ip={address}", "--user-data", str(user_data),
                        *extra, name)
    return cloud.wait_status(env, name) if wait else created


def test_anti_affine_servers_ping_each_other_across_vxlan_and_no_other_project(cloud, projects, tmp_path):
    hosts = {h.name: h for h in cloud.hosts.hosts}
    alice, bob = projects("alice"), projects("bob")
    net_a = _network(cloud, alice.env, "net-a", 4242)
    net_b = _network(cloud, bob.env, "net-b", 4243)  # the same CIDR, another project
    a1, a2, b1 = "10.9.0.11", "10.9.0.12", "10.9.0.13"
    group = cloud.osc(alice.env, "server", "group", "create", "--policy", "anti-affinity", "apart")
    assert group["policies"] == ["anti-affinity"] and group["members"] == [], group
    group_id = group["id"]

    # Bob's server first, probing Alice's addresses until the test has what it needs.
    (tmp_path / "bob.sh").write_text(probe_script([a1, a2], PROBE_WINDOW))
    _boot(cloud, bob.env, "vm-b", net_b["id"], b1, tmp_path / "bob.sh")
    # It took the address IPAM allocated, by DHCP from its host's dnsmasq (read now: the
    # console keeps only its tail, and the probes fill it).
    assert f"fabric-guest: eth0 {b1}/24" in cloud.wait_console(bob.env, "vm-b", BEGIN).string
    for name, address, peer in (("vm1", a1, a2), ("vm2", a2, a1)):
        (tmp_path / f"{name}.sh").write_text(probe_script([peer, b1], PROBE_WINDOW))
        _boot(cloud, alice.env, name, net_a["id"], address, tmp_path / f"{name}.sh", "--hint", f"group={group_id}")
    # Alice's guests run their scripts once up and networked: Bob's probes from then on count.
    for name, address in (("vm1", a1), ("vm2", a2)):
        assert f"fabric-guest: eth0 {address}/24" in cloud.wait_console(alice.env, name, BEGIN).string
    before = probe_results(cloud.console(bob.env, "vm-b"))
    bob_sent = {address: before.get(address, (0, 0))[1] + PROBES for address in (a1, a2)}
    # Each of Alice's servers reaches the other (across hosts, by VXLAN) ...
    for name, peer in (("vm1", a2), ("vm2", a1)):
        cloud.wait_probes(alice.env, name, lambda r, peer=peer: r.get(peer, (0, 0))[0] > 0 and
                          r.get(b1, (0, 0))[1] >= PROBES, f"an answer from {peer} and {PROBES} probes of {b1}")
    cloud.wait_probes(bob.env, "vm-b", lambda r: all(r.get(a, (0, 0))[1] >= n for a, n in bob_sent.items()),
                      f"{PROBES} probes of Alice's guests since they were up")
    results = {name: probe_results(cloud.console(env, name))
               for name, env in (("vm1", alice.env), ("vm2", alice.env), ("vm-b", bob.env))}
    # ... but neither reaches Bob's, nor does Bob's reach either of them, though it has an
    # address in the same CIDR.
    assert results["vm1"][b1][0] == results["vm2"][b1][0] == 0, results
    assert results["vm-b"][a1][0] == results["vm-b"][a2][0] == 0, results

    servers = {name: cloud.osc(alice.env, "server", "show", name) for name in ("vm1", "vm2")}
    placed = {name: s["OS-EXT-SRV-ATTR:host"] for name, s in servers.items()}
    assert sorted(placed.values()) == sorted(hosts), placed  # one on each host
    # Spreading alone would also separate two servers: the group must be what placed them.
    assert sorted(cloud.osc(alice.env, "server", "group", "show", group_id)["members"]) == \
        sorted(s["id"] for s in servers.values())
    assert [g["ID"] for g in cloud.osc(alice.env, "server", "group", "list")] == [group_id]
    assert {address_of(s) for s in servers.values()} == {a1, a2}
    with cloud.db.begin() as session:
        allocated = set(session.scalars(sa.select(AddressAllocation.address).where(
            ~AddressAllocation.request_token.startswith("dhcp:"))))
    assert allocated == {a1, a2, b1}
    # The root namespace took no part: no address on the underlay there.
    assert cloud.hosts.hosts[0].address not in sh("ip", "-o", "addr").stdout

    # Delete: no QEMU, tap, DHCP entry or address allocation left on either host.
    cloud.osc(alice.env, "server", "delete", "--wait", "vm1", "vm2", json_out=False)
    cloud.osc(bob.env, "server", "delete", "--wait", "vm-b", json_out=False)
    cloud.osc(alice.env, "server", "group", "delete", "apart", json_out=False)
    assert cloud.osc(alice.env, "server", "group", "list") == []
    for host in hosts.values():
        assert qemu_pids(host.namespace) == []
        assert not [link for link in links(host.namespace) if TAP.fullmatch(link)]
        for network in (net_a, net_b):
            for hosts_file in (host.state_dir / "data").glob(f"network/*/dhcp/{network['id']}/hosts"):
                assert hosts_file.read_text().strip() == "", hosts_file
    with cloud.db.begin() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(AddressAllocation).where(
            ~AddressAllocation.request_token.startswith("dhcp:"))) == 0
    for host in hosts.values():
        assert not ping(host.namespace, a1) and not ping(host.namespace, a2)

    # With the networks gone, their bridges, VXLAN devices, DHCP servers and rules go from both hosts.
    for project, name in ((alice, "net-a"), (bob, "net-b")):
        cloud.osc(project.env, "subnet", "delete", f"{name}-sub", json_out=False)
        cloud.osc(project.env, "network", "delete", name, json_out=False)
    table = cloud.hosts.settings.network.prefix + "fabric"

    def networks_gone() -> bool:
        return all(not [link for link in links(h.namespace) if NETWORK_LINK.fullmatch(link)]
                   and not dnsmasq_pids(h.namespace) and not nft_rules(h.namespace, table)
                   for h in hosts.values())

    wait_until(networks_gone, 60, "the networks' bridges, VXLAN devices, dnsmasq and nftables rules to go",
               workers=cloud.workers)


def test_reboot_and_stop_start_keep_the_address_and_delete_leaves_nothing(cloud, projects, tmp_path):
    carol = projects("carol")
    cloud.allow_ping(carol)
    network = _network(cloud, carol.env, "net-c", 4244)
    (tmp_path / "hello.sh").write_text("#!/bin/sh\necho fabric-test: hello\n")
    _boot(cloud, carol.env, "vm-c", network["id"], "10.9.0.21", tmp_path / "hello.sh")
    host = cloud.host_of(carol.env, "vm-c")
    bound = "fabric-guest: eth0 10.9.0.21/24"
    cloud.wait_console(carol.env, "vm-c", bound)
    assert ping_eventually(host.namespace, "10.9.0.21", 30)
    [qemu] = qemu_pids(host.namespace)

    def bound_count() -> int:
        return cloud.console(carol.env, "vm-c").count(bound)

    # DHCP turned off stops the host's DHCP server for the network within a second or so; turned
    # on, it runs again (and the reboot below takes its address from it).
    subnet = f"{network['name']}-sub"
    assert dhcp_server_running(host, network["id"])
    cloud.osc(carol.env, "subnet", "set", "--no-dhcp", subnet, json_out=False)
    wait_until(lambda: not dhcp_server_running(host, network["id"]), 10, "the network's DHCP server to stop")
    cloud.osc(carol.env, "subnet", "set", "--dhcp", subnet, json_out=False)
    wait_until(lambda: dhcp_server_running(host, network["id"]), 10, "the network's DHCP server to start again")

    # A reboot (soft: ACPI, then start again) boots the same guest again on the same address.
    before = bound_count()
    cloud.osc(carol.env, "server", "reboot", "--wait", "vm-c", json_out=False)
    # (The console log is appended to across boots.)
    wait_until(lambda: bound_count() > before, 180, "vm-c to take its address again after the reboot",
               workers=cloud.workers, interval=CLI_POLL_SECONDS)
    assert address_of(cloud.osc(carol.env, "server", "show", "vm-c")) == "10.9.0.21"
    assert ping_eventually(host.namespace, "10.9.0.21", 60)

    # Stopped, it answers nothing; started again, the same address answers.
    cloud.osc(carol.env, "server", "stop", "vm-c", json_out=False)
    cloud.wait_status(carol.env, "vm-c", ("SHUTOFF",))
    assert qemu_pids(host.namespace) == []
    assert not ping(host.namespace, "10.9.0.21", count=2)
    cloud.osc(carol.env, "server", "start", "vm-c", json_out=False)
    shown = cloud.wait_status(carol.env, "vm-c")
    assert shown["status"] == "ACTIVE" and address_of(shown) == "10.9.0.21"
    assert ping_eventually(host.namespace, "10.9.0.21", 120)
    assert qemu_pids(host.namespace) and qemu_pids(host.namespace) != [qemu]

    cloud.osc(carol.env, "server", "delete", "--wait", "vm-c", json_out=False)
    for h in cloud.hosts.hosts:
        assert qemu_pids(h.namespace) == []
        assert not [link for link in links(h.namespace) if TAP.fullmatch(link)]
    # Its last guest gone, no host carries the network: no DHCP server or state for it is left.
    assert list((host.state_dir / "data").glob(f"network/*/dhcp/{network['id']}")) == []
    with cloud.db.begin() as session:
        assert list(session.scalars(sa.select(AddressAllocation.address).where(
            ~AddressAllocation.request_token.startswith("dhcp:")))) == []

