"""The server state machine, walked whole: every action of fabric.compute.states.ACTIONS from
every (vm_state, task_state), against the HTTP API, the compute worker and each driver.

For each (action, vm_state, task_state) the API must answer 202 exactly when the compute
worker runs the action from that state and every driver (the fake, and libvirt on its test
driver) accepts it from the power state(s) of a guest in that vm_state; 409 otherwise. An
accepted request's cast, delivered to the worker, must run and leave the server at rest.
Any drift between the table, the API, the worker and the drivers' preconditions fails here.
"""

from __future__ import annotations

import functools

import pytest

from fabric.compute import states
from fabric.compute.faults import latest_fault
from fabric.exception import GuestStateInvalid
from fabric.virt.driver import PowerState
from fabric.virt.fake import FakeDriver
from tests.unit.compute.conftest import HOST, add_instance
from tests.unit.virt.conftest import libvirt_settings, make_spec, node_uri

#: Deleted servers are not found (404) rather than in conflict: every other vm_state is walked.
WALKED_VM_STATES = tuple(v for v in states.VM_STATES if v != states.DELETED)
WALKED_TASK_STATES = (None, *states.TASK_STATES)
#: Power states a test can put a guest in on every driver (libvirt's test driver cannot crash one).
_REACHABLE = (PowerState.RUNNING, PowerState.PAUSED, PowerState.SUSPENDED, PowerState.SHUTDOWN)
#: The power states of a guest whose server rests in each vm_state (the inverse of
#: VM_STATE_FOR_POWER). A server in error may have a guest in any state: the table offers
#: stop and hard reboot as ways out of error for a guest left running or shut off.
GUEST_POWER: dict[str, tuple[PowerState, ...]] = {
    vm_state: tuple(p for p in _REACHABLE if states.VM_STATE_FOR_POWER[p] == vm_state)
    for vm_state in set(states.VM_STATE_FOR_POWER.values())
} | {states.ERROR: (PowerState.RUNNING, PowerState.SHUTDOWN), states.BUILDING: (PowerState.RUNNING,),
     # VERIFY_RESIZE: the moved guest, started or not as the server was before the move.
     states.RESIZED: (PowerState.RUNNING, PowerState.SHUTDOWN)}


def _put_in(driver, uuid: str, power: PowerState) -> None:
    """A new guest ``uuid`` on ``driver``, brought into ``power``."""
    driver.spawn(make_spec(uuid=uuid))
    {PowerState.RUNNING: lambda u: None, PowerState.PAUSED: driver.pause, PowerState.SUSPENDED: driver.suspend,
     PowerState.SHUTDOWN: driver.power_off}[power](uuid)
    assert driver.get_info(uuid).power_state is power


def _driver_kwargs(action: states.Action) -> dict:
    kwargs = dict(action.rpc_kwargs)
    if action.driver_method in ("reboot", "power_off"):
        kwargs["timeout"] = 0  # no ACPI wait: the test driver's guests have no OS to answer it
    return kwargs


def _accepts(driver, action: states.Action, power: PowerState) -> bool:
    """Whether ``driver`` runs ``action`` on a guest in ``power`` (False: GuestStateInvalid)."""
    uuid = make_spec().uuid
    _put_in(driver, uuid, power)
    try:
        getattr(driver, action.driver_method)(uuid, **_driver_kwargs(action))
        return True
    except GuestStateInvalid:
        return False
    finally:
        driver.destroy(uuid)


@pytest.fixture(scope="module")
def drivers_accept(tmp_path_factory):
    """(action name, power state) -> whether every driver accepts it."""
    from fabric.virt.libvirt.driver import LibvirtDriver

    tmp_path = tmp_path_factory.mktemp("libvirt")
    libvirt = LibvirtDriver(libvirt_settings(tmp_path, node_uri(tmp_path)))
    fake = FakeDriver(vcpus=8, memory_mb=8192, disk_gb=100, hostname="virt-test")
    for driver in (libvirt, fake):
        driver.init_host("virt-test")
    try:
        return {(name, power): all(_accepts(d, action, power) for d in (fake, libvirt))
                for name, action in states.ACTIONS.items() for power in _REACHABLE}
    finally:
        for driver in (libvirt, fake):
            driver.cleanup_host()


