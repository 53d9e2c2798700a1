"""The scheduler manager's handlers, called directly, with a recording compute client."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from fabric import exception, heap
from fabric.config import Settings
from fabric.context import RequestContext
from fabric.db.models import Instance
from fabric.scheduler.manager import SchedulerManager
from tests.fixtures import scheduler as build
from tests.fixtures.processes import wait_until

CTX = RequestContext.admin()


class RecordingCompute:
    """Records build requests; hosts in ``unreachable`` have no compute worker consuming."""

    def __init__(self, unreachable=()):
        self.builds: list[tuple[str, str]] = []
        self.unreachable = set(unreachable)

    def build_instance(self, ctx, host, instance_id):
        if host in self.unreachable:
            raise exception.Unroutable(target=f"compute.{host}", method="build_instance")
        self.builds.append((host, instance_id))


def manager_for(db, compute, **scheduler):
    settings = Settings().replace(scheduler={"host_refresh_interval": 0.0, **scheduler})
    return SchedulerManager(settings, host="sched1", db=db, compute=compute)


def test_places_the_instance_and_asks_its_host_to_build(sqlite_db):
    build.add_hosts(sqlite_db, 2, memory_mb=4096)
    [iid] = build.add_instances(sqlite_db, 1, memory_mb=1024)
    compute = RecordingCompute()
    manager = manager_for(sqlite_db, compute)
    manager.schedule_and_build(CTX, instance_id=iid)
    host = build.instances(sqlite_db)[iid].host
    assert compute.builds == [(host, iid)]
    assert build.nodes(sqlite_db)[host].memory_mb_used == 1024
    assert manager.decision_stats(CTX)["outcomes"] == {"placed": 1}


def test_repeated_message_asks_the_same_host_again_without_a_second_claim(sqlite_db):
    # As after a scheduler worker died between its claim and its cast.
    build.add_hosts(sqlite_db, 2)
    [iid] = build.add_instances(sqlite_db, 1)
    compute = RecordingCompute()
    manager = manager_for(sqlite_db, compute)
    manager.schedule_and_build(CTX, instance_id=iid)
    manager.schedule_and_build(CTX, instance_id=iid)
    assert len(compute.builds) == 2 and compute.builds[0] == compute.builds[1]
    assert sum(n.running_vms for n in build.nodes(sqlite_db).values()) == 1
    assert build.instances(sqlite_db)[iid].scheduling_attempts == 1


def test_repeated_message_once_compute_took_the_instance_up_changes_nothing(sqlite_db):
    build.add_hosts(sqlite_db, 2)
    [iid] = build.add_instances(sqlite_db, 1)
    compute = RecordingCompute()
    manager = manager_for(sqlite_db, compute)
    manager.schedule_and_build(CTX, instance_id=iid)
    with sqlite_db.begin() as session:  # the compute host started building it
        session.execute(sa.update(Instance).values(task_state="networking"))
    manager.schedule_and_build(CTX, instance_id=iid)
    assert len(compute.builds) == 1
    assert sum(n.running_vms for n in build.nodes(sqlite_db).values()) == 1


def test_no_valid_host_errors_the_instance_with_per_filter_counts(sqlite_db):
    build.add_hosts(sqlite_db, 1, prefix="down", up=False)
    build.add_hosts(sqlite_db, 2, prefix="small", memory_mb=512)
    build.add_hosts(sqlite_db, 1, prefix="other-az", availability_zone="az2")
    [iid] = build.add_instances(sqlite_db, 1, memory_mb=1024, availability_zone="nova")
    compute = RecordingCompute()
    manager_for(sqlite_db, compute).schedule_and_build(CTX, instance_id=iid)
    instance = build.instances(sqlite_db)[iid]
    assert instance.vm_state == "error" and instance.task_state is None and instance.host is None
    assert build.faults(sqlite_db)[iid] == [
        "No valid host was found: 4 hosts; ComputeFilter removed 1, AggregateAvailabilityZoneFilter removed 1, "
        "RamFilter removed 2"]
    assert compute.builds == []


def test_failed_build_is_rescheduled_elsewhere_and_the_claim_given_back(sqlite_db):
    build.add_hosts(sqlite_db, 2)
    [iid] = build.add_instances(sqlite_db, 1)
    compute = RecordingCompute()
    manager = manager_for(sqlite_db, compute)
    manager.schedule_and_build(CTX, instance_id=iid)
    first = compute.builds[-1][0]
    manager.schedule_and_build(CTX, instance_id=iid, failed_host=first, reason="libvirt said no")
    second = compute.builds[-1][0]
    assert second != first
    nodes = build.nodes(sqlite_db)
    assert nodes[first].memory_mb_used == 0 and nodes[first].failed_builds == 1
    assert nodes[second].memory_mb_used == 1024
    instance = build.instances(sqlite_db)[iid]
    assert instance.host == second and instance.failed_hosts == [first]
    assert instance.scheduling_attempts == 2


def test_build_failing_max_attempts_times_ends_in_error_naming_the_hosts(sqlite_db):
    build.add_hosts(sqlite_db, 5)
    [iid] = build.add_instances(sqlite_db, 1)
    compute = RecordingCompute()
    manager = manager_for(sqlite_db, compute, max_attempts=3)
    manager.schedule_and_build(CTX, instance_id=iid)
    for _ in range(3):
        manager.schedule_and_build(CTX, instance_id=iid, failed_host=compute.builds[-1][0], reason="disk full")
    failed = [host for host, _ in compute.builds]
    assert len(failed) == 3 and len(set(failed)) == 3
    instance = build.instances(sqlite_db)[iid]
    assert instance.vm_state == "error" and instance.host is None
    [fault] = build.faults(sqlite_db)[iid]
    assert fault.startswith(f"Build of instance {iid} failed on 3 host(s) ({', '.join(failed)})")
    assert "max_attempts is 3" in fault and "disk full" in fault
    assert all(n.memory_mb_used == 0 for n in build.nodes(sqlite_db).values())


def test_unreachable_compute_counts_as_a_failed_build(sqlite_db):
    build.add_hosts(sqlite_db, 2, prefix="big", memory_mb=16384)  # preferred by spread, but unreachable
    build.add_hosts(sqlite_db, 1, prefix="small", memory_mb=4096)
    [iid] = build.add_instances(sqlite_db, 1)
    compute = RecordingCompute(unreachable={"big0000", "big0001"})
    manager_for(sqlite_db, compute).schedule_and_build(CTX, instance_id=iid)
    assert compute.builds == [("small0000", iid)]
    instance = build.instances(sqlite_db)[iid]
    assert instance.host == "small0000" and sorted(instance.failed_hosts) == ["big0000", "big0001"]
    nodes = build.nodes(sqlite_db)
    assert [nodes[h].running_vms for h in ("big0000", "big0001", "small0000")] == [0, 0, 1]
    assert nodes["big0000"].failed_builds == 1


def test_every_compute_unreachable_ends_in_error_after_max_attempts(sqlite_db):
    build.add_hosts(sqlite_db, 4)
    [iid] = build.add_instances(sqlite_db, 1)
    compute = RecordingCompute(unreachable={f"host{i:04d}" for i in range(4)})
    manager_for(sqlite_db, compute, max_attempts=2).schedule_and_build(CTX, instance_id=iid)
    [fault] = build.faults(sqlite_db)[iid]
    assert "failed on 2 host(s)" in fault and "could not reach compute" in fault


def test_deleted_instance_is_not_scheduled(sqlite_db):
    build.add_hosts(sqlite_db, 1)
    [iid] = build.add_instances(sqlite_db, 1)
    with sqlite_db.begin() as session:
        session.execute(sa.update(Instance).values(deleted=True, vm_state="deleted"))
    compute = RecordingCompute()
    manager_for(sqlite_db, compute).schedule_and_build(CTX, instance_id=iid)
    manager_for(sqlite_db, compute).schedule_and_build(CTX, instance_id="no-such-instance")
    assert compute.builds == [] and build.faults(sqlite_db) == {}


def test_image_and_flavor_requirements_come_from_the_instance(sqlite_db):
    build.add_hosts(sqlite_db, 2, prefix="x86-", stats={"cpu_arch": "x86_64"})
    build.add_hosts(sqlite_db, 2, prefix="arm-", stats={"cpu_arch": "aarch64"})
    image = build.add_image(sqlite_db, {"architecture": "aarch64"})
    [iid] = build.add_instances(sqlite_db, 1, image_id=image)
    manager_for(sqlite_db, RecordingCompute()).schedule_and_build(CTX, instance_id=iid)
    assert build.instances(sqlite_db)[iid].host.startswith("arm-")


def test_select_destinations_ranks_without_claiming(sqlite_db):
    build.add_hosts(sqlite_db, 3, memory_mb=2048)
    manager = manager_for(sqlite_db, RecordingCompute())
    found = manager.select_destinations(CTX, {"memory_mb": 1024, "vcpus": 1}, limit=2)
    assert len(found) == 2 and all(entry["host"].startswith("host") for entry in found)
    assert all(n.memory_mb_used == 0 for n in build.nodes(sqlite_db).values())
    with pytest.raises(exception.NoValidHost, match="RamFilter removed 3"):
        manager.select_destinations(CTX, {"memory_mb": 4096})
    with pytest.raises(exception.Invalid, match="colour"):
        manager.select_destinations(CTX, {"memory_mb": 1, "colour": "red"})
    with pytest.raises(exception.Invalid, match="memory_mb=-1"):
        manager.select_destinations(CTX, {"memory_mb": -1})
    with pytest.raises(exception.Invalid, match="extra_specs='fast'"):
        manager.select_destinations(CTX, {"memory_mb": 1, "extra_specs": "fast"})
    with pytest.raises(exception.Invalid, match="ignore_hosts"):
        manager.select_destinations(CTX, {"memory_mb": 1, "ignore_hosts": "host0000"})
    with pytest.raises(exception.Invalid, match="limit 0"):
        manager.select_destinations(CTX, {"memory_mb": 1}, limit=0)


def test_a_reschedule_leaves_a_build_its_host_took_up_again(sqlite_db):
    # The failing host put the instance back in scheduling and asked for a reschedule; before the
    # scheduler got to it, a redelivered build message made that host build it again (networking).
    # The reschedule must leave it there: clearing the host and placing it elsewhere made two hosts
    # build one server, and the first one's undo took the port of the one that went ACTIVE.
    build.add_hosts(sqlite_db, 2)
    [iid] = build.add_instances(sqlite_db, 1)
    compute = RecordingCompute()
    manager = manager_for(sqlite_db, compute)
    manager.schedule_and_build(CTX, instance_id=iid)
    first = compute.builds[-1][0]
    with sqlite_db.begin() as session:
        session.execute(sa.update(Instance).where(Instance.id == iid).values(task_state="networking"))
    manager.schedule_and_build(CTX, instance_id=iid, failed_host=first, reason="cut by the broker")
    assert [host for host, _ in compute.builds] == [first]
    instance = build.instances(sqlite_db)[iid]
    assert (instance.host, instance.task_state, instance.failed_hosts) == (first, "networking", [])
    assert build.nodes(sqlite_db)[first].memory_mb_used == 1024


def _decide_together(manager, ids) -> None:
    """Have ``manager`` decide the requests of ``ids`` in batches: each queues up behind a decision
    under way, held until all of them wait; then they are decided and this returns."""
    manager._decision_slots.acquire()
    threads = [threading.Thread(target=manager.schedule_and_build, args=(CTX, iid)) for iid in ids]
    try:
        for thread in threads:
            thread.start()
        wait_until(lambda: len(manager._waiting) == len(ids), timeout=10, what="every request waiting")
    finally:
        manager._decision_slots.release()
        for thread in threads:
            thread.join(10)


def test_first_placements_waiting_together_are_decided_batch_size_at_a_time(sqlite_db):
    build.add_hosts(sqlite_db, 5, memory_mb=4096)
    ids = build.add_instances(sqlite_db, 5, memory_mb=1024)
    compute = RecordingCompute()
    manager = manager_for(sqlite_db, compute, batch_size=2)
    claims_made: list[str] = []  # one UPDATE of compute_nodes per claim transaction

    def count(conn, cursor, statement, *args):
        if statement.lstrip().startswith("UPDATE compute_nodes"):
            claims_made.append(statement)

    sa.event.listen(sqlite_db.engine, "before_cursor_execute", count)
    try:
        _decide_together(manager, ids)
    finally:
        sa.event.remove(sqlite_db.engine, "before_cursor_execute", count)
    assert len(claims_made) == 3  # batches of 2, 2 and 1
    assert sorted(iid for _host, iid in compute.builds) == sorted(ids)
    instances = build.instances(sqlite_db)
    assert all(instances[iid].host is not None for iid in ids)
    assert manager.decision_stats(CTX)["outcomes"] == {"placed": 5}



def test_a_batch_placement_its_host_no_longer_takes_leaves_no_build_cast_behind(db):
    from fabric.db.models import OutboxCast
    from fabric.scheduler import claims

    build.add_hosts(db, 1, prefix="a", memory_mb=8192)
    build.add_hosts(db, 1, prefix="b", memory_mb=7680)
    [other] = build.add_instances(db, 1, memory_mb=7168)
    ids = build.add_instances(db, 2, memory_mb=2048)
    compute = RecordingCompute()
    manager = manager_for(db, compute, host_refresh_interval=3600.0, ram_allocation_ratio=1.0)
    manager.init_host()
    manager.scheduler.cache.hosts()  # the cache sees a0000 empty (and reads nothing more for an hour) ...
    claims.claim(db, claims.RequestSpec(instance_id=other, vcpus=1, memory_mb=7168, disk_gb=10),
                 manager.scheduler.cache.get("a0000"), manager.scheduler.ratios)  # ... and another scheduler fills it
    _decide_together(manager, ids)
    # Chosen first on a0000 (as the cache saw it) and on b0000: the claim left the first out, and
    # the cast written for it with the claim went with it; chosen again, it went to b0000.
    assert sorted(compute.builds) == sorted(("b0000", iid) for iid in ids)
    with db.begin() as session:
        hosts_cast = [row.payload["kwargs"]["host"] for row in session.scalars(sa.select(OutboxCast))]
    assert "a0000" not in hosts_cast
    assert {iid: (row.host, row.scheduling_attempts) for iid, row in build.instances(db, ids).items()} == {
        iid: ("b0000", 1) for iid in ids}
    assert build.overcommitted(db, ram_ratio=1.0, cpu_ratio=1.0, disk_ratio=1.0) == []


def test_init_host_reads_every_host_before_the_first_message(sqlite_db, monkeypatch):
    build.add_hosts(sqlite_db, 2, memory_mb=4096)
    [iid] = build.add_instances(sqlite_db, 1, memory_mb=1024)
    frozen = []
    monkeypatch.setattr(heap, "freeze_startup_objects", lambda: frozen.append(True))  # not this test process
    manager = manager_for(sqlite_db, RecordingCompute(), host_refresh_interval=3600.0)
    manager.init_host()
    cache = manager.scheduler.cache
    assert cache.get("host0000") is not None and cache.get("host0001") is not None and frozen == [True]
    full_read_at = cache._last_full
    manager.schedule_and_build(CTX, instance_id=iid)
    assert cache._last_full == full_read_at  # the first decision did not read every host again
    assert build.instances(sqlite_db)[iid].host in ("host0000", "host0001")


def test_a_host_up_after_init_host_is_seen_by_the_first_decision(sqlite_db, monkeypatch):
    """Workers start in any order: a host whose compute worker came up after the scheduler's start
    is there for the first decision, however long ``host_refresh_interval`` (CI: a server refused as
    "No valid host" by a read taken 0.1 s before its only host registered)."""
    build.add_hosts(sqlite_db, 1, prefix="full", memory_mb=512)
    [iid] = build.add_instances(sqlite_db, 1, memory_mb=1024)
    monkeypatch.setattr(heap, "freeze_startup_objects", lambda: None)
    manager = manager_for(sqlite_db, RecordingCompute(), host_refresh_interval=3600.0)
    manager.init_host()
    build.add_hosts(sqlite_db, 1, prefix="late", memory_mb=4096)
    manager.schedule_and_build(CTX, instance_id=iid)
    assert build.instances(sqlite_db)[iid].host == "late0000"


def test_init_host_that_cannot_read_the_hosts_leaves_it_to_the_first_decision(sqlite_db, monkeypatch):
    build.add_hosts(sqlite_db, 1, memory_mb=4096)
    [iid] = build.add_instances(sqlite_db, 1, memory_mb=1024)
    monkeypatch.setattr(heap, "freeze_startup_objects", lambda: None)
    manager = manager_for(sqlite_db, RecordingCompute())
    real_hosts = manager.scheduler.cache.hosts

    def unreachable():
        raise sa.exc.OperationalError("SELECT", {}, Exception("connection refused"))

    monkeypatch.setattr(manager.scheduler.cache, "hosts", unreachable)
    manager.init_host()  # logged, not raised: the worker starts
    monkeypatch.setattr(manager.scheduler.cache, "hosts", real_hosts)
    manager.schedule_and_build(CTX, instance_id=iid)
    assert build.instances(sqlite_db)[iid].host == "host0000"
