"""The worker-side cast sites: the scheduler's build cast is committed with its claim, and a
compute host's reschedule goes through its outbox (memory:// and SQLite)."""

from __future__ import annotations

import sqlalchemy as sa

from fabric.compute.collaborators import SchedulerRescheduler
from fabric.config import Settings
from fabric.context import RequestContext
from fabric.db.models import OutboxCast
from fabric.exception import MessagingError
from fabric.rpc import outbox
from fabric.scheduler.manager import SchedulerManager
from tests.fixtures import scheduler as build
from tests.fixtures.rpc import serving, wait_for

CTX = RequestContext.admin()


class SlowBroker:
    """A compute client whose casts are not confirmed in time until ``confirming``."""

    def __init__(self) -> None:
        self.confirming = False
        self.builds: list[tuple[str, str]] = []

    def build_instance(self, ctx, host, instance_id):
        if not self.confirming:
            raise MessagingError(reason="no confirm from the broker within 5s")
        self.builds.append((host, instance_id))


def test_the_build_cast_is_committed_with_the_claim_and_sent_once_confirmed(sqlite_db):
    build.add_hosts(sqlite_db, 1, memory_mb=4096)
    [iid] = build.add_instances(sqlite_db, 1, memory_mb=1024)
    compute = SlowBroker()
    manager = SchedulerManager(Settings().replace(scheduler={"host_refresh_interval": 0.0}), host="sched1",
                               db=sqlite_db, compute=compute)
    manager.schedule_and_build(CTX, instance_id=iid)  # the handler returns: its message is acked
    host = build.instances(sqlite_db)[iid].host
    [row] = outbox.pending(sqlite_db)
    assert host is not None and (row["cast"], row["key"]) == ("scheduler.build", iid)
    assert row["payload"]["kwargs"] == {"host": host, "instance_id": iid}
    # The scheduler dies; the next one to start sends the build.
    successor = SchedulerManager(Settings().replace(scheduler={"host_refresh_interval": 0.0}), host="sched2",
                                 db=sqlite_db, compute=compute)
    compute.confirming = True
    successor.outbox.start()
    try:
        wait_for(lambda: outbox.pending(sqlite_db) == [], what="the build cast sent and its row deleted")
    finally:
        successor.outbox.stop()
    assert compute.builds == [(host, iid)]


def test_a_lost_claim_writes_no_build_cast(sqlite_db):
    build.add_hosts(sqlite_db, 1, memory_mb=512)
    [iid] = build.add_instances(sqlite_db, 1, memory_mb=1024)  # fits nowhere: no claim
    manager = SchedulerManager(Settings().replace(scheduler={"host_refresh_interval": 0.0}), host="sched1",
                               db=sqlite_db, compute=SlowBroker())
    manager.schedule_and_build(CTX, instance_id=iid)
    assert build.instances(sqlite_db)[iid].vm_state == "error"
    with sqlite_db.begin() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(OutboxCast)) == 0


class Scheduler:
    def __init__(self) -> None:
        self.requests: list[dict] = []

    def schedule_and_build(self, ctx, instance_id, failed_host=None, reason=None):
        self.requests.append({"instance_id": instance_id, "failed_host": failed_host, "reason": reason})


def test_a_reschedule_goes_through_the_compute_hosts_outbox(sqlite_db, transport):
    """Staged in the caller's transaction (the compute's swap back to scheduling), sent after."""
    scheduler = Scheduler()
    rescheduler = SchedulerRescheduler(transport, sqlite_db, host="h1")
    with serving(transport, scheduler, host="sched1", topic="scheduler"):
        with sqlite_db.begin() as session:
            staged = rescheduler.stage(session, CTX, "i-1", "h1", "spawn failed")
        rescheduler.send(staged)
        wait_for(lambda: scheduler.requests, what="the reschedule delivered")
        wait_for(lambda: outbox.pending(sqlite_db) == [], what="its row deleted")
    assert scheduler.requests == [{"instance_id": "i-1", "failed_host": "h1", "reason": "spawn failed"}]
    assert rescheduler.outbox.kind == "compute" and rescheduler.outbox.sent == 1