def _run_on_worker(manager, ctx, action: states.Action, instance_id: str, **kwargs) -> bool:
    """Deliver ``action``'s cast to the worker; whether it ran the driver and the server is at rest
    without a fault (the driver accepted)."""
    calls = manager.driver.calls[action.driver_method]
    getattr(manager, action.rpc_method)(ctx, instance_id, **kwargs)
    ran = manager.driver.calls[action.driver_method] > calls
    row = states.get_instance(manager.db, instance_id)
    if ran:
        assert row["task_state"] is None, f"{action.name} left {instance_id} in task {row['task_state']}"
    return ran and latest_fault(manager.db, instance_id) is None


def test_the_api_offers_exactly_what_the_worker_runs_and_every_driver_accepts(api, make_manager, ctx,
                                                                            drivers_accept):
    manager = make_manager(db=api.db)
    admin = {"X-Auth-Token": api.admin.token}
    walked, drift = 0, []

    def new_server(vm_state, task_state, power) -> str:
        instance_id = add_instance(api.db, vm_state=vm_state, task_state=task_state)
        _put_in(manager.driver, instance_id, power)
        return instance_id

    for name, action in states.ACTIONS.items():
        api_action = name.split(":")[0]
        body = {api_action: {"type": name.split(":")[1]} if ":" in name else None}
        for vm_state in WALKED_VM_STATES:
            powers = GUEST_POWER[vm_state]
            drivers_ok = all(drivers_accept[(name, p)] for p in powers)
            for task_state in WALKED_TASK_STATES:
                walked += 1
                worker_ok = all(_run_on_worker(manager, ctx, action, new_server(vm_state, task_state, p),
                                               **action.rpc_kwargs) for p in powers)
                if task_state == action.task:
                    # The worker runs a cast that finds the server in the action's own task: that is
                    # the API's hand-over (or its redelivery), so it must; a new request for the same
                    # action while one is in flight is refused by the API.
                    worker_ok = False
                expected = 202 if worker_ok and drivers_ok else 409
                server = new_server(vm_state, task_state, powers[0])
                casts = len(api.recorder.named("instance_action"))
                status = api.app.post_json(f"/compute/v2.1/servers/{server}/action", body, headers=admin,
                                           expect_errors=True).status_int
                where = f"{name} from ({vm_state}, {task_state}): API {status}, worker " \
                        f"{'runs' if worker_ok else 'refuses'}, drivers {'accept' if drivers_ok else 'refuse'}"
                if status != expected:
                    drift.append(where)
                    continue
                sent = api.recorder.named("instance_action")[casts:]
                if status == 409:
                    assert sent == [], where
                    row = states.get_instance(api.db, server)
                    assert (row["vm_state"], row["task_state"]) == (vm_state, task_state), where
                    continue
                # The cast the API sent, delivered: the worker runs it from the task the API set.
                [cast] = sent
                assert (cast["host"], cast["action"], cast["instance_id"]) == (HOST, action.rpc_method, server)
                assert states.get_instance(api.db, server)["task_state"] == action.task, where
                kwargs = {k: v for k, v in cast.items() if k not in ("host", "action", "instance_id", "request_id")}
                assert _run_on_worker(manager, ctx, action, server, **kwargs), where
    assert walked == len(states.ACTIONS) * len(WALKED_VM_STATES) * len(WALKED_TASK_STATES)
    assert drift == [], "the API and the worker or drivers disagree:\n" + "\n".join(drift)


@functools.cache
def _offered_from(vm_state: str) -> set[str]:
    return {name for name, action in states.ACTIONS.items() if vm_state in action.vm_states}


def test_every_resting_state_but_building_has_a_way_on():
    # A server must never rest where no action applies (only delete would remain).
    for vm_state in (states.ACTIVE, states.STOPPED, states.PAUSED, states.SUSPENDED, states.ERROR):
        assert _offered_from(vm_state), vm_state
    assert _offered_from(states.BUILDING) == set()
    # Every transient task is some action's, and the API's task names are the worker's.
    assert {a.task for a in states.ACTIONS.values()} <= set(states.TASK_STATES)
