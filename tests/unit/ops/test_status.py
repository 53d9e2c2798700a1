"""fabric.status: what needs a person and what does not, on a database the test shapes.

(tests/functional/ops drives ``fabric-manage status`` against running workers.)
"""

from __future__ import annotations

import datetime

import sqlalchemy as sa

from fabric import config, servicegroup, status
from fabric.db import migration
from fabric.db.models import ComputeNode, Service
from fabric.db.types import utcnow
from fabric.rpc import queues
from tests.fixtures.instances import add_instance

SETTINGS = config.Settings().replace(rpc={"transport_url": "amqp://guest:guest@127.0.0.1:5672/cloud"},
                                     service={"service_down_time": 60})


class FakeCtl(queues.Rabbitmqctl):
    """rabbitmqctl answering with the rows it was given (``list_queues`` only)."""

    def __init__(self, rows: list[dict]) -> None:
        super().__init__()
        self.rows = rows

    def run(self, *command: str) -> list[dict]:
        assert command[:3] == ("list_queues", "-p", "cloud"), command
        return self.rows


def _queue(name: str, ready: int = 0, consumers: int = 1, messages: int | None = None) -> dict:
    return {"name": name, "messages": ready if messages is None else messages, "messages_ready": ready,
            "messages_unacknowledged": 0, "consumers": consumers}


def _healthy_cloud(db) -> None:
    for host, binary in (("ctl", "fabric-api"), ("h1", "fabric-compute")):
        servicegroup.register(db, host=host, binary=binary, topic=binary.split("-")[1], version="1")
    with db.begin() as session:
        session.add(ComputeNode(host="h1", vcpus=4, memory_mb=4096, disk_gb=40, vcpus_used=1, memory_mb_used=512,
                                disk_gb_used=1, running_vms=1))
    add_instance(db, host="h1", vm_state="active", task_state=None)


def _gather(db, rows=(), **kwargs) -> status.Status:
    return status.gather(SETTINGS, db, ctl=FakeCtl(list(rows) or [_queue("scheduler")]), **kwargs)


def _problems(report: status.Status) -> list[str]:
    # The schema revision is checked by its own test: the fixture's tables carry no stamp.
    return [p for p in report.problems if "schema" not in p]


def test_a_healthy_cloud_needs_nobody(sqlite_db):
    _healthy_cloud(sqlite_db)
    report = _gather(sqlite_db)
    assert _problems(report) == []
    capacity = next(s for s in report.sections if s.title.startswith("Hosts"))
    assert capacity.rows == [("h1", "nova", "1/4 (25%)", "512/4096 (12%)", "1/40 (2%)", 1)]


def test_a_down_worker_is_a_problem_a_disabled_one_is_not(sqlite_db):
    _healthy_cloud(sqlite_db)
    servicegroup.register(sqlite_db, host="h2", binary="fabric-compute", topic="compute", version="1")
    servicegroup.set_disabled(sqlite_db, "h2", "fabric-compute", True, reason="maintenance")
    assert _problems(_gather(sqlite_db)) == []
    # Two minutes without a heartbeat, against a down time of one.
    with sqlite_db.begin() as session:
        session.execute(sa.update(Service).values(last_heartbeat=utcnow() - datetime.timedelta(minutes=2)))
    problems = _problems(_gather(sqlite_db))
    assert [p.split(" (")[0] for p in problems] == ["fabric-api on ctl is down", "fabric-compute on h1 is down"]
    assert "disabled (maintenance)" in str(_gather(sqlite_db).sections[0].rows)


def test_dead_letters_and_an_unconsumed_backlog_are_problems(sqlite_db):
    _healthy_cloud(sqlite_db)
    rows = [_queue("scheduler"), _queue("scheduler.dead", messages=3, consumers=0),
            _queue("compute.h9", ready=5, consumers=0), _queue("network", ready=2, consumers=1)]
    problems = _problems(_gather(sqlite_db, rows))
    assert sorted(problems) == ["queue compute.h9 holds 5 message(s) and no worker consumes it",
                                "queue scheduler has 3 dead letter(s) (fabric-manage queues requeue-dead scheduler)"]


def test_a_task_older_than_the_limit_is_stuck_errors_are_shown_not_problems(sqlite_db):
    _healthy_cloud(sqlite_db)
    old = utcnow() - datetime.timedelta(minutes=10)
    stuck = add_instance(sqlite_db, host="h1", vm_state="building", task_state="spawning", task_started_at=old)
    fresh = add_instance(sqlite_db, host="h1", vm_state="building", task_state="spawning", task_started_at=utcnow())
    failed = add_instance(sqlite_db, host="h1", vm_state="error", task_state=None, updated_at=utcnow())
    add_instance(sqlite_db, host="h1", vm_state="error", task_state=None, updated_at=old - datetime.timedelta(hours=1))
    report = _gather(sqlite_db, stuck_after=300)
    assert [p for p in _problems(report) if "stuck" in p] == [
        f"server {stuck} is stuck in task spawning since {old.isoformat(sep=' ', timespec='seconds')} on h1"]
    listed = {row[0] for row in next(s for s in report.sections if s.title.startswith("Servers")).rows}
    assert listed == {stuck, failed} and fresh not in listed


