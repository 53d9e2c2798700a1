"""The scheduler's choice of a resize's or cold migration's destination: filters, the source
left out (unless allowed), a requested host, idempotence, and the claim on the destination."""

from __future__ import annotations

import pytest

from fabric import exception
from fabric.compute import migrations, states
from fabric.config import Settings
from fabric.context import RequestContext
from fabric.scheduler.manager import SchedulerManager
from tests.fixtures import scheduler as build

CTX = RequestContext.admin()
BIG = {"id": None, "vcpus": 2, "memory_mb": 2048, "disk_gb": 2}


def _move(db, host: str, requested_host: str | None = None) -> str:
    """A server placed on ``host`` and a migration of it to BIG, as the API records one."""
    [iid] = build.add_instances(db, 1, memory_mb=1024)
    states.compare_and_swap(db, iid, {}, host=host, vm_state=states.ACTIVE, task_state=states.RESIZE_PREP)
    with db.begin() as session:
        return migrations.create(session, states.get_instance(db, iid), migrations.RESIZE, BIG, requested_host)


def _manager(db, **scheduler) -> SchedulerManager:
    return SchedulerManager(Settings().replace(scheduler={"host_refresh_interval": 0.0, **scheduler}),
                            host="sched1", db=db, compute=object())


def test_the_destination_is_another_host_claimed_once(sqlite_db):
    hosts = build.add_hosts(sqlite_db, 2, memory_mb=4096)
    move = _move(sqlite_db, hosts[0])
    manager = _manager(sqlite_db)
    assert manager.claim_move_destination(CTX, move) == hosts[1]
    assert manager.claim_move_destination(CTX, move) == hosts[1]  # a repeated call claims nothing more
    assert build.nodes(sqlite_db)[hosts[1]].memory_mb_used == 2048
    assert migrations.get(sqlite_db, move)["status"] == migrations.MIGRATING


def test_one_host_needs_allow_resize_to_same_host(sqlite_db):
    [only] = build.add_hosts(sqlite_db, 1, memory_mb=4096)
    with pytest.raises(exception.NoValidHost):
        _manager(sqlite_db).claim_move_destination(CTX, _move(sqlite_db, only))
    move = _move(sqlite_db, only)
    assert _manager(sqlite_db, allow_resize_to_same_host=True).claim_move_destination(CTX, move) == only


def test_a_requested_host_is_the_only_one_tried(sqlite_db):
    hosts = build.add_hosts(sqlite_db, 3, memory_mb=4096)
    build.add_hosts(sqlite_db, 1, prefix="small", memory_mb=1024)
    move = _move(sqlite_db, hosts[0], requested_host=hosts[2])
    assert _manager(sqlite_db).claim_move_destination(CTX, move) == hosts[2]
    with pytest.raises(exception.NoValidHost, match="requested host small0000"):
        _manager(sqlite_db).claim_move_destination(CTX, _move(sqlite_db, hosts[0], requested_host="small0000"))
