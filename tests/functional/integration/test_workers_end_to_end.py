"""The workers together, without the HTTP API's HTTP layer: scheduling -> build -> actions -> delete.

(a) In one process, as ``fabric-all`` runs them: ipam, scheduler, and a
network and a compute worker for each of two hosts, all Services on one
``memory://`` transport and one SQLite database, with the fake virt and the
fake (recording) network drivers. (b) The same happy path with every worker
in a process of its own (the ``bin/`` launchers) over the real RabbitMQ and
PostgreSQL.

The instance row is written as the API writes it; from there on only the
workers act: the scheduler claims a host and casts ``build_instance``; the
compute worker binds a port per NIC, takes its address from IPAM (a classic
subnet and a routed segment), has the host's network worker plug it, and
spawns the guest; deleting unplugs, releases and destroys. Actions and
deletes go the way the HTTP API sends them: ``fabric.compute.api`` over the
API's RPC clients.
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import signal
import sys

import eventlet
import pytest

from fabric import config, rpc
from fabric.api.clients import rpc_clients
from fabric.compute import states
from fabric.compute.api import ComputeService
from fabric.compute.manager import ComputeManager
from fabric.context import RequestContext
from fabric.db import Database
from fabric.db.models import Base, ComputeNode
from fabric.ipam.manager import IpamManager
from fabric.network import dbstate
from fabric.network.manager import NetworkManager
from fabric.network.rpcapi import NetworkAPI
from fabric.scheduler.manager import SchedulerManager
from fabric.scheduler.rpcapi import SchedulerAPI
from fabric.service import Service
from fabric.virt.driver import PowerState
from fabric.virt.fake.driver import FakeDriver
from tests.fixtures.http import Api
from tests.fixtures.image_objectstore import serving_objectstore
from tests.fixtures.processes import REPO, free_port
from tests.functional.integration.workers import (
    DATACENTER_PREFIX,
    L2_CIDR,
    allocation_count,
    allocations_of,
    create_instance,
    dhcp_ports,
    faults,
    instance,
    ports_of,
    seed,
    wait_for_instance,
)

HOSTS = ("host1", "host2")


def ctx() -> RequestContext:
    """A request's context: each request its own request id, as the API gives them (an
    instance records one action per request)."""
    return RequestContext(user_id="u-e2e", project_id="p-e2e", roles=["admin"], is_admin=True)


class FailFirstSpawn(FakeDriver):
    """A fake hypervisor whose first spawn, on whichever host of the group, fails."""

    def __init__(self, budget: dict, **kwargs) -> None:
        super().__init__(**kwargs)
        self.budget = budget

    def spawn(self, spec) -> None:
        if self.budget["failures"] > 0:
            self.budget["failures"] -= 1
            self.budget["failed_on"].append(self.hostname)
            self.fail_next("spawn")
        super().spawn(spec)


class InProcessFabric:
    """Every worker as a Service on one memory:// transport and one SQLite database."""

    def __init__(self, tmp_path, drivers: dict | None = None) -> None:
        self.settings = config.Settings().replace(
            default={"host": HOSTS[0], "data_dir": str(tmp_path)},
            database={"url": f"sqlite:///{tmp_path / 'fabric.sqlite'}"},
            rpc={"transport_url": f"memory://e2e-{secrets.token_hex(4)}", "call_timeout": 10},
            service={"report_interval": 1.0},
            compute={"driver": "fake"}, network={"driver": "fake"})
        self.db = Database(self.settings.database_url)
        Base.metadata.create_all(self.db.engine)
        # Compute fetches images from the objectstore, as on any host.
        self._objectstore = contextlib.ExitStack()
        self.settings = self._objectstore.enter_context(serving_objectstore(self.settings, self.db)).settings
        self.transport = rpc.get_transport(self.settings.rpc)
        self.compute: dict[str, ComputeManager] = {}
        self.network: dict[str, NetworkManager] = {}
        self.services: list[Service] = []
        drivers = drivers or {}

        def add(binary: str, topic: str, manager, host: str) -> None:
            self.services.append(Service(self.settings, binary, topic, manager, host=host,
                                         transport=self.transport, db=self.db, address="127.0.0.1"))

        add("fabric-ipam", "ipam", IpamManager(self.settings, HOSTS[0], self.db, self.transport), HOSTS[0])
        for host in HOSTS:
            self.network[host] = NetworkManager(self.settings, host, self.db, self.transport)
            add("fabric-network", "network", self.network[host], host)
            self.compute[host] = ComputeManager(self.settings, host, self.db, self.transport,
                                                driver=drivers.get(host))
            add("fabric-compute", "compute", self.compute[host], host)
        add("fabric-scheduler", "scheduler", SchedulerManager(self.settings, HOSTS[0], self.db, self.transport),
            HOSTS[0])
        self.seeded = seed(self.db, self.settings, HOSTS)
        for service in self.services:
            service.start()
        self.scheduler = SchedulerAPI(self.transport)
        # The path the HTTP API takes to the workers: compute's api over the API's RPC clients.
        self.compute_api = ComputeService(self.db, rpc_clients(self.transport, call_timeout=10).compute)

    def wait(self, instance_id: str, condition, what: str) -> dict:
        # The workers run on green threads of this (unpatched) process: yield to them while polling.
        return wait_for_instance(self.db, instance_id, condition, what, sleep=eventlet.sleep, timeout=30)

    def close(self) -> None:
        for service in self.services:
            service.stop()
        for service in self.services:
            service.wait(10)
        self.transport.cleanup()
        self._objectstore.close()
        self.db.dispose()


