"""Compare-and-swap instance transitions, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import pytest

from fabric.compute import states
from fabric.exception import InstanceStateConflict, NotFound
from tests.unit.compute.conftest import add_instance


def test_transition_happens_only_from_an_expected_state(db):
    instance_id = add_instance(db)
    row = states.compare_and_swap(db, instance_id, {"vm_state": "building", "task_state": ("scheduling", None)},
                                  task_state="spawning")
    assert row["task_state"] == "spawning" and row["task_started_at"] is not None
    with pytest.raises(InstanceStateConflict) as err:
        states.compare_and_swap(db, instance_id, {"task_state": "scheduling"}, task_state="spawning")
    assert err.value.fields["actual"] == "spawning" and err.value.fields["expected"] == ["scheduling"]
    with pytest.raises(InstanceStateConflict, match="host"):
        states.compare_and_swap(db, instance_id, {"host": "elsewhere"}, vm_state="active")
    assert states.get_instance(db, instance_id)["vm_state"] == "building"


def test_only_one_of_two_racing_transitions_wins(db):
    instance_id = add_instance(db)
    states.compare_and_swap(db, instance_id, {"task_state": "scheduling"}, task_state="networking")
    with pytest.raises(InstanceStateConflict):
        states.compare_and_swap(db, instance_id, {"task_state": "scheduling"}, task_state="deleting")
    assert states.get_instance(db, instance_id)["task_state"] == "networking"


def test_null_is_an_expected_value_and_deleted_rows_are_not_found(db):
    instance_id = add_instance(db, vm_state="active", task_state=None)
    states.compare_and_swap(db, instance_id, {"task_state": None}, deleted=True)
    with pytest.raises(NotFound):
        states.compare_and_swap(db, instance_id, {"task_state": None}, task_state="rebooting")
    with pytest.raises(NotFound):
        states.compare_and_swap(db, "00000000-0000-4000-8000-000000000000", {}, task_state="rebooting")


def test_the_row_returned_is_the_row_as_stored(db):
    # PostgreSQL and SQLite hand the row back from the UPDATE itself (RETURNING), MariaDB reads it
    # after: either way every column, typed as a read gives it (JSON, timestamps, booleans).
    instance_id = add_instance(db)
    vifs = [{"id": "port-1", "address": "10.0.0.5", "index": 0}]
    row = states.compare_and_swap(db, instance_id, {"task_state": "scheduling"}, task_state="networking",
                                  network_info=vifs)
    stored = states.get_instance(db, instance_id)
    assert row == stored
    assert row["network_info"] == vifs and row["deleted"] is False and row["updated_at"] is not None
