"""Power actions, power-state sync, the reaper, resource reports and restart recovery."""

from __future__ import annotations

import datetime

import pytest
import sqlalchemy as sa

from fabric.compute import instance_actions, states
from fabric.compute.faults import latest_fault
from fabric.db.models import ComputeNode, InstanceAction
from fabric.db.types import utcnow
from fabric.virt.driver import PowerState
from tests.unit.compute.conftest import HOST, add_instance


@pytest.fixture
def active(manager, ctx):
    instance_id = add_instance(manager.db)
    manager.build_instance(ctx, instance_id)
    return instance_id


def _state(manager, instance_id):
    row = states.get_instance(manager.db, instance_id)
    return row["vm_state"], row["task_state"], row["power_state"]


def test_power_actions_move_through_their_states(manager, ctx, active):
    manager.stop_instance(ctx, active)
    assert _state(manager, active) == ("stopped", None, PowerState.SHUTDOWN)
    manager.start_instance(ctx, active)
    assert _state(manager, active) == ("active", None, PowerState.RUNNING)
    manager.pause_instance(ctx, active)
    assert _state(manager, active) == ("paused", None, PowerState.PAUSED)
    manager.unpause_instance(ctx, active)
    manager.suspend_instance(ctx, active)
    assert _state(manager, active) == ("suspended", None, PowerState.SUSPENDED)
    manager.resume_instance(ctx, active)
    manager.reboot_instance(ctx, active, hard=True)
    assert _state(manager, active) == ("active", None, PowerState.RUNNING)
    assert manager.driver.calls["reboot"] == 1


def test_an_action_from_the_wrong_state_changes_nothing(manager, ctx, active):
    manager.start_instance(ctx, active)  # already active: start needs stopped
    manager.unpause_instance(ctx, active)
    assert _state(manager, active) == ("active", None, PowerState.RUNNING)
    assert manager.driver.calls["power_on"] == 0 and manager.driver.calls["unpause"] == 0


def test_a_failed_action_ends_in_error_with_a_fault(manager, ctx, active):
    manager.driver.fail_next("pause")
    manager.pause_instance(ctx, active)
    assert _state(manager, active)[:2] == ("error", None)
    assert "pause" in latest_fault(manager.db, active)["message"]


def test_the_worker_finishes_the_action_of_its_request(manager, ctx, active):
    with manager.db.begin() as session:  # what the API records when it accepts a pause
        instance_actions.start(session, ctx, active, "pause")
    manager.driver.fail_next("pause")
    manager.pause_instance(ctx, active)
    with manager.db.begin() as session:
        action = session.scalar(sa.select(InstanceAction).where(InstanceAction.instance_id == active))
        assert (action.action, action.result) == ("pause", "Error")
        assert "pause" in action.message and action.finish_time >= action.start_time
        finished = action.finish_time
    manager.pause_instance(ctx, active)  # a redelivery: the action stays as it ended
    with manager.db.begin() as session:
        assert session.scalar(sa.select(InstanceAction.finish_time)) == finished


def test_sync_shows_a_guest_killed_behind_our_back_as_stopped(manager, ctx, active):
    manager.driver.kill(active)
    assert manager.sync_power_states(ctx) == 1
    assert _state(manager, active) == ("stopped", None, PowerState.SHUTDOWN)
    assert manager.sync_power_states(ctx) == 0  # nothing left to change


def test_sync_errors_an_instance_whose_guest_vanished(manager, ctx, active):
    manager.driver.destroy(active)
    manager.sync_power_states(ctx)
    assert _state(manager, active)[0] == "error"
    assert "vanished" in latest_fault(manager.db, active)["message"]


def test_sync_leaves_a_build_that_finishes_while_it_runs_active(manager, ctx):
    """The build ends (guest spawned, row ACTIVE) right after the sync listed the hypervisor's
    guests: the sync must not take that server's guest for one that vanished."""
    instance_id = add_instance(manager.db)
    list_guests = manager.driver.get_power_states

    def listing_then_the_build_finishes():
        listed = list_guests()
        if states.get_instance(manager.db, instance_id)["vm_state"] == "building":
            manager.build_instance(ctx, instance_id)
        return listed

    manager.driver.get_power_states = listing_then_the_build_finishes
    manager.sync_power_states(ctx)
    assert _state(manager, instance_id) == ("active", None, PowerState.RUNNING)
    assert latest_fault(manager.db, instance_id) is None


