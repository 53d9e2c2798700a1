"""A network worker tells every host of a port's arrival and departure (``security_groups_changed``
by fanout) only when some rule names one of the port's groups as its remote group: only then
may a host's remote-group sets hold the port's address. Otherwise the fanout would only make
every host rebuild its state for nothing, once per plug and unplug (tools/bench/storm.py).

One memory:// broker, one SQLite database, the real network worker of h2 (fake driver) served
on it, plugging and unplugging through :class:`~fabric.network.api.NetworkService`, and a
plain consumer on the fanout exchange counting what every host would get.
"""

from __future__ import annotations

import uuid

import pytest

from fabric import rpc
from fabric.context import RequestContext
from fabric.db.models import PortSecurityGroup, SecurityGroup
from fabric.network import secgroups_db
from fabric.network.api import NetworkService
from fabric.network.drivers.fake import FakeDriver
from fabric.network.manager import NetworkManager
from fabric.rpc.transport import QueueSpec
from tests.fixtures.rpc import serving, wait_for
from tests.unit.network.test_host_networks import add_network
from tests.unit.rpc.conftest import settings  # noqa: F401 - fixture


@pytest.fixture
def announcements(sqlite_db, settings):  # noqa: F811 - the fixture imported above
    """(plug, unplug, fanouts): plug/unplug guest-2 on h2 through its worker; the fanouts seen."""
    transport = rpc.get_transport(settings.rpc)
    add_network(sqlite_db)
    seen: list[bytes] = []

    def received(delivery) -> None:
        seen.append(delivery.body)
        delivery.ack()

    spy = transport.consume([QueueSpec(f"network_fanout_spy_{uuid.uuid4().hex[:8]}", "network_fanout", "fanout",
                                       "network", durable=False)], received, prefetch=10)
    worker = NetworkManager(settings.replace(default={"host": "h2"}), host="h2", db=sqlite_db, transport=transport,
                            driver=FakeDriver(settings))
    service = NetworkService(sqlite_db, transport)
    ctx = RequestContext.admin()
    try:
        with serving(transport, worker, host="h2", topic="network"):
            yield (lambda: service.plug_port(ctx, "guest-2"), lambda: service.unplug_port(ctx, "guest-2"), seen)
    finally:
        spy.stop()
        transport.cleanup()


def _plain_group(db) -> str:
    with db.begin() as session:
        group = SecurityGroup(project_id="proj", name="plain", description="")
        session.add(group)
        session.flush()
        session.add_all(secgroups_db.new_group_rules(group.id, "proj"))  # egress only: names no remote
        return group.id


def test_a_port_in_a_group_named_as_remote_is_announced_on_plug_and_unplug(sqlite_db, announcements):
    plug, unplug, seen = announcements
    secgroups_db.bind_port_groups(sqlite_db, "guest-2", "proj", None)  # default: ingress from itself
    plug()
    wait_for(lambda: len(seen) == 1, what="the plug's announcement")
    unplug()
    wait_for(lambda: len(seen) == 2, what="the unplug's announcement")


def test_a_port_whose_groups_no_rule_names_as_remote_is_not_announced(sqlite_db, announcements):
    plug, unplug, seen = announcements
    plain = _plain_group(sqlite_db)
    secgroups_db.bind_port_groups(sqlite_db, "guest-2", "proj", [plain])
    plug()
    unplug()
    # Then in the default group too: this plug is announced, and arrives after anything the
    # two above sent (one publisher, one queue).
    default = secgroups_db.ensure_default_group(sqlite_db, "proj")
    with sqlite_db.begin() as session:
        session.add(PortSecurityGroup(port_id="guest-2", security_group_id=default))
    plug()
    wait_for(lambda: len(seen) >= 1, what="the announced plug")
    assert len(seen) == 1


def test_a_burst_of_group_changes_costs_one_more_rebuild_which_sees_the_last_change(sqlite_db, settings):  # noqa: F811
    """Messages arriving while a host rebuilds its security state are covered by one more
    rebuild, started after them, that reads what they announced (fabric.coalescing)."""
    add_network(sqlite_db)
    secgroups_db.bind_port_groups(sqlite_db, "guest-2", "proj", None)
    plain = _plain_group(sqlite_db)
    worker = NetworkManager(settings.replace(default={"host": "h2"}), host="h2", db=sqlite_db,
                            driver=FakeDriver(settings))
    applied = []
    apply = worker.driver.set_security

    def set_security(state) -> None:
        applied.append(dict(state.ports))
        if len(applied) == 1:  # during the first rebuild: guest-2 joins a group, five messages come
            with sqlite_db.begin() as session:
                session.add(PortSecurityGroup(port_id="guest-2", security_group_id=plain))
            for _ in range(5):
                worker.security_groups_changed(RequestContext.admin())
        apply(state)

    worker.driver.set_security = set_security
    worker.security_groups_changed(RequestContext.admin())
    default = secgroups_db.ensure_default_group(sqlite_db, "proj")
    assert applied == [{"guest-2": [default]}, {"guest-2": sorted([default, plain])}]
    assert worker.driver.security.ports["guest-2"] == sorted([default, plain])
