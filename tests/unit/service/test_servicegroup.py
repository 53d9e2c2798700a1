"""The services registry: registration, heartbeats, up/down, disable/enable."""

from __future__ import annotations

import datetime
import threading

import pytest
import sqlalchemy as sa

from fabric import servicegroup
from fabric.db import Database
from fabric.db.models import Service
from fabric.db.types import utcnow
from fabric.exception import Invalid, NotFound


def register(db, host="h1", binary="fabric-compute", **extra):
    fields = {"topic": "compute", "version": "0.1.0", "address": "10.0.0.1",
              "capabilities": {"hypervisor": "fake"}} | extra
    servicegroup.register(db, host=host, binary=binary, **fields)


def test_register_then_heartbeat_advances_the_row(db):
    register(db)
    [first] = servicegroup.list_services(db)
    assert (first.host, first.binary, first.topic) == ("h1", "fabric-compute", "compute")
    assert first.capabilities == {"hypervisor": "fake"}
    assert first.address == "10.0.0.1"
    assert first.report_count == 1 and first.up

    servicegroup.heartbeat(db, host="h1", binary="fabric-compute", topic="compute")
    [second] = servicegroup.list_services(db)
    assert second.report_count == 2
    assert second.last_heartbeat >= first.last_heartbeat
    assert second.id == first.id


def test_reregistering_keeps_one_row_and_the_disabled_state(db):
    register(db)
    servicegroup.set_disabled(db, "h1", "fabric-compute", True, reason="maintenance")
    register(db, version="0.2.0", capabilities={"hypervisor": "qemu"})
    [row] = servicegroup.list_services(db)
    assert row.version == "0.2.0" and row.capabilities == {"hypervisor": "qemu"}
    assert row.disabled and row.disabled_reason == "maintenance"
    assert row.report_count == 2


def test_heartbeat_recreates_a_deleted_row(db):
    register(db)
    with db.begin() as session:
        session.execute(sa.delete(Service))
    servicegroup.heartbeat(db, host="h1", binary="fabric-compute", topic="compute")
    [row] = servicegroup.list_services(db)
    assert row.topic == "compute" and row.report_count == 1 and row.up


def test_concurrent_registration_of_one_service_makes_one_row(tmp_path):
    # Several processes' worth of connections racing the update-or-insert.
    db = Database(f"sqlite:///{tmp_path / 'race.sqlite'}")
    Service.metadata.create_all(db.engine)
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def racer():
        try:
            barrier.wait()
            register(db)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=racer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    [row] = servicegroup.list_services(db)
    assert row.report_count == 6
    db.dispose()


def test_up_and_down_follow_the_heartbeat_age(sqlite_db):
    register(sqlite_db, host="fresh")
    register(sqlite_db, host="stale")
    with sqlite_db.begin() as session:
        session.execute(sa.update(Service).where(Service.host == "stale")
                        .values(last_heartbeat=utcnow() - datetime.timedelta(seconds=30)))
    states = {s.host: s.up for s in servicegroup.list_services(sqlite_db, down_time=10)}
    assert states == {"fresh": True, "stale": False}
    assert [s.host for s in servicegroup.list_services(sqlite_db, up_only=True, down_time=10)] == ["fresh"]
    assert {s.host for s in servicegroup.list_services(sqlite_db, up_only=True, down_time=60)} == {"fresh", "stale"}


def test_is_up_edges():
    now = datetime.datetime(2026, 1, 1, 12, 0, 0)
    row = Service(host="h", binary="b", topic="t", last_heartbeat=now - datetime.timedelta(seconds=60))
    assert servicegroup.is_up(row, now, down_time=60)
    assert not servicegroup.is_up(row, now + datetime.timedelta(microseconds=1), down_time=60)
    assert not servicegroup.is_up(Service(host="h", binary="b", topic="t"), now)
    assert not servicegroup.is_up(None, now)  # no registry row at all


