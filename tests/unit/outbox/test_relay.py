"""The outbox relay on memory:// and SQLite: rows go only after the confirm, a dead
writer's rows are sent by the next start of its kind (or swept after its lease), and
casts for one instance arrive in the order they were staged."""

from __future__ import annotations

import types

import eventlet
import pytest
import sqlalchemy as sa
from eventlet.event import Event

from fabric import rpc
from fabric.api.clients import rpc_clients
from fabric.context import RequestContext
from fabric.db.models import OutboxCast
from fabric.exception import MessagingError, Unroutable
from fabric.rpc import outbox
from fabric.rpc.outbox import Outbox
from tests.fixtures.rpc import serving, wait_for


class ComputeHost:
    """What a compute worker on h1 receives, in arrival order."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str]] = []

    def stop_instance(self, ctx, instance_id):
        self.received.append(("stop_instance", instance_id))

    def start_instance(self, ctx, instance_id):
        self.received.append(("start_instance", instance_id))

    def reboot_instance(self, ctx, instance_id, hard=False):
        self.received.append(("reboot_instance", instance_id))

    def terminate_instance(self, ctx, instance_id):
        self.received.append(("terminate_instance", instance_id))


class GatedCompute:
    """The API's real compute client, held at a gate before each cast; ``fail`` answers
    instead with the error a cast gets when the broker does not confirm it in time."""

    def __init__(self, real) -> None:
        self.real = real
        self.gate = Event()
        self.gate.send(None)
        self.waiting = 0
        self.fail: set[str] = set()

    def instance_action(self, ctx, **kwargs):
        self.waiting += 1
        self.gate.wait()
        self.waiting -= 1
        if kwargs["instance_id"] in self.fail:
            self.fail.discard(kwargs["instance_id"])
            raise MessagingError(reason="no confirm from the broker within 5s")
        return self.real.instance_action(ctx, **kwargs)


@pytest.fixture
def host(transport):
    compute = ComputeHost()
    with serving(transport, compute, host="h1", topic="compute"):
        yield compute


@pytest.fixture
def senders(transport):
    clients = rpc_clients(transport, call_timeout=5)
    return types.SimpleNamespace(compute=GatedCompute(clients.compute))


def rows(db) -> list[tuple[str, str]]:
    with db.begin() as session:
        return [(row.key, row.payload["kwargs"]["action"])
                for row in session.scalars(sa.select(OutboxCast).order_by(OutboxCast.id))]


def stage(db, box: Outbox, *actions: tuple[str, str]) -> list[outbox.StagedCast]:
    """Commit one outbox row per (action, instance), as a state change would."""
    ctx = RequestContext(user_id="u", project_id="p")
    with db.begin() as session:
        return [box.stage(session, "api.instance_action", ctx, host="h1", action=action, instance_id=instance_id)
                for action, instance_id in actions]


def test_a_row_is_deleted_only_after_the_broker_confirmed_its_cast(sqlite_db, transport, host, senders):
    box = Outbox(sqlite_db, "api", senders, sweep_interval=0.05)
    staged = stage(sqlite_db, box, ("stop_instance", "i-1"))
    senders.compute.gate = Event()  # the publish has not come back from the broker yet
    sending = eventlet.spawn(box.send, *staged)
    wait_for(lambda: senders.compute.waiting == 1, what="the relay publishing")
    eventlet.sleep(0.05)
    assert rows(sqlite_db) == [("i-1", "stop_instance")] and host.received == []
    senders.compute.gate.send(None)
    sending.wait()
    wait_for(lambda: rows(sqlite_db) == [], what="the confirmed row deleted")
    wait_for(lambda: host.received == [("stop_instance", "i-1")], what="the cast handled")
    assert box.sent == 1


def test_an_unconfirmed_cast_keeps_its_row_and_is_sent_again(sqlite_db, transport, host, senders):
    box = Outbox(sqlite_db, "api", senders, sweep_interval=0.05)
    senders.compute.fail = {"i-1"}
    box.send(*stage(sqlite_db, box, ("stop_instance", "i-1")))  # no error: the relay keeps it
    assert rows(sqlite_db) == [("i-1", "stop_instance")] and host.received == []
    box.start()
    try:
        wait_for(lambda: rows(sqlite_db) == [], what="the retried row deleted")
        assert host.received == [("stop_instance", "i-1")]
    finally:
        box.stop()


def test_the_next_start_of_the_same_kind_sends_what_a_killed_writer_committed(sqlite_db, transport, host,
                                                                              senders):
    killed = Outbox(sqlite_db, "api", senders)
    # Committed, and the process died before it published (or before the broker confirmed).
    stage(sqlite_db, killed, ("stop_instance", "i-1"), ("reboot_instance", "i-2"))
    other_kind = Outbox(sqlite_db, "scheduler", types.SimpleNamespace())
    other_kind.start()
    other_kind.stop()
    assert len(rows(sqlite_db)) == 2 and other_kind.taken_over == 0
    successor = Outbox(sqlite_db, "api", senders)
    successor.start()
    try:
        wait_for(lambda: rows(sqlite_db) == [], what="the dead writer's rows sent and deleted")
        assert sorted(host.received) == [("reboot_instance", "i-2"), ("stop_instance", "i-1")]
        assert successor.taken_over == 2
    finally:
        successor.stop()


def test_a_running_relay_sweeps_rows_whose_writers_lease_ran_out(sqlite_db, transport, host, senders):
    running = Outbox(sqlite_db, "api", senders, sweep_interval=0.05)
    running.start()
    try:
        gone = Outbox(sqlite_db, "api", senders, lease=0.3)
        stage(sqlite_db, gone, ("stop_instance", "i-1"))
        eventlet.sleep(0.15)
        assert rows(sqlite_db) == [("i-1", "stop_instance")], "taken while its writer's lease held"
        wait_for(lambda: rows(sqlite_db) == [], what="the row swept after the lease")
        assert host.received == [("stop_instance", "i-1")] and running.taken_over == 1
    finally:
        running.stop()


def test_casts_for_one_instance_keep_their_order_when_the_first_must_wait(sqlite_db, transport, host, senders):
    box = Outbox(sqlite_db, "api", senders, sweep_interval=0.05)
    senders.compute.fail = {"i-1"}
    first = stage(sqlite_db, box, ("stop_instance", "i-1"))
    box.send(*first)  # not confirmed: i-1 waits for the relay
    box.send(*stage(sqlite_db, box, ("start_instance", "i-1"), ("stop_instance", "i-2")))
    # The other instance is not held up; the later cast for i-1 is not sent before the first.
    wait_for(lambda: host.received == [("stop_instance", "i-2")], what="i-2's cast")
    eventlet.sleep(0.05)
    assert host.received == [("stop_instance", "i-2")]
    box.start()
    try:
        wait_for(lambda: rows(sqlite_db) == [], what="every row confirmed")
        assert [r for r in host.received if r[1] == "i-1"] == [("stop_instance", "i-1"), ("start_instance", "i-1")]
    finally:
        box.stop()


def test_an_unroutable_cast_is_raised_to_its_writer_and_its_row_dropped(sqlite_db, transport, senders):
    box = Outbox(sqlite_db, "api", senders)
    staged = stage(sqlite_db, box, ("stop_instance", "i-1"))  # no compute worker serves h1
    with pytest.raises(Unroutable):
        box.send(*staged)
    wait_for(lambda: rows(sqlite_db) == [], what="the unroutable row dropped")


def test_only_listed_casts_of_the_outboxs_kind_can_be_staged(sqlite_db, senders):
    box = Outbox(sqlite_db, "api", senders)
    ctx = RequestContext()
    with sqlite_db.begin() as session:
        with pytest.raises(ValueError, match="scheduler.build"):
            box.stage(session, "scheduler.build", ctx, host="h1", instance_id="i-1")
        with pytest.raises(ValueError, match="api.schedule"):
            box.stage(session, "compute.anything", ctx, instance_id="i-1")
    with pytest.raises(ValueError, match="outbox kind"):
        Outbox(sqlite_db, "network", senders)


def test_a_cast_inside_confirmed_waits_for_the_brokers_verdict(transport, host):
    client = rpc.RPCClient(transport, rpc.Target(topic="compute", server="h1"))
    client.cast(RequestContext(), "stop_instance", instance_id="i-1")  # the route is now known routable
    transport.broker.delete_queue("compute.h1")
    client.cast(RequestContext(), "stop_instance", instance_id="i-2")  # pipelined: returned later, not raised
    with pytest.raises(Unroutable), rpc.confirmed(1.0):
        client.cast(RequestContext(), "stop_instance", instance_id="i-3")


def test_casts_staged_together_take_one_insert_and_keep_their_order(db):
    box = Outbox(db, "api", types.SimpleNamespace())
    ctx = RequestContext(user_id="u", project_id="p")
    actions = [("stop_instance", "i-1"), ("start_instance", "i-2"), ("reboot_instance", "i-1")]
    inserts: list[str] = []

    def count(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("INSERT"):
            inserts.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", count)
    try:
        with db.begin() as session:
            staged = box.stage_many(session, [("api.instance_action", ctx, {"host": "h1", "action": action,
                                                                             "instance_id": instance})
                                              for action, instance in actions])
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", count)
    # One round trip on PostgreSQL; SQLAlchemy writes SQLite's rows one by one (in process: no round trip).
    assert len(inserts) == 1 if db.backend == "postgresql" else 1 <= len(inserts) <= len(actions)
    # Each staged cast names its own row, and ids follow the order given (the send order per key).
    assert [(entry.key, entry.payload["kwargs"]["action"]) for entry in staged] == [(i, a) for a, i in actions]
    assert [entry.id for entry in staged] == sorted(entry.id for entry in staged)
    with db.begin() as session:
        written = {row.id: (row.key, row.payload["kwargs"]["action"], row.writer)
                   for row in session.scalars(sa.select(OutboxCast))}
    assert [written[entry.id] for entry in staged] == [(i, a, box.writer) for a, i in actions]


def test_a_batch_with_one_cast_not_of_the_outbox_writes_nothing(sqlite_db):
    box = Outbox(sqlite_db, "api", types.SimpleNamespace())
    ctx = RequestContext()
    with sqlite_db.begin() as session, pytest.raises(ValueError, match="scheduler.build"):
        box.stage_many(session, [("api.instance_action", ctx, {"host": "h1", "action": "stop_instance",
                                                               "instance_id": "i-1"}),
                                 ("scheduler.build", ctx, {"host": "h1", "instance_id": "i-2"})])
    assert rows(sqlite_db) == []


def test_casts_taken_back_in_their_transaction_leave_only_the_others(db):
    box = Outbox(db, "api", types.SimpleNamespace())
    ctx = RequestContext()
    with db.begin() as session:
        staged = box.stage_many(session, [("api.instance_action", ctx, {"host": "h1", "action": "stop_instance",
                                                                         "instance_id": f"i-{n}"}) for n in range(3)])
        box.unstage(session, [staged[0], staged[2]])
        box.unstage(session, [])  # nothing to take back: no statement
    with db.begin() as session:
        kept = [row.id for row in session.scalars(sa.select(OutboxCast))]
    assert kept == [staged[1].id]
