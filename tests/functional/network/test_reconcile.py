"""Restarting the worker converges to the same kernel state; removal leaves nothing behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from fabric.network.kernel import RTPROT_FABRIC
from fabric.network.model import EndpointSpec, FloatingSpec, HostSpec, HostState, NetworkSpec
from tests.fixtures.netns import in_ns, pids_in, ping_eventually
from tests.functional.network.test_routed import LAYOUT, routed_network, routed_spec

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))


def snapshot(ns: str) -> dict:
    """The kernel state of a namespace as the ip, bridge and nft tools print it."""
    links = json.loads(in_ns(ns, "ip", "-j", "-d", "link").stdout)
    addrs = json.loads(in_ns(ns, "ip", "-j", "addr").stdout)
    routes = json.loads(in_ns(ns, "ip", "-j", "route", "show", "proto", str(RTPROT_FABRIC)).stdout)
    fdb = json.loads(in_ns(ns, "bridge", "-j", "fdb", "show").stdout)
    nft = in_ns(ns, "nft", "list", "ruleset").stdout
    processes = sorted((pid, open(f"/proc/{pid}/comm").read().strip()) for pid in pids_in(ns))
    return {
        "links": sorted((lk["ifname"], lk.get("linkinfo", {}).get("info_kind"), lk.get("master"),
                         "UP" in lk["flags"]) for lk in links),
        "addrs": sorted((a["ifname"], i["local"], i["prefixlen"]) for a in addrs
                        for i in a["addr_info"] if i["family"] == "inet"),
        "routes": sorted((r["dst"], r.get("gateway"), r.get("dev")) for r in routes),
        "fdb": sorted((f["mac"], f.get("ifname"), f.get("dst")) for f in fdb if f.get("dst")),
        # Each table whole; their order is the order they were (re)made in, which is no state.
        "nft": sorted(block for block in re.split(r"^(?=table )", nft, flags=re.M) if block.strip()),
        "processes": processes,
    }


def full_state(ep_ns: str, dhcp_ns: str) -> HostState:
    state = HostState()
    state.routed = routed_spec(1)
    for spec in (NetworkSpec(id="net-x", network_type="vxlan", segmentation_id=500,
                             host_address="10.30.0.1/24", dhcp=True), routed_network(1, 1)):
        state.networks[spec.id] = spec
    for spec in (EndpointSpec("ep-r", "t1s1", "02:00:00:00:1e:01", address=str(LAYOUT.encode(1, 1, 1, 2)),
                              kind="veth", netns=ep_ns),
                 EndpointSpec("ep-x", "net-x", "02:00:00:00:1e:02", address="10.30.0.5",
                              kind="veth", netns=dhcp_ns),
                 EndpointSpec("ep-t", "net-x", "02:00:00:00:1e:03", address="10.30.0.6")):
        state.endpoints[spec.id] = spec
    state.remote_hosts["h2"] = HostSpec("h2", "192.168.77.2", str(LAYOUT.host_block(2)))
    state.remote_hosts["h3"] = HostSpec("h3", "192.168.77.3", str(LAYOUT.host_block(3)))
    state.floating["172.31.5.10"] = FloatingSpec("172.31.5.10", str(LAYOUT.encode(1, 1, 1, 2)))
    return state


@pytest.fixture
def spawned():
    """Worker processes started by a test; killed (by pid) even when the test fails."""
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def run_worker(spawned: list, ns: str, data_dir: str, state_file: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-W", "ignore", "-m", "tests.functional.network.run_host",
                             ns, "h1", "192.168.77.1", data_dir, state_file],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    spawned.append(proc)
    line = proc.stdout.readline()
    assert line.startswith("ready"), line
    return proc


def test_killed_worker_restarts_to_the_same_kernel_state(netns, simulated_host, tmp_path, spawned):
    h1, ep_ns, dhcp_ns = netns("h1"), netns("ep"), netns("dh")
    netns.underlay(h1, netns("h2"), "192.168.77.1", "192.168.77.2")
    state_file = tmp_path / "state.json"
    state_file.write_text(json.dumps(full_state(ep_ns, dhcp_ns).to_dict()))
    data_dir = str(tmp_path / "h1")

    first = run_worker(spawned, h1, data_dir, str(state_file))
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    before = snapshot(h1)
    # One dnsmasq for the VXLAN network, one for the host's routed endpoints.
    assert [name for _, name in before["processes"]] == ["dnsmasq", "dnsmasq"]

    # Leftovers: one of fabric's (by its name pattern) and two that are not fabric's.
    in_ns(h1, "ip", "link", "add", "fabb0123456789", "type", "bridge")
    in_ns(h1, "ip", "link", "add", "fabric0", "type", "bridge")
    in_ns(h1, "ip", "link", "add", "keepme0", "type", "bridge")
    in_ns(h1, "ip", "link", "set", "keepme0", "up")
    in_ns(h1, "ip", "route", "add", "10.99.0.0/16", "dev", "keepme0", "proto", "static")
    in_ns(h1, "ip", "route", "add", "10.98.0.0/16", "dev", "keepme0", "proto", str(RTPROT_FABRIC))

    second = run_worker(spawned, h1, data_dir, str(state_file))
    os.kill(second.pid, signal.SIGKILL)
    second.wait()
    after = snapshot(h1)
    names = [link[0] for link in after["links"]]
    assert "fabb0123456789" not in names
    assert "fabric0" in names and "keepme0" in names
    foreign = in_ns(h1, "ip", "route", "show", "dev", "keepme0").stdout
    assert "10.99.0.0/16" in foreign and "10.98.0.0/16" not in foreign  # a stale fabric route went
    in_ns(h1, "ip", "link", "del", "fabric0")
    in_ns(h1, "ip", "link", "del", "keepme0")  # takes its route with it
    assert snapshot(h1) == before  # same links, addresses, routes, FDB, rules, same dnsmasq

    # And the restarted host still works: the routed endpoint answers its gateway.
    netns.configure_endpoint(ep_ns, f"{LAYOUT.encode(1, 1, 1, 2)}/16", gateway=str(LAYOUT.host_gateway(1)))
    assert ping_eventually(ep_ns, str(LAYOUT.host_gateway(1)))

    driver = simulated_host(h1, "h1", "192.168.77.1")
    driver.sync(HostState.from_dict(json.loads(state_file.read_text())))
    assert {k: v for k, v in snapshot(h1).items() if k != "addrs"} == {
        k: v for k, v in before.items() if k != "addrs"}
    driver.remove_all()
    leftover = snapshot(h1)
    assert [n for n, *_ in leftover["links"] if n.startswith("fab")] == []
    assert leftover["routes"] == [] and leftover["processes"] == [] and not any("fabfabric" in table for table in leftover["nft"])


def test_removing_a_network_removes_every_kernel_object_it_made(netns, simulated_host):
    h1, e1, e2 = netns("h1"), netns("e1"), netns("e2")
    netns.underlay(h1, netns("h2"), "192.168.77.1", "192.168.77.2")
    driver = simulated_host(h1, "h1", "192.168.77.1")
    driver.set_routed(routed_spec(1))
    driver.set_remote_hosts([HostSpec("h2", "192.168.77.2", str(LAYOUT.host_block(2)))])
    driver.setup_network(routed_network(1, 1))
    baseline = snapshot(h1)

    driver.setup_network(NetworkSpec(id="net-x", network_type="vxlan", segmentation_id=501,
                                     host_address="10.30.0.1/24", dhcp=True))
    driver.setup_network(routed_network(2, 1))
    driver.plug(EndpointSpec("ep-1", "net-x", "02:00:00:00:2e:01", address="10.30.0.5", kind="veth", netns=e1))
    driver.plug(EndpointSpec("ep-2", "net-x", "02:00:00:00:2e:02", address="10.30.0.6"))
    driver.plug(EndpointSpec("ep-3", "t2s1", "02:00:00:00:2e:03", address=str(LAYOUT.encode(1, 2, 1, 2)),
                             kind="veth", netns=e2))
    grown = snapshot(h1)
    # dnsmasq: one for net-x, one for the host's routed endpoints (ep-3).
    assert len(grown["links"]) == len(baseline["links"]) + 5 and len(grown["processes"]) == 2

    driver.teardown_network("net-x")
    driver.teardown_network("t2s1")
    assert snapshot(h1) == baseline
    assert in_ns(e1, "ip", "link", "show", "eth0", check=False).returncode != 0  # the veth peer went too