def test_list_filters_by_topic_and_binary(sqlite_db):
    register(sqlite_db, host="h1")
    register(sqlite_db, host="h1", binary="fabric-ipam", topic="ipam")
    assert [s.binary for s in servicegroup.list_services(sqlite_db, topic="ipam")] == ["fabric-ipam"]
    assert [s.binary for s in servicegroup.list_services(sqlite_db)] == ["fabric-compute", "fabric-ipam"]
    info = servicegroup.get_service(sqlite_db, "h1", "fabric-ipam")
    assert info.to_dict()["last_heartbeat"].endswith("Z")


def test_disable_enable(sqlite_db):
    register(sqlite_db)
    servicegroup.set_disabled(sqlite_db, "h1", "fabric-compute", True, reason="disk swap")
    row = servicegroup.get_service(sqlite_db, "h1", "fabric-compute")
    assert row.disabled and row.disabled_reason == "disk swap"
    servicegroup.set_disabled(sqlite_db, "h1", "fabric-compute", False)
    row = servicegroup.get_service(sqlite_db, "h1", "fabric-compute")
    assert not row.disabled and row.disabled_reason is None


def test_disable_unknown_or_overlong(sqlite_db):
    with pytest.raises(NotFound, match="fabric-compute on host nowhere"):
        servicegroup.set_disabled(sqlite_db, "nowhere", "fabric-compute", True)
    register(sqlite_db)
    with pytest.raises(Invalid, match="300 characters"):
        servicegroup.set_disabled(sqlite_db, "h1", "fabric-compute", True, reason="x" * 300)
    assert not servicegroup.get_service(sqlite_db, "h1", "fabric-compute").disabled


def test_heartbeat_many_advances_every_row_in_one_statement_and_recreates_deleted_ones(db):
    for host in ("h1", "h2", "h3"):
        register(db, host=host)
        register(db, host=host, binary="fabric-network", topic="network")
    with db.begin() as session:
        session.execute(sa.delete(Service).where(Service.host == "h2", Service.binary == "fabric-network"))
    before = {(s.host, s.binary): s for s in servicegroup.list_services(db)}
    updates: list[str] = []

    def count(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("UPDATE"):
            updates.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", count)
    try:
        servicegroup.heartbeat_many(db, [("h1", "fabric-compute", "compute"), ("h1", "fabric-network", "network"),
                                         ("h2", "fabric-network", "network"), ("h3", "fabric-compute", "compute")])
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", count)
    after = {(s.host, s.binary): s for s in servicegroup.list_services(db)}
    for key in (("h1", "fabric-compute"), ("h1", "fabric-network"), ("h3", "fabric-compute")):
        assert after[key].report_count == 2 and after[key].last_heartbeat >= before[key].last_heartbeat
    # Not named: untouched. Deleted: back, as a first report (its own upsert after the one UPDATE).
    assert after[("h3", "fabric-network")].report_count == 1
    assert after[("h2", "fabric-compute")].report_count == 1
    assert after[("h2", "fabric-network")].report_count == 1 and after[("h2", "fabric-network")].up
    assert len(updates) == 2  # the one for all, then the deleted row's own attempt before its INSERT


def test_a_heartbeat_carries_fanout_drops_and_registration_clears_them(db):
    register(db)
    assert servicegroup.get_service(db, "h1", "fabric-compute").fanout_drops == {}
    last = datetime.datetime(2026, 12, 7, 8, 3, 11, 123456)
    servicegroup.heartbeat(db, host="h1", binary="fabric-compute", topic="compute",
                           fanout_drops={"stale": 2, "unsigned": 1}, fanout_dropped_at=last)
    servicegroup.heartbeat_many(db, [("h1", "fabric-compute", "compute")])  # nothing new: kept
    row = servicegroup.get_service(db, "h1", "fabric-compute")
    assert (row.fanout_drops, row.fanout_dropped_at, row.report_count) == ({"stale": 2, "unsigned": 1}, last, 3)
    assert row.to_dict()["fanout_dropped_at"] == "2026-12-07T08:03:11.123456Z"
    register(db)  # the worker restarted: its new process has dropped nothing
    row = servicegroup.get_service(db, "h1", "fabric-compute")
    assert (row.fanout_drops, row.fanout_dropped_at) == ({}, None)
    with db.begin() as session:  # SQL NULL, not the JSON document null
        assert session.scalar(sa.select(Service.id).where(Service.fanout_drops.is_(None))) == row.id
