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
import sqlalchemy as sa

from fabric import periodic, rpc
from fabric.context import RequestContext
from fabric.db.models import PortSecurityGroup, SecurityGroup
from fabric.network import dbstate, secgroups, secgroups_db
from fabric.network.api import NetworkService
from fabric.network.drivers.fake import FakeDriver
from fabric.network.manager import NetworkManager
from fabric.network.secgroups import link_local
from fabric.rpc import envelope
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


# --- the announcement carries the change (security_members_changed) ---------------------------

GUEST_1 = ("10.62.0.11", link_local("02:00:00:00:62:11"))
GUEST_2 = ("10.62.0.12", link_local("02:00:00:00:62:02"))


@pytest.fixture
def three_hosts(request, sqlite_db, settings):  # noqa: F811 - the fixture imported above
    """Workers h1, h2, h3 on one memory:// broker over net-s: h1 holds guest-1 in the default
    group (ingress from itself: h1 tracks that group's members), h2 plugs guest-2 (default
    group) through the API side, h3 holds guest-3 in a group naming no remote (tracks nothing).
    Yields (workers by host, plug, unplug, the default group's id). Indirectly parametrised, the
    envelope version every worker writes (this release's by default)."""
    from fabric.db.models import AddressAllocation, Port

    settings = settings.replace(rpc={"envelope_version": getattr(request, "param", envelope.VERSION)})
    transport = rpc.get_transport(settings.rpc)
    add_network(sqlite_db)
    with sqlite_db.begin() as session:
        session.add_all([Port(id="guest-1", network_id="net-s", project_id="proj", mac_address="02:00:00:00:62:11",
                              host="h1", device_owner="compute:nova"),
                         Port(id="guest-3", network_id="net-s", project_id="proj", mac_address="02:00:00:00:62:13",
                              host="h3", device_owner="compute:nova")])
        session.flush()
        session.add(AddressAllocation(pool_id="sub-s", address="10.62.0.11", request_token="g1", port_id="guest-1"))
    default = secgroups_db.ensure_default_group(sqlite_db, "proj")
    for port in ("guest-1", "guest-2"):
        secgroups_db.bind_port_groups(sqlite_db, port, "proj", None)
    secgroups_db.bind_port_groups(sqlite_db, "guest-3", "proj", [_plain_group(sqlite_db)])
    workers = {host: NetworkManager(settings.replace(default={"host": host}), host=host, db=sqlite_db,
                                    transport=transport, driver=FakeDriver(settings.replace(default={"host": host})))
               for host in ("h1", "h2", "h3")}
    for worker in workers.values():
        worker.init_host()
    service = NetworkService(sqlite_db, transport)
    ctx = RequestContext.admin()
    try:
        with serving(transport, workers["h1"], host="h1", topic="network"), \
                serving(transport, workers["h2"], host="h2", topic="network"), \
                serving(transport, workers["h3"], host="h3", topic="network"):
            yield (workers, lambda: service.plug_port(ctx, "guest-2"), lambda: service.unplug_port(ctx, "guest-2"),
                   default)
    finally:
        transport.cleanup()


def test_a_plug_or_unplug_changes_exactly_that_member_on_every_host_tracking_its_group(sqlite_db, three_hosts):
    workers, plug, unplug, default = three_hosts
    h1, h3 = workers["h1"].driver, workers["h3"].driver
    # At start h1 read guest-2 as a member already (its row is in the group); take it out as
    # its unplug would, so the plug below has something to add.
    workers["h1"].security_members_changed(RequestContext.admin(), "guest-2", [], [])
    assert h1.security.members == {default: sorted(GUEST_1, key=secgroups.address_order)}
    assert h1.calls.get("apply_members") == 1
    h3_before = h3.security.to_dict()

    plug()
    wait_for(lambda: h1.calls.get("apply_members") == 2, what="h1 applying guest-2's arrival")
    assert h1.security.members == {default: sorted(GUEST_1 + GUEST_2, key=secgroups.address_order)}
    # Exactly what a full read gives, reached without one (no set_security since the start).
    assert h1.security.members == dbstate.security_state(sqlite_db, "h1").members
    assert h1.calls.get("apply_security") is None
    assert workers["h2"].driver.security.members == h1.security.members  # the plugging host too

    unplug()
    wait_for(lambda: h1.calls.get("apply_members") == 3, what="h1 applying guest-2's departure")
    assert h1.security.members == {default: sorted(GUEST_1, key=secgroups.address_order)}
    assert h1.security.member_ports == {default: {"guest-1": GUEST_1}}
    # h3 tracks no group guest-2 is in: nothing changed there, nothing was applied.
    assert h3.security.to_dict() == h3_before and h3.calls.get("apply_members") is None


