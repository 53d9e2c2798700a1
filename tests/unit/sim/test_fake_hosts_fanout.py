"""The fake hosts of one process (:mod:`fabric.sim.fake_hosts`) consume their own queues and
leave the fanouts to one consumer per topic, which hands each host the fanouts once its
workers have started. Two hosts on one memory:// broker and one SQLite database."""

from __future__ import annotations

import pytest

from fabric import rpc
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
