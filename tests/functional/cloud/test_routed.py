"""Romana's routed L3 mode across two simulated hosts, real guests, through the real `openstack` CLI.

A routed network has no subnet: its addresses come from the project's segment
(fabric.ipam's layout: prefix | host | tenant | segment | endpoint), so each
server's address is known before it boots: the first endpoint of a fresh
segment on host H is ``layout.encode(H, tenant, segment, first offset)``.
Routed networks, server groups and floating IPs are made through the CLI like
everything else (``network create --provider-network-type routed`` numbers the
project's segment in IPAM); the test reads the numbers back from the database
only to predict the addresses.

Guests take their addresses by DHCP from their host (one server for its routed
endpoints: a /32 routed via the host's gateway) and run a user-data probe
(:func:`tests.fixtures.cloud.probe_script`); each host holds exactly one fabric
route per remote host (proto 176) and a /32 per local guest.
"""

from __future__ import annotations

import json
import secrets

import pytest
import sqlalchemy as sa

from fabric.db.models import Network, TopologyHost
from fabric.ipam.layout import FIRST_ENDPOINT_OFFSET
from fabric.ipam.topology import Topology
from fabric.network.kernel import RTPROT_FABRIC
from fabric.sim import hosts as sim
from fabric.sim.netns import in_ns, sh
from tests.fixtures.cloud import (
    BEGIN,
    FLAVOR,
    PROBE_WINDOW,
    PROBES,
    address_of,
    nft_rules,
    probe_results,
    probe_script,
)
from tests.fixtures.netns import ping, ping_eventually

pytestmark = [pytest.mark.functional, pytest.mark.slow]


def fabric_routes(ns: str) -> dict[str, str]:
    """Destination -> gateway (or device) of fabric's routes (proto 176) in ``ns``."""
    routes = json.loads(in_ns(ns, "ip", "-j", "route", "show", "proto", str(RTPROT_FABRIC)).stdout)
    return {r["dst"] if "/" in r["dst"] else r["dst"] + "/32": r.get("gateway") or r["dev"] for r in routes}


def _host_numbers(cloud) -> dict[str, int]:
    with cloud.db.begin() as session:
        return {row.name: row.number for row in session.execute(sa.select(TopologyHost.name, TopologyHost.number))}


def _routed_network(cloud, project, name: str) -> tuple[str, dict[str, str]]:
    """A routed network made through the CLI (on a new segment of ``project``); (its id, host name ->
    its first address there)."""
    network = cloud.osc(project.env, "network", "create", "--provider-network-type", "routed", name)
    assert network["provider:network_type"] == "routed", network
    with cloud.db.begin() as session:
        segment_id = session.get(Network, network["id"]).segment_id
    segment, tenant, _, layout = Topology(cloud.db).segment(segment_id)
    assert (tenant.project_id, segment.name) == (project.project_id, name)
    numbers = _host_numbers(cloud)
    return network["id"], {host.name: str(layout.encode(numbers[host.name], tenant.number, segment.number,
                                                         FIRST_ENDPOINT_OFFSET)) for host in cloud.hosts.hosts}


def test_routed_servers_ping_each_other_across_hosts_and_no_other_project(cloud, projects, tmp_path):
    hosts = {h.name: h for h in cloud.hosts.hosts}
    erin, frank = projects("erin"), projects("frank")
    net_e, erin_at = _routed_network(cloud, erin, "web")
    net_f, frank_at = _routed_network(cloud, frank, "db")
    group_id = cloud.osc(erin.env, "server", "group", "create", "--policy", "anti-affinity", "apart")["id"]

    # Frank's one server probes both of Erin's addresses; wherever it lands, one of his two
    # candidate addresses is its own, and each of Erin's probes both.
    (tmp_path / "frank.sh").write_text(probe_script(sorted(erin_at.values()), PROBE_WINDOW))
    cloud.osc(frank.env, "server", "create", "--flavor", FLAVOR, "--image", cloud.image_id, "--nic",
              f"net-id={net_f}", "--user-data", str(tmp_path / "frank.sh"), "vm-f")
    cloud.wait_status(frank.env, "vm-f")
    # Each console's start, read as its script begins: the console keeps only its tail, and the probes fill it.
    booted = {"vm-f": cloud.wait_console(frank.env, "vm-f", BEGIN).string}
    (tmp_path / "erin.sh").write_text(probe_script(sorted(erin_at.values()) + sorted(frank_at.values()),
                                                   PROBE_WINDOW))
    for name in ("vm-e1", "vm-e2"):
        cloud.osc(erin.env, "server", "create", "--flavor", FLAVOR, "--image", cloud.image_id, "--nic",
                  f"net-id={net_e}", "--user-data", str(tmp_path / "erin.sh"), "--hint", f"group={group_id}", name)
        cloud.wait_status(erin.env, name)
    # Erin's guests run their scripts once up and networked: Frank's probes from then on count.
    for name in ("vm-e1", "vm-e2"):
        booted[name] = cloud.wait_console(erin.env, name, BEGIN).string
    before = probe_results(cloud.console(frank.env, "vm-f"))

    shown = {name: cloud.osc(env, "server", "show", name)
             for name, env in (("vm-e1", erin.env), ("vm-e2", erin.env), ("vm-f", frank.env))}
    placed = {name: s["OS-EXT-SRV-ATTR:host"] for name, s in shown.items()}
    assert {placed["vm-e1"], placed["vm-e2"]} == set(hosts), placed  # one on each host
    assert set(cloud.osc(erin.env, "server", "group", "show", "apart")["members"]) == \
        {shown["vm-e1"]["id"], shown["vm-e2"]["id"]}
    # Addresses as the layout predicts (the probes were written with them), taken by DHCP.
    for name, at in (("vm-e1", erin_at), ("vm-e2", erin_at), ("vm-f", frank_at)):
        assert address_of(shown[name]) == at[placed[name]], (name, shown[name]["addresses"], at)
    e1, e2, f = (address_of(shown[n]) for n in ("vm-e1", "vm-e2", "vm-f"))
    for name, address in (("vm-e1", e1), ("vm-e2", e2), ("vm-f", f)):
        assert f"fabric-guest: eth0 {address}/" in booted[name], booted[name][-2000:]
    # Across hosts, routed: each of Erin's reaches the other ...
    for name, peer in (("vm-e1", e2), ("vm-e2", e1)):
        cloud.wait_probes(erin.env, name, lambda r, peer=peer: r.get(peer, (0, 0))[0] > 0 and
                          r.get(f, (0, 0))[1] >= PROBES, f"an answer from {peer} and {PROBES} probes of {f}")
    frank_sent = {address: before.get(address, (0, 0))[1] + PROBES for address in (e1, e2)}
    cloud.wait_probes(frank.env, "vm-f", lambda r: all(r.get(a, (0, 0))[1] >= n for a, n in frank_sent.items()),
                      f"{PROBES} probes of Erin's guests since they were up")
    results = {name: probe_results(cloud.console(env, name))
               for name, env in (("vm-e1", erin.env), ("vm-e2", erin.env), ("vm-f", frank.env))}
    # ... but neither reaches Frank's, nor he them.
    assert results["vm-e1"][f][0] == results["vm-e2"][f][0] == 0, results
    assert results["vm-f"][e1][0] == results["vm-f"][e2][0] == 0, results

    # Exactly one route per remote host (its block via its tunnel address), a /32 per local guest.
    _, layout = Topology(cloud.db).datacenter()
    numbers = _host_numbers(cloud)
    for name, host in hosts.items():
        routes = fabric_routes(host.namespace)
        others = [h for h in hosts.values() if h.name != name]
        assert {dst: via for dst, via in routes.items() if not dst.endswith("/32")} == {
            str(layout.host_block(numbers[h.name])): h.address for h in others}, routes
        local = {address_of(s) for n, s in shown.items() if placed[n] == name}
        assert {dst.removesuffix("/32") for dst in routes if dst.endswith("/32")} == local, routes