def test_a_host_that_missed_an_announcement_converges_at_its_next_full_read(sqlite_db, three_hosts):
    workers, _, _, default = three_hosts
    h1 = workers["h1"]
    with sqlite_db.begin() as session:  # guest-2 leaves the group; nobody says so
        session.execute(sa.delete(PortSecurityGroup).where(PortSecurityGroup.port_id == "guest-2"))
    assert h1.driver.security.members[default] == sorted(GUEST_1 + GUEST_2, key=secgroups.address_order)
    task = next(t for t in periodic.periodic_tasks(h1) if t.name == "resync_security")
    assert task.spacing == h1.settings.network.security_resync_interval
    task.method(RequestContext.admin())
    assert h1.driver.security.members == {default: sorted(GUEST_1, key=secgroups.address_order)}


@pytest.mark.parametrize("three_hosts", [envelope.VERSION - 1], indirect=True)
def test_a_batch_goes_change_by_change_to_hosts_of_the_previous_release(sqlite_db, three_hosts):
    """A worker writing the previous envelope (``[rpc] envelope_version`` lowered: hosts of the
    previous release, which lack security_members_changed_many, may listen) announces a batch as
    one security_members_changed per change, in order; hosts apply each alone, reading nothing."""
    from fabric.network.manager import Announcements

    workers, _, _, default = three_hosts
    h1 = workers["h1"]
    assert h1.transport.settings.envelope_version == envelope.VERSION - 1
    applied, reads = h1.driver.calls.get("apply_members") or 0, h1.driver.calls.get("apply_security")
    announce, ctx = Announcements.of(h1.transport), RequestContext.admin()
    announce.add(ctx, "guest-2", [], [])  # leaves
    announce.add(ctx, "guest-2", [default], list(GUEST_2))  # and comes back: the order decides
    announce.add(ctx, "guest-9", [default], ["10.62.0.19"])
    wait_for(lambda: h1.driver.calls.get("apply_members") == applied + 3, what="h1 applying the three changes")
    assert h1.driver.security.member_ports[default] == {"guest-1": GUEST_1, "guest-2": GUEST_2,
                                                        "guest-9": ("10.62.0.19",)}
    assert h1.driver.calls.get("apply_security") == reads  # no full read


def test_announcements_made_together_reach_every_host_in_one_fanout_in_their_order(sqlite_db, three_hosts):
    """A process's announcements over a moment go as one fanout (Announcements): a host applies
    them together, in the order they were made."""
    from fabric.network.manager import Announcements

    workers, _, _, default = three_hosts
    h1 = workers["h1"]
    applied = h1.driver.calls.get("apply_members") or 0
    announce, ctx = Announcements.of(h1.transport), RequestContext.admin()
    announce.add(ctx, "guest-2", [], [])  # leaves
    announce.add(ctx, "guest-2", [default], list(GUEST_2))  # and comes back
    announce.add(ctx, "guest-9", [default], ["10.62.0.19"])
    wait_for(lambda: "guest-9" in h1.driver.security.member_ports.get(default, {}), what="h1 applying the batch")
    assert h1.driver.security.member_ports[default] == {"guest-1": GUEST_1, "guest-2": GUEST_2,
                                                        "guest-9": ("10.62.0.19",)}
    assert h1.driver.calls["apply_members"] == applied + 1  # one message, one application
    assert announce.pending == []


def test_a_batch_is_announced_the_old_way_during_a_rolling_upgrade(settings):  # noqa: F811
    from fabric.network.rpcapi import NetworkAPI

    sent = []
    api = NetworkAPI.__new__(NetworkAPI)
    api.client = type("Recording", (), {"fanout_cast": lambda self, ctx, method, **kw: sent.append((method, kw))})()
    change = {"port_id": "guest-2", "groups": [], "addresses": []}
    for version, expected in ((envelope.VERSION, ["security_members_changed_many"]),
                              (envelope.VERSION - 1, ["security_members_changed"] * 2)):
        api.client.transport = type("T", (), {"settings": settings.rpc.__class__(envelope_version=version)})()
        api.security_members_changed_many(RequestContext.admin(), [change, change])
        assert [method for method, _ in sent] == expected
        sent.clear()
