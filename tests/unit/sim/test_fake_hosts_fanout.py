"""The fake hosts of one process (:mod:`fabric.sim.fake_hosts`) consume their own queues and
leave the fanouts to one consumer per topic, which hands each host the fanouts once its
workers have started. Two hosts on one memory:// broker and one SQLite database."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from fabric import rpc, servicegroup, status
from fabric.context import RequestContext
from fabric.network.model import HostSpec
from fabric.rpc import signing
from fabric.sim import fake_hosts
from fabric.sim.fanout import HostFanout
from tests.fixtures.rpc import wait_for
from tests.unit.rpc.conftest import settings  # noqa: F401 - fixture


@pytest.fixture
def process(sqlite_db, settings, transport, tmp_path):  # noqa: F811
    """(the started items of a fake-hosts process of hosts p-1 and p-2, its services)."""
    own = settings.replace(default={"data_dir": str(tmp_path)})
    services = fake_hosts.build_services(own, fake_hosts.host_names("p-", 2), db=sqlite_db, transport=transport)
    fanouts = fake_hosts.build_fanouts(services, transport, "proc-1")
    items = fake_hosts.staggered(services, 0.0, fanouts)
    started = []
    try:
        for item in items:
            item.start()
            started.append(item)
        yield items, services
    finally:
        for item in started:
            item.stop()
        for item in started:
            item.wait(5)


def test_each_host_consumes_its_own_queues_and_the_process_the_fanouts(process):
    items, services = process
    assert [type(item) for item in items[:2]] == [HostFanout, HostFanout]
    assert sorted(item.topic for item in items[:2]) == ["compute", "network"]
    assert all(item.admitted == ["p-1", "p-2"] for item in items[:2])
    for service in services:
        assert [q.name for q in service.server.queues] == [service.topic, f"{service.topic}.{service.host}"]


def test_a_fanout_reaches_every_host_of_the_process(process, transport):
    _, services = process
    spec = HostSpec("p-9", "192.168.0.9", "10.64.0.0/20")

    with signing.acting_as("ipam"):
        rpc.RPCClient(transport, rpc.Target(topic="network")).fanout_cast(
            RequestContext.admin(), "host_joined", host=spec.to_dict())

    networks = [s.manager for s in services if s.topic == "network"]
    wait_for(lambda: all(m.driver.state.remote_hosts.get("p-9") == spec for m in networks),
             what="p-9 in both hosts' remote hosts")


def test_the_hosts_work_of_each_kind_shares_one_bound_within_the_pool(postgres_db, settings, transport,  # noqa: F811
                                                                      tmp_path):
    own = settings.replace(default={"data_dir": str(tmp_path)})
    services = fake_hosts.build_services(own, fake_hosts.host_names("p-", 3), db=postgres_db, transport=transport)
    limiter = {service.topic: service.limiter for service in services}
    assert all(service.limiter is limiter[service.topic] for service in services)
    assert limiter["compute"] is not limiter["network"]  # a build holds its handler while its host plugs
    periodic = services[0].periodic_limiter
    assert all(service.periodic_limiter is periodic for service in services)
    assert all(service.periodic._limiter is periodic for service in services)
    assert periodic is not limiter["compute"] and periodic is not limiter["network"]
    capacity = postgres_db.capacity
    bounds = {"periodic": periodic.balance, **{topic: bound.balance for topic, bound in limiter.items()}}
    left = capacity - fake_hosts.DEFAULT_LANES
    assert bounds == {kind: int(left * share) for kind, share in fake_hosts.SHARES.items()}
    # What the bounds leave serves the fanout lanes (one connection each at most).
    assert sum(bounds.values()) + fake_hosts.DEFAULT_LANES <= capacity


def test_a_process_on_sqlite_bounds_no_handlers(process, sqlite_db):
    _, services = process
    assert sqlite_db.capacity is None
    assert all(service.limiter is None and service.server._limiter is None and service.periodic_limiter is None
               for service in services)


def test_what_the_process_fanout_drops_reaches_the_services_table_with_the_heartbeats(process, sqlite_db,
                                                                                  transport):
    """A fanout the process's consumer refuses (here unsigned) reached no host: the heartbeat
    records it in its first host's row of the topic, in a statement of its own (as a real
    worker's drops), while the other hosts keep beating in the one shared statement, and
    fabric-manage status says it was lost to every host of the process; what it gives up on
    for one host (arguments its method does not take) is that host's."""
    _, services = process
    group = services[0]._heartbeats
    for service in services:
        group.leave(service, wait=True)  # this test beats for them, when it chooses
    writes: list[str] = []

    def record(conn, cursor, statement, *args):
        if "services" in statement and not statement.lstrip().upper().startswith("SELECT"):
            writes.append(statement)

    def drops() -> dict[tuple[str, str], dict[str, int]]:
        return {(s.host, s.binary): s.fanout_drops for s in servicegroup.list_services(sqlite_db) if s.fanout_drops}

    def problems() -> dict[str, str]:
        return {s.host: line for s in servicegroup.list_services(sqlite_db)
                if s.topic == "network" and (line := status.fanout_drops_problem(s))}

    unsigned = servicegroup.process_wide("unsigned")  # the process refused it for all its hosts
    sa.event.listen(sqlite_db.engine, "before_cursor_execute", record)
    try:
        group.beat(services)
        assert len(writes) == 1  # nothing dropped: one statement for the four services

        transport.publish("network_fanout", "network", b'{"v": 1}', message_id=rpc.new_message_id())
        network = {s.host: s for s in services if s.topic == "network"}
        wait_for(lambda: network["p-1"].fanout_drops() == {unsigned: 1}, what="the refusal counted")
        assert network["p-2"].fanout_drops() == {} and writes[1:] == []  # no write of its own
        group.beat(services)
        assert len(writes) == 3  # p-1's network row alone, the other three together
        assert drops() == {("p-1", "fabric-network"): {unsigned: 1}}
        assert list(problems()) == ["p-1"]
        assert "(for every host of its process: unsigned 1)," in problems()["p-1"]
        [reporter] = [s for s in servicegroup.list_services(sqlite_db) if s.fanout_drops]
        assert reporter.fanout_dropped_at == network["p-1"].fanout.server.fanout_dropped_at is not None
        group.beat(services)
        assert len(writes) == 4  # recorded: one statement again

        with signing.acting_as("ipam"):
            rpc.RPCClient(transport, rpc.Target(topic="network")).fanout_cast(
                RequestContext.admin(), "host_joined", hots={})
        wait_for(lambda: network["p-2"].fanout_drops() == {"invalid": 1}, what="p-2's copy dropped")
        wait_for(lambda: network["p-1"].fanout_drops() == {unsigned: 1, "invalid": 1}, what="p-1's copy dropped")
        group.beat(services)
        assert drops() == {("p-1", "fabric-network"): {unsigned: 1, "invalid": 1},
                           ("p-2", "fabric-network"): {"invalid": 1}}
        lines = problems()
        assert "dropped 2 fanout message(s) since it started (invalid 1; for every host of its process: unsigned 1)," \
            in lines["p-1"]
        assert "dropped 1 fanout message(s) since it started (invalid 1)," in lines["p-2"]
        assert "every host" not in lines["p-2"]
    finally:
        sa.event.remove(sqlite_db.engine, "before_cursor_execute", record)
