"""The edge of the network end to end, through the real `openstack` CLI, on the simulated hosts
with a real guest: an external (flat, provider) network whose physical network every host maps
to its interface ``ext0`` on an outside segment; a router with a leg on the guest's L2 network
and its gateway on the external one; the guest's egress seen outside with the router's external
address (SNAT); a floating address reachable from the outside, which has no route toward the
hosts or their private addresses (the hosts hold the external addresses on-link).
"""

from __future__ import annotations

import subprocess

import pytest

from fabric.sim.netns import in_ns, sh
from tests.fixtures.cloud import FLAVOR, PROBE_WINDOW, address_of, probe_script
from tests.fixtures.netns import ping_eventually

pytestmark = [pytest.mark.functional, pytest.mark.slow]

PUBLIC = "203.0.113.0/24"  # TEST-NET-3: stands for a public range
OUTSIDE = "203.0.113.250"  # a machine on the external segment
FLOATING = "203.0.113.77"
MAPPING = "FABRIC_NETWORK_EXTERNAL_INTERFACES"

#: The outside remembers the source of every echo request that reaches it.
PROBE = """table ip probe {
 set seen { type ipv4_addr; flags dynamic; }
 chain arrive {
  type filter hook input priority 0;
  icmp type echo-request add @seen { ip saddr }
 }
}
"""


def sources_seen(ns: str) -> set[str]:
    listed = in_ns(ns, "nft", "list", "set", "ip", "probe", "seen").stdout
    if "elements = {" not in listed:
        return set()
    return {a.strip() for a in listed.split("elements = {")[1].split("}")[0].split(",")}


def restart_network_workers(cloud) -> None:
    for host in cloud.hosts.hosts:
        cloud.hosts.restart_worker(host.name, "fabric-network")


@pytest.fixture
def outside(cloud, netns):
    """A namespace on the external segment (bridge ``pub``, joined to every host's ``ext0``), and
    every host's network worker restarted with ``[network] external_interfaces = public:ext0``
    (restarted without it afterwards, so the shared cloud is left as it was)."""
    ns = netns("outside")
    sh("ip", "-n", ns, "link", "add", "pub", "type", "bridge")
    for host in cloud.hosts.hosts:
        sh("ip", "-n", ns, "link", "add", f"x{host.index}", "type", "veth", "peer", "name", "ext0",
           "netns", host.namespace)
        sh("ip", "-n", ns, "link", "set", f"x{host.index}", "master", "pub", "up")
        sh("ip", "-n", host.namespace, "link", "set", "ext0", "up")
    sh("ip", "-n", ns, "link", "set", "pub", "up")
    sh("ip", "-n", ns, "addr", "add", f"{OUTSIDE}/24", "dev", "pub")
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=PROBE, text=True, check=True)
    cloud.hosts.environ[MAPPING] = "public:ext0"
    try:
        restart_network_workers(cloud)
        yield ns
    finally:
        cloud.hosts.environ.pop(MAPPING, None)
        restart_network_workers(cloud)


def test_snat_egress_and_a_floating_address_through_the_cli(cloud, projects, outside, tmp_path):
    ivy = projects("ivy")
    cloud.allow_ping(ivy)
    env = ivy.env
    ext = cloud.osc(env, "network", "create", "--external", "--provider-network-type", "flat",
                    "--provider-physical-network", "public", "ext")
    cloud.osc(env, "subnet", "create", "--network", ext["id"], "--subnet-range", PUBLIC, "--no-dhcp",
              "--allocation-pool", "start=203.0.113.10,end=203.0.113.99", "ext-sub")
    inner = cloud.osc(env, "network", "create", "inner")
    cloud.osc(env, "subnet", "create", "--network", inner["id"], "--subnet-range", "10.62.0.0/24", "inner-sub")
    cloud.osc(env, "router", "create", "edge")
    try:
        cloud.osc(env, "router", "add", "subnet", "edge", "inner-sub", json_out=False)
        cloud.osc(env, "router", "set", "--external-gateway", ext["id"], "edge", json_out=False)
        [gateway] = cloud.osc(env, "router", "show", "edge")["external_gateway_info"]["external_fixed_ips"]
        snat = gateway["ip_address"]

        # The guest pings the outside from boot: out through its host, as the router's address.
        (tmp_path / "probe.sh").write_text(probe_script([OUTSIDE], PROBE_WINDOW))
        cloud.osc(env, "server", "create", "--flavor", FLAVOR, "--image", cloud.image_id, "--nic",
                  f"net-id={inner['id']}", "--user-data", str(tmp_path / "probe.sh"), "vm-edge")
        fixed = address_of(cloud.wait_status(env, "vm-edge"))
        cloud.wait_probes(env, "vm-edge", lambda r: r.get(OUTSIDE, (0, 0))[0] > 0, f"an answer from {OUTSIDE}")
        assert snat in sources_seen(outside) and fixed not in sources_seen(outside)
        assert in_ns(outside, "ip", "route", "get", fixed, check=False).returncode != 0  # no way in but NAT

        # A floating address: the guest's host holds it on ext0, the outside reaches it on-link.
        cloud.osc(env, "floating", "ip", "create", "--floating-ip-address", FLOATING, ext["id"])
        cloud.osc(env, "server", "add", "floating", "ip", "vm-edge", FLOATING, json_out=False)
        assert ping_eventually(outside, FLOATING, 30), cloud.logs()
        host = cloud.host_of(env, "vm-edge")
        assert f"{FLOATING}/24" in in_ns(host.namespace, "ip", "-4", "-o", "addr", "show", "ext0").stdout
    finally:
        for args in (("floating", "ip", "delete", FLOATING), ("server", "delete", "--wait", "vm-edge"),
                     ("router", "unset", "--external-gateway", "edge"),
                     ("router", "remove", "subnet", "edge", "inner-sub"), ("router", "delete", "edge")):
            cloud.cli.run(list(args), env)