@pytest.fixture
def fabric_all(tmp_path):
    cluster = InProcessFabric(tmp_path)
    yield cluster
    cluster.close()


def _active(row: dict) -> bool:
    return row["vm_state"] == states.ACTIVE and row["task_state"] is None


def _resting(vm_state: str):
    return lambda row: row["vm_state"] == vm_state and row["task_state"] is None


def _node_usage(db: Database) -> dict[str, int]:
    with db.begin() as session:
        return {n.host: n.memory_mb_used for n in session.query(ComputeNode)}


def test_in_process_build_act_and_delete_with_ipam_and_network(fabric_all):
    cluster, seeded = fabric_all, fabric_all.seeded
    instance_id = create_instance(cluster.db, seeded, networks=[seeded.l2_network_id, seeded.routed_network_id])
    cluster.scheduler.schedule_and_build(ctx(), instance_id)
    row = cluster.wait(instance_id, _active, "active")
    host, other = row["host"], next(h for h in HOSTS if h != row["host"])
    assert row["power_state"] == int(PowerState.RUNNING) and row["launched_at"] is not None

    # network_info carries the addresses IPAM handed out, linked to the ports compute bound.
    l2_vif, routed_vif = row["network_info"]
    assert (l2_vif["network_id"], routed_vif["network_id"]) == (seeded.l2_network_id, seeded.routed_network_id)
    assert ipaddress.ip_address(l2_vif["address"]) in ipaddress.ip_network(L2_CIDR)
    assert l2_vif["address"] not in ("10.20.0.0", "10.20.0.1")  # neither the network nor its gateway
    host_block = ipaddress.ip_network(cluster.services[0].manager.describe_segment(
        ctx(), seeded.segment_id, host)["host_block"])
    assert ipaddress.ip_address(routed_vif["address"]) in host_block
    assert host_block.subnet_of(ipaddress.ip_network(DATACENTER_PREFIX))
    assert allocations_of(cluster.db, [l2_vif["id"], routed_vif["id"]]) == {
        l2_vif["id"]: l2_vif["address"], routed_vif["id"]: routed_vif["address"]}
    ports = ports_of(cluster.db, instance_id)
    assert set(ports) == {l2_vif["id"], routed_vif["id"]}
    for port in ports.values():
        assert (port.host, port.binding, port.device_owner) == (host, {"kind": "tap"}, "compute:nova")

    # The host's network worker plugged both NICs (and a /32 route for the routed one); the other did not.
    plugged = cluster.network[host].driver.describe()
    assert set(plugged["endpoints"]) == {l2_vif["id"], routed_vif["id"]}
    assert plugged["endpoints"][l2_vif["id"]] == l2_vif["tap"]
    assert plugged["routes"][f"{routed_vif['address']}/32"] == routed_vif["tap"]
    assert cluster.network[other].driver.describe()["endpoints"] == {}
    guest = cluster.compute[host].driver
    assert guest.instance_exists(instance_id) and not cluster.compute[other].driver.instance_exists(instance_id)
    assert [(i.mac, i.tap) for i in guest.interfaces(instance_id)] == [
        (l2_vif["mac"], l2_vif["tap"]), (routed_vif["mac"], routed_vif["tap"])]
    assert _node_usage(cluster.db) == {host: 128, other: 0}
    # The host got a DHCP server port with an address on the L2 network; its network worker
    # carries the network with that address and DHCP on (the spec it would rebuild on a restart).
    [(dhcp_host, dhcp_address)] = dhcp_ports(cluster.db, seeded.l2_network_id).items()
    assert dhcp_host == host and dhcp_address != l2_vif["address"]
    assert ipaddress.ip_address(dhcp_address) in ipaddress.ip_network(L2_CIDR)
    carried = cluster.network[host].driver.state.networks[seeded.l2_network_id]
    assert (carried.host_address, carried.dhcp) == (f"{dhcp_address}/24", True)
    restart_state = dbstate.host_state(cluster.db, host, cluster.settings)
    assert {e.id: e.address for e in restart_state.endpoints.values()} == {
        l2_vif["id"]: l2_vif["address"], routed_vif["id"]: routed_vif["address"]}
    assert restart_state.networks[seeded.l2_network_id] == carried
    assert restart_state.routed is not None

    # Actions through compute's api (task set by compare-and-swap, then a cast to the host).
    cluster.compute_api.act(ctx(), instance_id, "os-stop")
    row = cluster.wait(instance_id, _resting(states.STOPPED), "stopped")
    assert row["power_state"] == int(PowerState.SHUTDOWN)
    assert guest.get_info(instance_id).power_state is PowerState.SHUTDOWN
    cluster.compute_api.act(ctx(), instance_id, "os-start")
    row = cluster.wait(instance_id, _active, "started")
    assert guest.get_info(instance_id).power_state is PowerState.RUNNING
    reboots = guest.calls["reboot"]
    cluster.compute_api.act(ctx(), instance_id, "reboot:SOFT")
    assert instance(cluster.db, instance_id)["task_state"] == states.REBOOTING
    cluster.wait(instance_id, _active, "rebooted")
    # A hard reboot runs under its own task (rebooting_hard), from stopped too.
    cluster.compute_api.act(ctx(), instance_id, "os-stop")
    cluster.wait(instance_id, _resting(states.STOPPED), "stopped again")
    cluster.compute_api.act(ctx(), instance_id, "reboot:HARD")
    assert instance(cluster.db, instance_id)["task_state"] == states.REBOOTING_HARD
    row = cluster.wait(instance_id, _active, "hard rebooted")
    assert row["power_state"] == int(PowerState.RUNNING) and guest.calls["reboot"] == reboots + 2

    # Delete: unplugged, released, destroyed, claim given back.
    cluster.compute_api.delete(ctx(), instance_id)
    row = cluster.wait(instance_id, lambda r: r["deleted"], "deleted")
    assert row["vm_state"] == states.DELETED and row["task_state"] is None
    assert allocation_count(cluster.db) == 0
    assert ports_of(cluster.db, instance_id) == {}
    assert cluster.network[host].driver.describe()["endpoints"] == {}
    assert not guest.instance_exists(instance_id)
    assert _node_usage(cluster.db) == {host: 0, other: 0}
    assert faults(cluster.db, instance_id) == []


