"""build_instance and terminate_instance: states, faults, cleanup, redelivery."""

from __future__ import annotations

import eventlet
import sqlalchemy as sa

from fabric.compute import states
from fabric.compute.faults import latest_fault
from fabric.db.models import Instance
from fabric.exception import AddressExhausted, HypervisorError, Unroutable
from fabric.virt.driver import PowerState
from tests.unit.compute.conftest import HOST, add_instance


def test_build_allocates_plugs_spawns_and_ends_active(manager, ctx):
    instance_id = add_instance(manager.db, networks=2)
    manager.build_instance(ctx, instance_id)
    row = states.get_instance(manager.db, instance_id)
    assert (row["vm_state"], row["task_state"], row["power_state"]) == ("active", None, int(PowerState.RUNNING))
    assert row["launched_at"] is not None
    assert [v["address"] for v in row["network_info"]] == ["10.0.0.2", "10.0.0.3"]
    taps = [vif.tap for vif in manager.driver.interfaces(instance_id)]
    assert taps == [v["tap"] for v in row["network_info"]] and all(taps)
    assert sorted(manager.network.plugged) == sorted(v["id"] for v in row["network_info"])


def test_a_redelivered_build_changes_nothing(manager, ctx):
    instance_id = add_instance(manager.db)
    manager.build_instance(ctx, instance_id)
    manager.build_instance(ctx, instance_id)
    assert manager.driver.calls["spawn"] == 1
    assert len(manager.addresses.allocated) == 1
    assert states.get_instance(manager.db, instance_id)["vm_state"] == "active"


def test_a_build_interrupted_after_spawn_resumes_without_a_second_guest(manager, ctx):
    instance_id = add_instance(manager.db)
    manager.build_instance(ctx, instance_id)
    # As if the worker died after spawning, before recording active:
    states.compare_and_swap(manager.db, instance_id, {}, vm_state="building", task_state="spawning")
    manager.build_instance(ctx, instance_id)
    assert manager.driver.calls["spawn"] == 1
    row = states.get_instance(manager.db, instance_id)
    assert (row["vm_state"], row["task_state"]) == ("active", None)


def test_a_duplicate_delivery_during_the_build_waits_and_undoes_nothing(manager, ctx):
    # RabbitMQ redelivers a build whose consumer connection broke while the first delivery
    # still runs in this process: the duplicate must not take the build half-way for a failure.
    instance_id = add_instance(manager.db)
    duplicates = []

    def deliver_again(vif):
        if not duplicates:
            duplicates.append(eventlet.spawn(manager.build_instance, ctx, instance_id))
            eventlet.sleep(0)  # the duplicate runs as far as it can before the first goes on

    manager.network.on_plug = deliver_again
    manager.build_instance(ctx, instance_id)
    duplicates[0].wait()
    row = states.get_instance(manager.db, instance_id)
    assert (row["vm_state"], row["task_state"]) == ("active", None)
    assert latest_fault(manager.db, instance_id) is None
    assert manager.driver.calls["spawn"] == 1 and manager.driver.instance_exists(instance_id)
    assert (manager.addresses.released, manager.network.unplugged) == ([], [])


def test_build_for_another_host_or_a_deleted_instance_does_nothing(manager, ctx):
    elsewhere = add_instance(manager.db, host="cmp2")
    manager.build_instance(ctx, elsewhere)
    manager.build_instance(ctx, "00000000-0000-4000-8000-000000000000")
    assert manager.driver.list_instances() == []
    assert states.get_instance(manager.db, elsewhere)["task_state"] == "scheduling"


def test_spawn_failure_records_a_fault_undoes_everything_and_reschedules(manager, ctx):
    instance_id = add_instance(manager.db, networks=2)
    manager.driver.fail_next("spawn", HypervisorError(host=HOST, action="spawn", instance=instance_id,
                                                      reason="qemu exited"))
    manager.build_instance(ctx, instance_id)
    row = states.get_instance(manager.db, instance_id)
    assert (row["vm_state"], row["task_state"], row["network_info"]) == ("building", "scheduling", [])
    [(rescheduled, failed_host, reason)] = manager.rescheduler.requests
    assert (rescheduled, failed_host) == (instance_id, HOST) and "qemu exited" in reason
    fault = latest_fault(manager.db, instance_id)
    assert fault["code"] == 500 and "qemu exited" in fault["message"] and fault["host"] == HOST
    assert manager.addresses.allocated == {} and len(manager.addresses.released) == 2
    assert manager.network.plugged == {}
    assert manager.driver.list_instances() == []


