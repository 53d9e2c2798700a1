"""``python -m fabric.sim.fake_hosts``: several fake compute hosts in one process, each a real
compute and network worker to the rest of the cloud.

One process runs three hosts over RabbitMQ and PostgreSQL beside the control workers (IPAM,
scheduler, objectstore, API: each its own process from ``bin/``). The three must register
as three hosts (a compute node each, compute and network services each, heartbeating from
that one process), and a server created through the API must be placed on one of them by
the real scheduler, built there (address, plugged port, fake guest) and become ACTIVE; its
delete must give the host's claim back. The fanouts every host must see are consumed once
per topic by the process (:mod:`fabric.sim.fanout`), not once per host, and one it refuses
shows in ``fabric-manage status`` once, not once per host, saying it was lost to every host
of the process.
"""

from __future__ import annotations

import sys

import pytest
import sqlalchemy as sa

from fabric import config, rpc, status
from fabric.api.bootstrap import bootstrap
from fabric.db.models import ComputeNode, Instance, Port, Service
from tests.fixtures.process_cloud import COMPUTE, Api, prepare
from tests.fixtures.processes import REPO, free_port, python_module, wait_until

pytestmark = [pytest.mark.functional]

PASSWORD = "fake-hosts-pw"
HOSTS = ("fh-1", "fh-2", "fh-3")


def _start(spawn, tmp_path, db_url: str, vhost: str) -> tuple[list, int]:
    api_port = free_port()
    env = {"FABRIC_RPC_TRANSPORT_URL": vhost, "FABRIC_DATABASE_URL": db_url,
           "FABRIC_DEFAULT_DATA_DIR": str(tmp_path / "data"), "FABRIC_SERVICE_ADVERTISE_ADDRESS": "127.0.0.1",
           "FABRIC_SERVICE_REPORT_INTERVAL": "1", "FABRIC_DATABASE_POOL_SIZE": "3",
           "FABRIC_COMPUTE_FAKE_VCPUS": "2", "FABRIC_COMPUTE_FAKE_MEMORY_MB": "1024",
           "FABRIC_API_LISTEN": "127.0.0.1", "FABRIC_API_PORT": str(api_port), "FABRIC_API_WORKERS": "1",
           "FABRIC_OBJECTSTORE_LISTEN": "127.0.0.1", "FABRIC_OBJECTSTORE_PORT": str(free_port()),
           "FABRIC_OBJECTSTORE_WORKERS": "1", "FABRIC_DEFAULT_HOST": "ctl"}
    control = ("fabric-ipam", "fabric-scheduler", "fabric-objectstore")
    workers = [spawn([sys.executable, str(REPO / "bin" / binary)], env=env, name=binary) for binary in control]
    hosts = spawn(python_module("fabric.sim.fake_hosts", "--hosts", "3", "--prefix", "fh-", "--stagger", "0.5"),
                  env=env | {"FABRIC_DEFAULT_HOST": "fake-hosts-process"}, name="fake-hosts")
    api = spawn([sys.executable, str(REPO / "bin" / "fabric-api")], env=env, name="fabric-api")
    for worker, binary in zip(workers, control, strict=True):
        worker.wait_for_log(f"Started {binary} on host ctl", timeout=120)
    hosts.wait_for_log("fake_hosts: all 3 hosts started", timeout=120)
    api.wait_for_log("Started fabric-api on host ctl", timeout=120)
    return [*workers, hosts, api], api_port


def test_three_fake_hosts_in_one_process_register_and_build_a_server(spawn, tmp_path, postgres_db, rabbit,
                                                                      rabbit_vhost):
    db = postgres_db
    bootstrap(db, PASSWORD)
    workers, api_port = _start(spawn, tmp_path, db.url.render_as_string(hide_password=False), rabbit_vhost)
    fake_hosts = workers[3]

    with db.begin() as session:
        nodes = {n.host: (n.vcpus, n.memory_mb) for n in session.scalars(sa.select(ComputeNode))}
        services = sorted((s.host, s.binary) for s in session.scalars(
            sa.select(Service).where(Service.host.in_(HOSTS))))
    assert nodes == {host: (2, 1024) for host in HOSTS}
    assert services == sorted((host, binary) for host in HOSTS for binary in ("fabric-compute", "fabric-network"))
    # Every host heartbeats, from the one process.
    with db.begin() as session:
        first = {(s.host, s.binary): s.report_count for s in session.scalars(
            sa.select(Service).where(Service.host.in_(HOSTS)))}

    def all_beat_again() -> bool:
        with db.begin() as session:
            now = {(s.host, s.binary): s.report_count for s in session.scalars(
                sa.select(Service).where(Service.host.in_(HOSTS)))}
        return all(now[key] > first[key] for key in first)

    wait_until(all_beat_again, 30, "every fake host's workers to heartbeat again", workers=workers, interval=0.2)
    fanout_queues = sorted(q for q in rabbit.queues() if q.startswith(("network_fanout_", "compute_fanout_")))
    assert [q.rsplit("_", 1)[0] for q in fanout_queues] == ["compute_fanout_fake-hosts-process",
                                                            "network_fanout_fake-hosts-process"]

    api = Api(api_port)
    project = api.login(PASSWORD)
    body = prepare(api, project, 2)
    server = api.ok("POST", f"{COMPUTE}/servers", {"server": dict(body["server"], name="on-a-fake-host")})["server"]
    wait_until(lambda: api.ok("GET", f"{COMPUTE}/servers/{server['id']}")["server"]["status"] == "ACTIVE", 60,
               "the server to become ACTIVE", workers=workers, interval=0.2)
    with db.begin() as session:
        instance = session.get(Instance, server["id"])
        host = instance.host
        ports = list(session.scalars(sa.select(Port).where(Port.device_id == server["id"])))
        node = session.scalar(sa.select(ComputeNode).where(ComputeNode.host == host))
        claimed = (node.vcpus_used, node.memory_mb_used)
    assert host in HOSTS
    assert [(p.host, p.status) for p in ports] == [(host, "ACTIVE")]
    assert claimed == (1, 64)
    assert f"instance {server['id']} is active on {host}" in fake_hosts.log()

    api.ok("DELETE", f"{COMPUTE}/servers/{server['id']}")

    def released() -> bool:
        with db.begin() as session:
            node = session.scalar(sa.select(ComputeNode).where(ComputeNode.host == host))
            return session.get(Instance, server["id"]).deleted and (node.vcpus_used, node.memory_mb_used) == (0, 0)

    wait_until(released, 60, "the delete to give the claim back", workers=workers, interval=0.2)
    with db.begin() as session:
        assert not list(session.scalars(sa.select(Port).where(Port.device_id == server["id"])))

    # A fanout the process refuses (unsigned) reached none of its hosts: fabric-manage status
    # names it once, on the process's first host of the topic (fabric.sim.fanout), with a heartbeat,
    # as lost to every host of the process.
    assert _fanout_problems(db) == []
    transport = rpc.get_transport(config.Settings().replace(rpc={"transport_url": rabbit_vhost}).rpc)
    try:
        transport.publish("network_fanout", "network", b'{"v": 1}', message_id=rpc.new_message_id())
    finally:
        transport.cleanup()
    [line] = wait_until(lambda: _fanout_problems(db), 30, "the drop in the services table", workers=workers, interval=0.2)
    assert line.startswith("fabric-network on fh-1 (topic network) dropped 1 fanout message(s) since it started "
                           "(for every host of its process: unsigned 1)"), line


def _fanout_problems(db) -> list[str]:
    problems = status.Status()
    status.services_section(db, config.Settings(), problems)
    return [line for line in problems.problems if "fanout" in line]