def test_in_process_failed_build_is_rescheduled_to_the_other_host(tmp_path):
    budget: dict = {"failures": 1, "failed_on": []}
    drivers = {h: FailFirstSpawn(budget, hostname=h) for h in HOSTS}
    cluster = InProcessFabric(tmp_path, drivers)
    try:
        seeded = cluster.seeded
        instance_id = create_instance(cluster.db, seeded, networks=[seeded.l2_network_id, seeded.routed_network_id])
        cluster.scheduler.schedule_and_build(ctx(), instance_id)
        row = cluster.wait(instance_id, _active, "active after a reschedule")
        [failed_host] = budget["failed_on"]
        assert row["host"] != failed_host and row["failed_hosts"] == [failed_host]
        assert row["scheduling_attempts"] == 2
        [(fault_host, _code, message)] = faults(cluster.db, instance_id)
        assert fault_host == failed_host and "injected failure" in message
        # The failed host gave everything back: no guest, no endpoint, no claim, no stale address.
        assert not drivers[failed_host].instance_exists(instance_id)
        assert cluster.network[failed_host].driver.describe()["endpoints"] == {}
        assert _node_usage(cluster.db) == {row["host"]: 128, failed_host: 0}
        vif_ids = [v["id"] for v in row["network_info"]]
        assert allocation_count(cluster.db) == 2
        assert set(allocations_of(cluster.db, vif_ids).values()) == {v["address"] for v in row["network_info"]}
        assert set(cluster.network[row["host"]].driver.describe()["endpoints"]) == set(vif_ids)
    finally:
        cluster.close()


