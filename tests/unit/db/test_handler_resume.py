"""A handler that fails because the database is unreachable is run again once it answers
(fabric.rpc.server with fabric.db.retry), on memory:// (the same code as on RabbitMQ)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from fabric import rpc
from fabric.context import RequestContext
from fabric.exception import DatabaseUnavailable
from tests.fixtures.rpc import serving, wait_for
from tests.unit.db.test_retry import refused


class Worker:
    """An endpoint whose handlers need a database that is down while ``down`` is set."""

    def __init__(self) -> None:
        self.down = True
        self.failures = 0
        self.done: list[str] = []

    def _database(self) -> None:
        if self.down:
            self.failures += 1
            raise refused()

    def build(self, ctx, token: str) -> None:
        self._database()
        self.done.append(token)

    def lookup(self, ctx, token: str) -> str:
        self._database()
        return token.upper()

    def broken(self, ctx) -> None:
        self.failures += 1
        raise sa.exc.DBAPIError.instance("SELECT", {}, ValueError("not a connection error"), Exception)


@pytest.fixture
def ctx():
    return RequestContext(user_id="alice", project_id="p1", roles=("member",))


def test_a_cast_waits_out_the_outage_and_runs_once_without_being_dead_lettered(transport, ctx):
    worker = Worker()
    with serving(transport, worker):
        rpc.RPCClient(transport, rpc.Target("widgets")).cast(ctx, "build", token="t-1")
        # More failures than rpc.max_deliveries (3 here): an outage is not the message's fault.
        wait_for(lambda: worker.failures >= 5, what="five failed runs")
        assert worker.done == [] and transport.queue_depth("widgets.dead") == 0
        worker.down = False
        wait_for(lambda: worker.done, timeout=5, what="the run after the database came back")
        assert worker.done == ["t-1"]
    assert transport.queue_depth("widgets") == 0 and transport.queue_depth("widgets.dead") == 0


def test_other_database_errors_still_count_towards_dead_lettering(transport, ctx):
    worker = Worker()
    with serving(transport, worker):
        rpc.RPCClient(transport, rpc.Target("widgets")).cast(ctx, "broken")
        wait_for(lambda: transport.queue_depth("widgets.dead") == 1, what="the dead letter")
    assert worker.failures == 3


def test_a_call_waits_out_a_short_outage_and_gives_up_at_its_deadline(transport, ctx):
    worker = Worker()
    client = rpc.RPCClient(transport, rpc.Target("widgets"))
    with serving(transport, worker):
        with pytest.raises(DatabaseUnavailable) as err:
            client.prepare(timeout=0.5).call(ctx, "lookup", token="a")
        assert "127.0.0.1" in err.value.message and worker.failures >= 3
        worker.failures = 0
        deferred = client.prepare(timeout=5).call_async(ctx, "lookup", token="b")
        wait_for(lambda: worker.failures >= 2, what="two failed runs")
        worker.down = False
        assert deferred.wait() == "B"


def test_a_stopping_worker_leaves_the_waiting_message_to_the_next(transport, ctx):
    worker = Worker()
    first = rpc.RPCServer(transport, topic="widgets", host="h1", endpoint=worker)
    first.start()
    rpc.RPCClient(transport, rpc.Target("widgets")).cast(ctx, "build", token="t-2")
    wait_for(lambda: worker.failures >= 4, what="more failed runs than rpc.max_deliveries")
    first.stop()
    assert first.wait(1.0) is True  # the waiting handler gave up at once
    assert transport.queue_depth("widgets") == 1 and transport.queue_depth("widgets.dead") == 0
    after = Worker()
    after.down = False
    with serving(transport, after, host="h2"):
        wait_for(lambda: after.done, what="the redelivery")
    assert after.done == ["t-2"] and worker.done == []