def test_address_exhaustion_is_a_fault_and_a_reschedule(manager, ctx):
    instance_id = add_instance(manager.db)
    manager.addresses.fail_with = AddressExhausted(pool="net0", size=254, in_use=254)
    manager.build_instance(ctx, instance_id)
    assert "No free address in pool net0" in latest_fault(manager.db, instance_id)["message"]
    assert manager.rescheduler.requests[0][:2] == (instance_id, HOST)


def test_an_unusable_image_ends_in_error_without_reschedule(manager, ctx):
    instance_id = add_instance(manager.db, image_id="broken")
    manager.build_instance(ctx, instance_id)
    row = states.get_instance(manager.db, instance_id)
    assert (row["vm_state"], row["task_state"]) == ("error", None)
    assert manager.rescheduler.requests == []
    fault = latest_fault(manager.db, instance_id)
    assert fault["code"] == 400 and "image broken cannot boot" in fault["message"]
    assert manager.network.plugged == {} and manager.addresses.allocated == {}


def test_a_reschedule_that_cannot_be_sent_ends_in_error(manager, ctx):
    instance_id = add_instance(manager.db)
    manager.driver.fail_next("spawn")
    manager.rescheduler.fail_with = Unroutable(target="scheduler", method="schedule_and_build")
    manager.build_instance(ctx, instance_id)
    row = states.get_instance(manager.db, instance_id)
    assert (row["vm_state"], row["task_state"]) == ("error", None)
    assert "No worker consumes scheduler" in latest_fault(manager.db, instance_id)["message"]


def test_delete_during_build_leaves_no_guest(manager, ctx):
    instance_id = add_instance(manager.db)

    def delete_now(vif):  # the user deletes while the NIC is being plugged
        states.compare_and_swap(manager.db, instance_id, {}, task_state="deleting")

    manager.network.on_plug = delete_now
    manager.build_instance(ctx, instance_id)
    assert manager.driver.list_instances() == []
    assert states.get_instance(manager.db, instance_id)["task_state"] == "deleting"
    manager.terminate_instance(ctx, instance_id)
    assert manager.network.plugged == {} and manager.addresses.allocated == {}
    assert states.get_instance(manager.db, instance_id, include_deleted=True)["vm_state"] == "deleted"


def test_delete_releases_unplugs_destroys_and_is_safe_to_repeat(manager, ctx):
    instance_id = add_instance(manager.db, networks=2)
    manager.build_instance(ctx, instance_id)
    manager.terminate_instance(ctx, instance_id)
    row = states.get_instance(manager.db, instance_id, include_deleted=True)
    assert (row["vm_state"], row["task_state"], row["deleted"]) == ("deleted", None, True)
    assert row["terminated_at"] is not None
    assert manager.driver.list_instances() == []
    assert manager.network.plugged == {} and manager.addresses.allocated == {}
    assert manager.claims.released == [(instance_id, HOST)]
    manager.terminate_instance(ctx, instance_id)  # again: no error; the claim release is repeated
    assert manager.claims.released == [(instance_id, HOST)] * 2


def test_a_failed_delete_ends_in_error_and_can_be_repeated(manager, ctx):
    instance_id = add_instance(manager.db)
    manager.build_instance(ctx, instance_id)
    manager.driver.fail_next("destroy")
    manager.terminate_instance(ctx, instance_id)
    row = states.get_instance(manager.db, instance_id)
    assert (row["vm_state"], row["task_state"]) == ("error", None)
    assert "injected failure" in latest_fault(manager.db, instance_id)["message"]
    manager.terminate_instance(ctx, instance_id)
    assert states.get_instance(manager.db, instance_id, include_deleted=True)["deleted"] is True


def test_a_build_that_lost_its_instance_to_another_host_leaves_its_ports_and_addresses(manager, ctx):
    # While this host builds, the instance is placed on another (a reschedule raced a redelivered
    # build): the port and address ids are the same on both, so this host's undo must release
    # nothing but its own devices, or the other host's server ends ACTIVE without its port.
    instance_id = add_instance(manager.db)

    def moved_elsewhere(vif):
        with manager.db.begin() as session:
            session.execute(sa.update(Instance).where(Instance.id == instance_id).values(host="cmp2"))

    manager.network.on_plug = moved_elsewhere
    manager.build_instance(ctx, instance_id)
    row = states.get_instance(manager.db, instance_id)
    assert row["host"] == "cmp2" and row["network_info"]
    assert manager.addresses.released == []
    assert manager.network.unplugged  # this host's own tap went
    assert manager.driver.list_instances() == []