def test_in_process_build_failing_on_every_host_ends_in_error_with_nothing_held(tmp_path):
    budget: dict = {"failures": len(HOSTS), "failed_on": []}
    cluster = InProcessFabric(tmp_path, {h: FailFirstSpawn(budget, hostname=h) for h in HOSTS})
    try:
        seeded = cluster.seeded
        instance_id = create_instance(cluster.db, seeded, networks=[seeded.l2_network_id, seeded.routed_network_id])
        cluster.scheduler.schedule_and_build(ctx(), instance_id)
        row = cluster.wait(instance_id, _resting(states.ERROR), "in error")
        assert sorted(budget["failed_on"]) == sorted(HOSTS) and sorted(row["failed_hosts"]) == sorted(HOSTS)
        assert row["host"] is None and row["network_info"] == []
        *build_faults, last = faults(cluster.db, instance_id)
        assert sorted(h for h, _, _ in build_faults) == sorted(HOSTS)
        assert "builds failed before on" in last[2] and all(h in last[2] for h in HOSTS), last
        assert allocation_count(cluster.db) == 0 and ports_of(cluster.db, instance_id) == {}
        assert _node_usage(cluster.db) == dict.fromkeys(HOSTS, 0)
        for host in HOSTS:
            assert cluster.network[host].driver.describe()["endpoints"] == {}
    finally:
        cluster.close()


def test_in_process_no_valid_host_ends_in_error_with_a_fault(fabric_all):
    cluster = fabric_all
    instance_id = create_instance(cluster.db, cluster.seeded, networks=[cluster.seeded.l2_network_id], big=True)
    cluster.scheduler.schedule_and_build(ctx(), instance_id)
    row = cluster.wait(instance_id, _resting(states.ERROR), "in error")
    assert row["host"] is None and row["network_info"] == []
    [(_host, code, message)] = faults(cluster.db, instance_id)
    assert "No valid host" in message or "no valid host" in message.lower(), message
    assert "RamFilter" in message, message
    assert allocation_count(cluster.db) == 0 and ports_of(cluster.db, instance_id) == {}


