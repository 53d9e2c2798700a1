"""A delete that arrives while the build is taking the server's NICs: the server is gone (deleted)
only once every NIC the build took is given back, so the subnet can be deleted right after."""

from __future__ import annotations

import eventlet

from fabric.compute import states
from tests.unit.compute.conftest import add_instance


def test_a_delete_during_allocation_waits_for_the_build_and_gives_every_nic_back(manager, ctx):
    instance_id = add_instance(manager.db, networks=2)
    allocate, deletes, seen_when_deleted = manager.addresses.allocate, [], []

    def allocate_while_deleted(ctx_, instance, index, request):
        if not deletes:
            # The user deletes while IPAM answers the first NIC: the API's swap, then the worker's delete.
            states.compare_and_swap(manager.db, instance_id, {}, task_state=states.DELETING)
            deletes.append(eventlet.spawn(manager.terminate_instance, ctx, instance_id))
            eventlet.sleep(0)  # the delete runs as far as it can while IPAM is being asked
        return allocate(ctx_, instance, index, request)

    def mark_deleted(db, ident, expected, **values):
        if values.get("deleted"):
            seen_when_deleted.append(dict(manager.addresses.allocated))
        return swap(db, ident, expected, **values)

    swap = states.compare_and_swap
    manager.addresses.allocate = allocate_while_deleted
    states.compare_and_swap = mark_deleted
    try:
        manager.build_instance(ctx, instance_id)
        deletes[0].wait()
    finally:
        states.compare_and_swap = swap
    row = states.get_instance(manager.db, instance_id, include_deleted=True)
    assert (row["vm_state"], row["deleted"]) == ("deleted", True)
    assert seen_when_deleted == [{}], "the server was marked deleted while it still held a NIC"
    assert manager.addresses.allocated == {} and manager.network.plugged == {}
    assert manager.driver.list_instances() == []