def test_sync_leaves_instances_with_a_task_alone(manager, ctx, active):
    states.compare_and_swap(manager.db, active, {}, task_state="rebooting")
    manager.driver.kill(active)
    assert manager.sync_power_states(ctx) == 0
    assert _state(manager, active) == ("active", "rebooting", PowerState.RUNNING)


def test_the_reaper_errors_instances_stuck_past_the_timeout(make_manager, ctx):
    manager = make_manager(transient_timeout=60)
    old = utcnow() - datetime.timedelta(seconds=120)
    stuck = add_instance(manager.db, task_state="spawning", task_started_at=old)
    recent = add_instance(manager.db, task_state="spawning", task_started_at=utcnow())
    resting = add_instance(manager.db, vm_state="active", task_state=None, task_started_at=old)
    assert manager.reap_stuck_instances(ctx) == [stuck]
    assert _state(manager, stuck)[:2] == ("error", None)
    fault = latest_fault(manager.db, stuck)
    assert "stuck in task spawning for more than 60s" in fault["message"]
    assert _state(manager, recent)[:2] == ("building", "spawning")
    assert _state(manager, resting)[:2] == ("active", None)


def test_resource_report_writes_capacity_and_never_touches_claimed_usage(manager, ctx, active):
    with manager.db.begin() as session:
        session.add(ComputeNode(host=HOST, vcpus_used=5, memory_mb_used=640, running_vms=3))
    manager.report_resources(ctx)
    with manager.db.begin() as session:
        node = session.scalars(sa.select(ComputeNode).where(ComputeNode.host == HOST)).one()
        assert (node.vcpus, node.memory_mb, node.disk_gb, node.hypervisor_type) == (8, 4096, 100, "fake")
        assert (node.vcpus_used, node.memory_mb_used, node.running_vms) == (5, 640, 3)
        assert node.stats["guests_running"] == 1 and node.stats["guests_memory_mb"] == 128
        assert node.last_report is not None


def test_first_report_creates_the_node(manager, ctx):
    manager.report_resources(ctx)
    manager.report_resources(ctx)
    with manager.db.begin() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(ComputeNode)) == 1


def test_restart_finishes_deletes_and_settles_interrupted_actions(manager, ctx):
    deleting, stopping = add_instance(manager.db), add_instance(manager.db)
    building = add_instance(manager.db)
    for instance_id in (deleting, stopping):
        manager.build_instance(ctx, instance_id)
    states.compare_and_swap(manager.db, deleting, {}, task_state="deleting")
    states.compare_and_swap(manager.db, stopping, {}, task_state="powering-off")
    manager.driver.power_off(stopping)  # the guest stopped, the worker died before recording it
    manager.init_host()
    assert states.get_instance(manager.db, deleting, include_deleted=True)["deleted"] is True
    assert _state(manager, stopping) == ("stopped", None, PowerState.SHUTDOWN)
    assert _state(manager, building)[:2] == ("building", "scheduling")  # its message will come back


def test_a_report_creates_then_updates_the_node_on_every_backend(db):
    # The update is one statement committed alone (PostgreSQL: autocommit); the row count still
    # tells an update from a first report.
    from fabric.compute import housekeeping
    from fabric.virt.fake import FakeDriver

    driver = FakeDriver(vcpus=8, memory_mb=4096, disk_gb=100, hostname="cmp9")
    driver.init_host("cmp9")
    housekeeping.report_resources(db, driver, "cmp9", "nova")
    with db.begin() as session:
        session.execute(sa.update(ComputeNode).where(ComputeNode.host == "cmp9").values(memory_mb_used=512))
    driver.capacity = (16, 8192, 200)
    housekeeping.report_resources(db, driver, "cmp9", "az2")
    with db.begin() as session:
        [node] = session.scalars(sa.select(ComputeNode).where(ComputeNode.host == "cmp9")).all()
    assert (node.vcpus, node.memory_mb, node.disk_gb, node.availability_zone) == (16, 8192, 200, "az2")
    assert node.memory_mb_used == 512 and node.stats["hypervisor_hostname"] == "cmp9"