# --- (b) separate processes over RabbitMQ and PostgreSQL ----------------------------------------


@pytest.mark.functional
@pytest.mark.slow
def test_separate_worker_processes_over_rabbitmq_and_postgresql(spawn, tmp_path, rabbit_vhost,
                                                                make_empty_database):
    url = make_empty_database("postgresql")
    env = {"FABRIC_RPC_TRANSPORT_URL": rabbit_vhost, "FABRIC_DATABASE_URL": url,
           "FABRIC_DEFAULT_DATA_DIR": str(tmp_path), "FABRIC_COMPUTE_DRIVER": "fake",
           "FABRIC_NETWORK_DRIVER": "fake", "FABRIC_SERVICE_ADVERTISE_ADDRESS": "127.0.0.1",
           "FABRIC_SERVICE_REPORT_INTERVAL": "1", "FABRIC_RPC_CALL_TIMEOUT": "20",
           "FABRIC_OBJECTSTORE_PORT": str(free_port())}
    # The schema as an operator makes it: the migrations, not the models.
    sync = spawn([sys.executable, str(REPO / "bin/fabric-manage"), "db", "sync"], env=env, name="db-sync")
    assert sync.wait(120) == 0, sync.log()
    db = Database(url)

    def launch(binary: str, host: str):
        return spawn([sys.executable, str(REPO / "bin" / binary)], env=env | {"FABRIC_DEFAULT_HOST": host},
                     name=f"{binary}-{host}")

    # The image is uploaded into the objectstore first, as the Image API stores it.
    objectstore = launch("fabric-objectstore", "ctl")
    objectstore.wait_for_log("Started fabric-objectstore on host ctl", timeout=60)
    seeded = seed(db, config.Settings().replace(
        database={"url": url}, objectstore={"port": int(env["FABRIC_OBJECTSTORE_PORT"])}), HOSTS)

    started = [("fabric-ipam", "ctl"), ("fabric-scheduler", "ctl")]
    started += [(binary, host) for host in HOSTS for binary in ("fabric-network", "fabric-compute")]
    workers = [launch(binary, host) for binary, host in started]
    for worker, (binary, host) in zip(workers, started, strict=True):
        worker.wait_for_log(f"Started {binary} on host {host}", timeout=60)

    transport = rpc.get_transport(config.Settings().replace(
        rpc={"transport_url": rabbit_vhost, "call_timeout": 20}).rpc)
    try:
        instance_id = create_instance(db, seeded, networks=[seeded.l2_network_id, seeded.routed_network_id])
        SchedulerAPI(transport).schedule_and_build(ctx(), instance_id)
        row = wait_for_instance(db, instance_id, _active, "active", workers=workers, timeout=90)
        host = row["host"]
        l2_vif, routed_vif = row["network_info"]
        assert ipaddress.ip_address(l2_vif["address"]) in ipaddress.ip_network(L2_CIDR)
        assert ipaddress.ip_address(routed_vif["address"]) in ipaddress.ip_network(DATACENTER_PREFIX)
        assert allocations_of(db, [l2_vif["id"], routed_vif["id"]]) == {
            l2_vif["id"]: l2_vif["address"], routed_vif["id"]: routed_vif["address"]}
        # The network worker process of that host holds both endpoints.
        described = NetworkAPI(transport, timeout=20).describe_host_networking(ctx(), host)
        assert set(described["endpoints"]) == {l2_vif["id"], routed_vif["id"]}
        assert described["routes"][f"{routed_vif['address']}/32"] == routed_vif["tap"]

        compute = ComputeService(db, rpc_clients(transport, call_timeout=20).compute)
        compute.act(ctx(), instance_id, "os-stop")
        wait_for_instance(db, instance_id, _resting(states.STOPPED), "stopped", workers=workers)
        compute.act(ctx(), instance_id, "os-start")
        wait_for_instance(db, instance_id, _active, "started", workers=workers)

        compute.delete(ctx(), instance_id)
        row = wait_for_instance(db, instance_id, lambda r: r["deleted"], "deleted", workers=workers)
        assert row["vm_state"] == states.DELETED
        assert allocations_of(db, [l2_vif["id"], routed_vif["id"]]) == {}
        assert ports_of(db, instance_id) == {}
        assert NetworkAPI(transport, timeout=20).describe_host_networking(ctx(), host)["endpoints"] == {}
    finally:
        transport.cleanup()
        db.dispose()
    for worker in workers:
        worker.signal(signal.SIGTERM)
    for worker in workers:
        assert worker.wait(30) == 0, worker.log()[-4000:]


