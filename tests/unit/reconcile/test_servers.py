"""Server drift on the fake hypervisor: stale, orphan and unsynced guests, reported and fixed."""

from __future__ import annotations

import sqlalchemy as sa

from fabric.compute import states
from fabric.compute.faults import latest_fault
from fabric.db.models import Instance
from fabric.virt.driver import BootImage, GuestSpec, PowerState
from tests.unit.compute.conftest import add_instance


def _active(manager, ctx) -> str:
    instance_id = add_instance(manager.db)
    manager.build_instance(ctx, instance_id)
    assert states.get_instance(manager.db, instance_id)["vm_state"] == "active"
    return instance_id


def _kinds(report: dict) -> list[tuple[str, str]]:
    return sorted((f["kind"], f["ident"]) for f in report["findings"])


def _extra_guest(manager, uuid: str) -> None:
    manager.driver.spawn(GuestSpec(uuid=uuid, name="extra", vcpus=1, memory_mb=64, disk_gb=0,
                                   image=BootImage(kernel="/images/vmlinux")))


def test_a_host_in_line_with_its_database_reports_nothing(manager, ctx):
    _active(manager, ctx)
    assert manager.reconcile_servers(ctx) == {"host": "cmp1", "findings": []}


def test_a_guest_gone_behind_our_back_is_stale_and_fixed_through_the_power_sync(manager, ctx):
    gone = _active(manager, ctx)
    manager.driver.destroy(gone)  # behind fabric's back
    report = manager.reconcile_servers(ctx)
    assert _kinds(report) == [("stale", gone)]
    assert report["findings"][0]["fixed"] is False
    assert states.get_instance(manager.db, gone)["vm_state"] == "active"  # a report changes nothing

    fixed = manager.reconcile_servers(ctx, {"stale": True})
    assert [f["fixed"] for f in fixed["findings"]] == [True]
    row = states.get_instance(manager.db, gone)
    assert (row["vm_state"], row["power_state"]) == ("error", PowerState.NOSTATE)
    assert "vanished" in latest_fault(manager.db, gone)["message"]
    assert manager.reconcile_servers(ctx)["findings"] == []


def test_a_guest_killed_behind_our_back_is_unsynced_and_takes_the_hypervisors_power(manager, ctx):
    killed = _active(manager, ctx)
    manager.driver.kill(killed)
    assert _kinds(manager.reconcile_servers(ctx, {"stale": True, "orphans": True})) == [("unsynced", killed)]
    assert states.get_instance(manager.db, killed)["vm_state"] == "active"  # not a kind that was named

    manager.reconcile_servers(ctx, {"unsynced": True})
    row = states.get_instance(manager.db, killed)
    assert (row["vm_state"], row["power_state"]) == ("stopped", PowerState.SHUTDOWN)
    assert manager.reconcile_servers(ctx)["findings"] == []


def test_guests_of_no_live_server_here_are_orphans_destroyed_as_a_delete_does(manager, ctx):
    kept = _active(manager, ctx)
    deleted = _active(manager, ctx)
    with manager.db.begin() as session:  # deleted in the database, its guest left behind
        session.execute(sa.update(Instance).where(Instance.id == deleted).values(deleted=True, vm_state="deleted"))
    elsewhere = add_instance(manager.db, host="cmp2", vm_state="active", task_state=None)
    _extra_guest(manager, "00000000-0000-4000-8000-00000000e0e0")
    _extra_guest(manager, elsewhere)

    report = manager.reconcile_servers(ctx)
    details = {f["ident"]: f["detail"] for f in report["findings"]}
    assert _kinds(report) == sorted([("orphan", deleted), ("orphan", elsewhere),
                                     ("orphan", "00000000-0000-4000-8000-00000000e0e0")])
    assert "deleted in the database" in details[deleted]
    assert "placed on cmp2" in details[elsewhere]
    assert "no such server" in details["00000000-0000-4000-8000-00000000e0e0"]

    destroyed_before = manager.driver.calls["destroy"]
    fixed = manager.reconcile_servers(ctx, {"orphans": True})
    assert all(f["fixed"] for f in fixed["findings"])
    assert manager.driver.calls["destroy"] == destroyed_before + 3
    assert manager.driver.list_instances() == [kept]
    assert manager.reconcile_servers(ctx)["findings"] == []


def test_only_the_named_kind_is_fixed_and_a_server_at_work_is_no_finding(manager, ctx):
    stale, unsynced = _active(manager, ctx), _active(manager, ctx)
    busy = _active(manager, ctx)
    manager.driver.destroy(stale)
    manager.driver.kill(unsynced)
    manager.driver.destroy(busy)
    states.compare_and_swap(manager.db, busy, {"task_state": None}, task_state=states.REBOOTING)
    _extra_guest(manager, "00000000-0000-4000-8000-00000000e0e1")

    report = manager.reconcile_servers(ctx, {"orphans": True})
    outcome = {f["kind"]: f["fixed"] for f in report["findings"]}
    assert outcome == {"stale": False, "unsynced": False, "orphan": True}
    assert states.get_instance(manager.db, stale)["vm_state"] == "active"
    assert states.get_instance(manager.db, unsynced)["vm_state"] == "active"
    assert _kinds(manager.reconcile_servers(ctx)) == sorted([("stale", stale), ("unsynced", unsynced)])


def test_the_periodic_report_logs_one_line_per_finding_and_fixes_nothing(manager, ctx, caplog):
    gone, killed = _active(manager, ctx), _active(manager, ctx)
    manager.driver.destroy(gone)
    manager.driver.kill(killed)
    with caplog.at_level("WARNING", logger="fabric.compute.manager"):
        assert manager.report_server_drift(ctx) == 2
    lines = [r.getMessage() for r in caplog.records if "drift servers" in r.getMessage()]
    assert len(lines) == 2
    assert any(f"stale server {gone}" in line for line in lines)
    assert any(f"unsynced server {killed}" in line for line in lines)
    assert states.get_instance(manager.db, gone)["vm_state"] == "active"