PUBLIC = "203.0.113.0/24"  # TEST-NET-3: stands for a public range
FLOATING = "203.0.113.10"
OUTSIDE = "198.18.0.250"  # on the underlay, as the hosts' upstream router would be


def test_a_floating_ip_reaches_a_routed_guest_from_outside_until_disassociated(cloud, projects, netns):
    """``floating ip create`` takes the address from the external network's subnet (IPAM),
    ``server add floating ip`` associates it through the guest's port (the guest's host's network
    worker translates it), ``floating ip unset --port`` disassociates, ``floating ip delete`` frees it."""
    gina = projects("gina")
    cloud.allow_ping(gina)
    network_id, _ = _routed_network(cloud, gina, "pub")
    external = cloud.osc(gina.env, "network", "create", "--external", "ext")
    cloud.osc(gina.env, "subnet", "create", "--network", external["id"], "--subnet-range", PUBLIC, "--no-dhcp",
              "ext-sub")
    cloud.osc(gina.env, "server", "create", "--flavor", FLAVOR, "--image", cloud.image_id, "--nic",
              f"net-id={network_id}", "vm-g")
    shown = cloud.wait_status(gina.env, "vm-g")
    fixed, host = address_of(shown), cloud.hosts.host(shown["OS-EXT-SRV-ATTR:host"])
    cloud.wait_console(gina.env, "vm-g", f"fabric-guest: eth0 {fixed}/")

    # The outside: a namespace on the underlay that routes the floating address to the guest's host.
    outside = netns("outside")
    underlay = cloud.hosts.underlay_namespace
    port = f"o{secrets.token_hex(3)}"
    sh("ip", "-n", underlay, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", outside)
    sh("ip", "-n", underlay, "link", "set", port, "master", sim.UNDERLAY_BRIDGE, "up")
    netns.configure_endpoint(outside, f"{OUTSIDE}/{host.prefixlen}")
    in_ns(outside, "ip", "route", "add", f"{FLOATING}/32", "via", host.address)

    floating = cloud.osc(gina.env, "floating", "ip", "create", "--floating-ip-address", FLOATING, external["id"])
    table = cloud.hosts.settings.network.prefix + "fabric"
    try:
        assert (floating["floating_ip_address"], floating["port_id"]) == (FLOATING, None), floating
        assert not ping(outside, FLOATING, count=2)  # nothing answers before it is associated
        cloud.osc(gina.env, "server", "add", "floating", "ip", "vm-g", FLOATING, json_out=False)
        associated = cloud.osc(gina.env, "floating", "ip", "show", FLOATING)
        assert (associated["fixed_ip_address"], associated["status"]) == (fixed, "ACTIVE"), associated
        assert ping_eventually(outside, FLOATING, 30), cloud.logs()
        assert [r for r in nft_rules(host.namespace, table) if FLOATING in r]

        cloud.osc(gina.env, "floating", "ip", "unset", "--port", FLOATING, json_out=False)
        assert cloud.osc(gina.env, "floating", "ip", "show", FLOATING)["port_id"] is None
        assert not ping(outside, FLOATING, count=3)
        assert not [r for r in nft_rules(host.namespace, table) if FLOATING in r]
    finally:
        cloud.osc(gina.env, "floating", "ip", "delete", FLOATING, json_out=False)
    assert cloud.osc(gina.env, "floating", "ip", "list") == []