# --- (c) fabric-all on its embedded defaults ---------------------------------------------------


@pytest.mark.functional
@pytest.mark.slow
def test_fabric_all_on_embedded_defaults_brings_a_server_to_active(spawn, tmp_path):
    data_dir, port, password = tmp_path / "data", free_port(), secrets.token_urlsafe(8)
    # Nothing but a data directory, a free port and a known admin password: memory://, SQLite
    # (fabric-all creates the schema in the empty database), fake virt and fake (recording,
    # no kernel changes) network drivers are the defaults.
    worker = spawn([sys.executable, str(REPO / "bin/fabric-all")], name="fabric-all", env={
        "FABRIC_DEFAULT_DATA_DIR": str(data_dir), "FABRIC_DEFAULT_HOST": "allinone",
        "FABRIC_API_PORT": str(port), "FABRIC_API_ADMIN_PASSWORD": password,
        "FABRIC_OBJECTSTORE_PORT": str(free_port())})
    worker.wait_for_log("Started fabric-api on host allinone", timeout=60)
    assert "Created the schema" in worker.log()
    for binary in ("fabric-ipam", "fabric-network", "fabric-compute", "fabric-scheduler"):
        assert f"Started {binary} on host allinone" in worker.log()
    assert config.Settings().network.driver == "fake" and config.Settings().compute.driver == "fake"

    api = Api(f"http://127.0.0.1:{port}").login("admin", password, "admin")
    _, flavor = api("POST", "/compute/v2.1/flavors", {"flavor": {"name": "nano", "ram": 128, "vcpus": 1, "disk": 1}})
    _, image = api("POST", "/image/v2/images", {"name": "img", "disk_format": "raw", "container_format": "bare"})
    api("PUT", f"/image/v2/images/{image['id']}/file", raw=b"\0" * 4096)
    _, network = api("POST", "/networking/v2.0/networks", {"network": {"name": "net"}})
    api("POST", "/networking/v2.0/subnets", {"subnet": {"network_id": network["network"]["id"], "ip_version": 4,
                                                         "cidr": "10.30.0.0/24"}})
    _, server = api("POST", "/compute/v2.1/servers", {"server": {
        "name": "vm", "imageRef": image["id"], "flavorRef": flavor["flavor"]["id"],
        "networks": [{"uuid": network["network"]["id"]}]}})
    server_id = server["server"]["id"]

    db = Database(f"sqlite:///{data_dir / 'fabric.sqlite'}")
    try:
        row = wait_for_instance(db, server_id, lambda r: r["vm_state"] in (states.ACTIVE, states.ERROR)
                                and r["task_state"] is None, "settled", workers=[worker], timeout=30)
        assert row["vm_state"] == states.ACTIVE, faults(db, server_id)
        [vif] = row["network_info"]
        assert vif["address"] == "10.30.0.2"
        assert allocations_of(db, [vif["id"]]) == {vif["id"]: "10.30.0.2"}
    finally:
        db.dispose()
    _, shown = api("GET", f"/compute/v2.1/servers/{server_id}")
    assert shown["server"]["status"] == "ACTIVE"
    assert [a["addr"] for a in shown["server"]["addresses"]["net"]] == ["10.30.0.2"]
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log()[-4000:]
