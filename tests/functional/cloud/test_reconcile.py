"""`fabric-manage reconcile` on real hosts: drift made behind fabric's back, reported, repaired.

One real guest on a VXLAN network of the shared cloud (tests/fixtures/cloud.py: namespaces,
QEMU, every worker its own process). Each kind of drift is made the way an operator's
mistake or a crash makes it (the guest's QEMU killed, a guest whose row says deleted, a tap, a bridge or a DHCP hosts entry
deleted, an nftables rule removed, a leftover bridge, an address row deleted, an
allocation left without a port); the command run as an operator runs it reports it,
repairs it only with the flag that names its kind, and the next report is clean.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from fabric.db.models import AddressAllocation, Instance
from fabric.ipam.allocator import Allocator
from fabric.network.naming import Names
from fabric.sim.netns import in_ns, pids_in
from tests.fixtures.cloud import FLAVOR, address_of, links
from tests.fixtures.processes import REPO, wait_until

pytestmark = [pytest.mark.functional, pytest.mark.slow]

CIDR = "10.77.0.0/24"
NAMES = Names("fab")


def manage(cloud, *args: str) -> tuple[int, str]:
    """``fabric-manage reconcile *args`` as an operator runs it, against the cloud: (status, output)."""
    done = subprocess.run([sys.executable, str(REPO / "bin" / "fabric-manage"), "--config-file",
                           cloud.hosts.config_file, "reconcile", *args], cwd=REPO, env=cloud.hosts.environ,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1), f"fabric-manage reconcile {' '.join(args)}: {done.returncode}\n" \
                                      f"{done.stdout}\n{done.stderr}"
    return done.returncode, done.stdout


def lines_about(output: str, *idents: str) -> list[str]:
    return [line for line in output.splitlines() if any(ident in line for ident in idents)]


@pytest.fixture
def server(cloud, projects):
    """One ACTIVE server on a VXLAN network: its row, host, NIC port and network."""
    env = projects("drift").env
    network = cloud.osc(env, "network", "create", "--provider-network-type", "vxlan", "--provider-segment",
                        "4377", "drift-net")
    cloud.osc(env, "subnet", "create", "--network", "drift-net", "--subnet-range", CIDR, "drift-sub")
    cloud.osc(env, "server", "create", "--flavor", FLAVOR, "--image", cloud.image_id, "--nic",
              f"net-id={network['id']}", "drift-vm")
    shown = cloud.wait_status(env, "drift-vm")
    with cloud.db.begin() as session:
        [vif] = session.scalar(sa.select(Instance.network_info).where(Instance.id == shown["id"]))
    return {"env": env, "id": shown["id"], "host": cloud.host_of(env, "drift-vm"), "network": network["id"],
            "port": vif["id"], "pool": vif["pool"], "address": address_of(shown)}


def _qemu_of(namespace: str, instance_id: str) -> int:
    for pid in pids_in(namespace):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if instance_id.encode() in cmdline and b"qemu" in cmdline.split(b"\0", 1)[0]:
            return pid
    raise AssertionError(f"no QEMU process of {instance_id} in {namespace}")


def _vm_state(cloud, server) -> str:
    with cloud.db.begin() as session:
        return session.scalar(sa.select(Instance.vm_state).where(Instance.id == server["id"]))


def _report_or_overtaken(cloud, server) -> str | None:
    """The servers report once it shows the killed guest; "overtaken" once the periodic power
    sync has repaired it first (through the same path); None while neither."""
    out = manage(cloud, "servers", "--host", server["host"].name)[1]
    if f"unsynced server {server['id']}" in out:
        return out
    return "overtaken" if _vm_state(cloud, server) == "stopped" else None


def _repaired_first(cloud, server, out: str) -> bool:
    """Whether the periodic power sync repaired the killed guest before this run of the command
    could: it then reports the server in sync (no line; its row stopped), or changed since its
    own report (the sync came between the report and the repair)."""
    about = lines_about(out, server["id"])
    if not about:
        assert _vm_state(cloud, server) == "stopped", out
        return True
    return "changed since the report" in about[0]


def test_a_guest_killed_behind_fabrics_back_is_reported_unsynced_and_fixed(cloud, server):
    host = server["host"]
    code, out = manage(cloud, "servers", "--host", host.name)
    assert lines_about(out, server["id"]) == [], out
    # The power sync (every 60 s) repairs this drift too, through the same step; an attempt it
    # overtakes is made again, so the report and the repair shown are the command's own.
    for _attempt in range(3):
        if _vm_state(cloud, server) != "active":
            cloud.osc(server["env"], "server", "start", "drift-vm", json_out=False)
            cloud.wait_status(server["env"], "drift-vm")
        os.kill(_qemu_of(host.namespace, server["id"]), signal.SIGKILL)
        out = wait_until(lambda: _report_or_overtaken(cloud, server), timeout=60, what="the killed guest reported")
        if out == "overtaken":
            continue
        [line] = lines_about(out, server["id"])
        assert "database active/RUNNING, hypervisor" in line and "(stopped)" in line, line
        assert _vm_state(cloud, server) == "active"  # a report changes nothing
        code, out = manage(cloud, "servers", "--host", host.name, "--fix-stale", "--fix-orphans")
        if _repaired_first(cloud, server, out):
            continue
        assert not lines_about(out, server["id"])[0].endswith("[fixed]"), out  # not its kind
        code, out = manage(cloud, "servers", "--host", host.name, "--fix-unsynced")
        if _repaired_first(cloud, server, out):
            continue
        [line] = lines_about(out, server["id"])
        assert line.endswith("[fixed]"), out
        break
    else:
        pytest.fail("the periodic power sync overtook every attempt")
    assert cloud.osc(server["env"], "server", "show", "drift-vm")["status"] == "SHUTOFF"
    code, out = manage(cloud, "servers", "--host", host.name)
    assert code == 0 and lines_about(out, server["id"]) == [], out


def test_a_guest_the_database_forgot_is_reported_orphan_and_destroyed_by_its_flag(cloud, server):
    host, ns = server["host"], server["host"].namespace
    qemu = _qemu_of(ns, server["id"])
    # Behind fabric's back: the row says deleted while its guest still runs on the host.
    with cloud.db.begin() as session:
        session.execute(sa.update(Instance).where(Instance.id == server["id"]).values(deleted=True))
    try:
        code, out = manage(cloud, "servers", "--host", host.name)
        [line] = lines_about(out, server["id"])
        assert code == 1 and line == (f"{host.name}: orphan server {server['id']}: guest RUNNING: "
                                      "the server is deleted in the database"), out
        assert _qemu_of(ns, server["id"]) == qemu  # a report changes nothing
        code, out = manage(cloud, "servers", "--host", host.name, "--fix-stale", "--fix-unsynced")
        assert not lines_about(out, server["id"])[0].endswith("[fixed]"), out  # not its kind
        code, out = manage(cloud, "servers", "--host", host.name, "--fix-orphans")
        assert lines_about(out, server["id"])[0].endswith("[fixed]"), out
        wait_until(lambda: not Path(f"/proc/{qemu}").exists(), timeout=60, what="the orphan's QEMU gone")
        code, out = manage(cloud, "servers", "--host", host.name)
        assert lines_about(out, server["id"]) == [], out
    finally:
        # Live again, its guest gone (a stale server now): the project's clean-up deletes it.
        with cloud.db.begin() as session:
            session.execute(sa.update(Instance).where(Instance.id == server["id"]).values(deleted=False))


def test_kernel_objects_deleted_or_left_behind_are_reported_and_repaired_by_their_flag(cloud, server):
    host, ns = server["host"], server["host"].namespace
    tap, bridge = NAMES.endpoint(server["port"]), NAMES.bridge(server["network"])
    leftover = NAMES.bridge("00000000-dead-4000-8000-000000000000")
    hosts_file = host.state_dir / "data" / "network" / host.name / "dhcp" / server["network"] / "hosts"
    code, out = manage(cloud, "networks", "--host", host.name)
    assert code == 0, out

    in_ns(ns, "ip", "link", "del", tap)
    in_ns(ns, "ip", "link", "del", bridge)
    in_ns(ns, "ip", "link", "add", leftover, "type", "bridge")
    entry = next(line for line in hosts_file.read_text().splitlines() if server["address"] in line)
    hosts_file.write_text("".join(f"{line}\n" for line in hosts_file.read_text().splitlines() if line != entry))
    listed = json.loads(in_ns(ns, "nft", "-j", "-a", "list", "chain", "ip", NAMES.table, "forward").stdout)
    handle = next(item["rule"]["handle"] for item in listed["nftables"] if "rule" in item)
    in_ns(ns, "nft", "delete", "rule", "ip", NAMES.table, "forward", "handle", str(handle))

    code, out = manage(cloud, "networks", "--host", host.name)
    assert code == 1
    for expected in (f"stale tap {tap}: missing", f"stale bridge {bridge}: missing",
                     f"orphan bridge {leftover}: in the kernel", f"stale dhcp-entry {server['network']}/",
                     f"stale nft-rule ip {NAMES.table} forward"):
        assert expected in out, out
    assert tap not in links(ns) and leftover in links(ns)  # a report changes nothing

    code, out = manage(cloud, "networks", "--host", host.name, "--fix-stale")
    assert code == 1, out  # the orphan is left: its kind was not named
    stale = [line for line in out.splitlines() if f"{host.name}: stale " in line]
    assert len(stale) == 4 and all(line.endswith("[fixed]") for line in stale), out  # tap, bridge, entry, rule
    assert tap in links(ns) and bridge in links(ns) and leftover in links(ns)
    assert entry in hosts_file.read_text().splitlines()
    assert f"orphan bridge {leftover}" in out and f"orphan bridge {leftover}: in the kernel for no database " \
                                                 "object [fixed]" not in out

    code, out = manage(cloud, "networks", "--host", host.name, "--fix-orphans")
    assert f"orphan bridge {leftover}: in the kernel for no database object [fixed]" in out, out
    assert leftover not in links(ns)
    code, out = manage(cloud, "networks", "--host", host.name)
    assert code == 0 and "0 finding(s)" in out, out
    # Repaired in the kernel: the tap is attached to its bridge again.
    master = in_ns(ns, "ip", "-o", "link", "show", tap).stdout
    assert f"master {bridge}" in master


def test_address_rows_lost_or_leaked_are_reported_and_repaired_through_ipam(cloud, server):
    code, out = manage(cloud, "addresses")
    assert lines_about(out, server["port"], server["pool"]) == [], out
    with cloud.db.begin() as session:
        session.execute(sa.delete(AddressAllocation).where(AddressAllocation.port_id == server["port"]))
    allocator = Allocator(cloud.db)
    try:
        leaked = allocator.allocate(server["pool"], f"leak-{time.monotonic_ns()}", None)
    finally:
        allocator.close()

    code, out = manage(cloud, "addresses")
    assert f"stale port {server['port']}: server {server['id']}'s NIC records {server['address']}" in out, out
    assert f"orphan allocation {server['pool']}/{leaked['address']}: held for no port" in out, out

    code, out = manage(cloud, "addresses", "--fix-orphans")
    assert lines_about(out, f"orphan allocation {server['pool']}/{leaked['address']}:")[0].endswith("[fixed]"), out
    assert not lines_about(out, f"stale port {server['port']}")[0].endswith("[fixed]"), out  # not its kind
    code, out = manage(cloud, "addresses", "--fix-stale")
    assert lines_about(out, f"stale port {server['port']}")[0].endswith("[fixed]"), out
    with cloud.db.begin() as session:
        assert session.scalars(sa.select(AddressAllocation.address)
                               .where(AddressAllocation.port_id == server["port"])).all() == [server["address"]]
    code, out = manage(cloud, "addresses")
    assert lines_about(out, server["port"], server["pool"]) == [], out


def test_routes_deleted_redirected_or_added_are_reported_and_repaired(cloud, projects):
    env = projects("drift-routed").env
    network = cloud.osc(env, "network", "create", "--provider-network-type", "routed", "drift-routed")
    cloud.osc(env, "server", "create", "--flavor", FLAVOR, "--image", cloud.image_id, "--nic",
              f"net-id={network['id']}", "drift-routed-vm")
    address = address_of(cloud.wait_status(env, "drift-routed-vm"))
    host = cloud.host_of(env, "drift-routed-vm")
    ns, proto = host.namespace, "176"
    code, out = manage(cloud, "networks", "--host", host.name)
    assert code == 0, out  # the host's routed DHCP server and routes are what is wanted

    [remote] = [h for h in cloud.hosts.hosts if h.name != host.name]
    routes = json.loads(in_ns(ns, "ip", "-j", "route", "show", "proto", proto).stdout)
    block = next(r["dst"] for r in routes if r.get("gateway") == remote.address)
    wrong = remote.address.rsplit(".", 1)[0] + ".250"  # on the underlay's link, not the remote host
    in_ns(ns, "ip", "route", "del", f"{address}/32", "proto", proto)
    in_ns(ns, "ip", "route", "replace", block, "via", wrong, "proto", proto)
    in_ns(ns, "ip", "route", "add", "10.255.254.0/24", "via", remote.address, "proto", proto)

    code, out = manage(cloud, "networks", "--host", host.name)
    assert code == 1
    for expected in (f"stale route {address}/32: missing", f"unsynced route {block}: via {wrong}, wanted "
                     f"{remote.address}", f"orphan route 10.255.254.0/24: via {remote.address}"):
        assert expected in out, out
    code, out = manage(cloud, "networks", "--host", host.name, "--fix-all")
    assert all(line.endswith("[fixed]") for line in lines_about(out, "route ")), out
    routes = {r["dst"]: r.get("gateway") or r.get("dev")
              for r in json.loads(in_ns(ns, "ip", "-j", "route", "show", "proto", proto).stdout)}
    assert routes[block] == remote.address and address in routes and "10.255.254.0/24" not in routes
    code, out = manage(cloud, "networks", "--host", host.name)
    assert code == 0 and "0 finding(s)" in out, out