def test_a_schema_behind_the_code_is_a_problem(sqlite_db):
    report = _gather(sqlite_db)
    assert any(p.startswith("the database schema is at") and migration.pending(sqlite_db)[-1] in p for p in report.problems)


def test_a_broker_that_cannot_be_asked_is_a_problem(sqlite_db):
    _healthy_cloud(sqlite_db)
    report = status.gather(SETTINGS, sqlite_db, ctl=queues.Rabbitmqctl(program="/nonexistent/rabbitmqctl"))
    assert any(p.startswith("could not list the broker's queues") for p in report.problems)


def test_fanout_messages_a_worker_dropped_are_a_problem_until_it_restarts(sqlite_db):
    _healthy_cloud(sqlite_db)
    last = datetime.datetime(2026, 12, 7, 8, 3, 11, 250000)
    servicegroup.heartbeat(sqlite_db, host="h1", binary="fabric-compute", topic="compute",
                           fanout_drops={"stale": 3, "forged": 1}, fanout_dropped_at=last)
    report = _gather(sqlite_db)
    assert _problems(report) == [
        "fabric-compute on h1 (topic compute) dropped 4 fanout message(s) since it started (forged 1, stale 3), "
        "the last at 2026-12-07 08:03:11 UTC: a fanout queue has no dead-letter queue, its log says why; "
        "stale: compare its clock with its senders'"]
    services = {row[:2]: row for row in report.sections[0].rows}
    assert report.sections[0].headers[-1] == "Dropped fanouts"
    assert services[("h1", "fabric-compute")][-1] == "forged 1, stale 3"
    assert services[("ctl", "fabric-api")][-1] is None
    # Disabled, it still lost them; a restarted worker (it registers afresh) has dropped none.
    servicegroup.set_disabled(sqlite_db, "h1", "fabric-compute", True, reason="maintenance")
    assert [p.split(" (")[0] for p in _problems(_gather(sqlite_db))] == ["fabric-compute on h1"]
    servicegroup.register(sqlite_db, host="h1", binary="fabric-compute", topic="compute", version="1")
    assert _problems(_gather(sqlite_db)) == []


def test_fanout_messages_a_process_refused_for_all_its_hosts_say_so(sqlite_db):
    """A fake-hosts process reports what its fanout server refused once, on one host's row,
    under marked codes (fabric.sim.fanout.HostFanout.drops_for): the line says those were lost
    to every host of that process; the host's own drops, and a real worker's, say no such thing."""
    _healthy_cloud(sqlite_db)
    last = datetime.datetime(2026, 12, 7, 8, 3, 11)
    servicegroup.heartbeat(sqlite_db, host="p-1", binary="fabric-network", topic="network",
                           fanout_drops={servicegroup.process_wide("unsigned"): 3, servicegroup.process_wide("stale"): 2,
                                         "invalid": 1}, fanout_dropped_at=last)
    servicegroup.heartbeat(sqlite_db, host="p-2", binary="fabric-network", topic="network",
                           fanout_drops={"invalid": 1}, fanout_dropped_at=last)
    report = _gather(sqlite_db)
    assert _problems(report) == [
        "fabric-network on p-1 (topic network) dropped 6 fanout message(s) since it started "
        "(invalid 1; for every host of its process: stale 2, unsigned 3), the last at 2026-12-07 08:03:11 UTC: "
        "a fanout queue has no dead-letter queue, its log says why; stale: compare its clock with its senders'",
        "fabric-network on p-2 (topic network) dropped 1 fanout message(s) since it started (invalid 1), "
        "the last at 2026-12-07 08:03:11 UTC: a fanout queue has no dead-letter queue, its log says why"]
    services = {row[:2]: row[-1] for row in report.sections[0].rows}
    assert services[("p-1", "fabric-network")] == "invalid 1; for every host of its process: stale 2, unsigned 3"
    assert services[("p-2", "fabric-network")] == "invalid 1"
    # Process-wide alone (what a reporter with no drops of its own shows).
    servicegroup.heartbeat(sqlite_db, host="p-1", binary="fabric-network", topic="network",
                           fanout_drops={servicegroup.process_wide("unsigned"): 3}, fanout_dropped_at=last)
    assert [p for p in _problems(_gather(sqlite_db)) if "p-1" in p] == [
        "fabric-network on p-1 (topic network) dropped 3 fanout message(s) since it started "
        "(for every host of its process: unsigned 3), the last at 2026-12-07 08:03:11 UTC: "
        "a fanout queue has no dead-letter queue, its log says why"]
