"""The Service on memory://: registry, heartbeats, down detection, periodic tasks, describe."""

from __future__ import annotations

import secrets
import time

import pytest
import sqlalchemy as sa

import fabric
from fabric import config, rpc, servicegroup
from fabric.cmd import workers
from fabric.context import RequestContext
from fabric.db.types import utcnow
from fabric.manager import Manager
from fabric.periodic import periodic_task
from fabric.rpc import envelope, signing
from fabric.service import Service
from tests.fixtures.processes import wait_until


class EchoManager(Manager):
    topic = "echo"

    def __init__(self, settings):
        super().__init__(settings, host="h1")
        self.sweeps = 0
        self.sweep_failures = 0

    def capabilities(self):
        return {"echo": True, "max_words": 3}

    def echo(self, ctx, words):
        return words

    @periodic_task(spacing=0.02)
    def sweep(self, ctx):
        self.sweeps += 1
        if self.sweeps % 2:
            self.sweep_failures += 1
            raise RuntimeError("sweep failed on purpose")


@pytest.fixture
def settings():
    return config.Settings().replace(
        rpc={"transport_url": f"memory://service-{secrets.token_hex(4)}", "call_timeout": 5},
        service={"report_interval": 0.05, "service_down_time": 0.5, "graceful_shutdown_timeout": 5},
        default={"host": "h1"},
    )


@pytest.fixture
def running(settings, transport, sqlite_db):
    """Start services on the shared memory transport; stop and wait for them after."""
    started = []

    def start(manager, binary="fabric-echo", topic="echo", host="h1"):
        service = Service(settings, binary, topic, manager, host=host, transport=transport,
                          db=sqlite_db, address="192.0.2.10")
        service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()
    for service in started:
        assert service.wait(5)


def test_registers_and_heartbeats(running, sqlite_db, settings):
    running(EchoManager(settings))
    [row] = servicegroup.list_services(sqlite_db)
    assert (row.host, row.binary, row.topic) == ("h1", "fabric-echo", "echo")
    assert row.version == fabric.__version__ and row.address == "192.0.2.10"
    assert row.capabilities == {"echo": True, "max_words": 3}
    first = row.last_heartbeat
    later = wait_until(lambda: [s for s in servicegroup.list_services(sqlite_db) if s.report_count >= 4],
                       what="four reports")
    assert later[0].last_heartbeat > first and later[0].up


def test_changed_capabilities_are_recorded_by_the_next_heartbeat(running, sqlite_db, settings):
    manager = EchoManager(settings)
    running(manager)
    manager.capabilities = lambda: {"echo": True, "max_words": 5}
    wait_until(lambda: servicegroup.list_services(sqlite_db)[0].capabilities["max_words"] == 5,
               what="new capabilities recorded")


def test_down_after_service_down_time_once_stopped(running, sqlite_db, settings):
    service = running(EchoManager(settings))
    down_time = settings.service.service_down_time
    assert servicegroup.list_services(sqlite_db, up_only=True, down_time=down_time)
    service.stop()
    assert service.wait(5)
    [last] = servicegroup.list_services(sqlite_db, down_time=down_time)
    wait_until(lambda: not servicegroup.list_services(sqlite_db, up_only=True, down_time=down_time),
               what="service down")
    [row] = servicegroup.list_services(sqlite_db, down_time=down_time)
    # No heartbeat after stop, and down only once the last one is service_down_time old.
    assert (row.last_heartbeat, row.report_count) == (last.last_heartbeat, last.report_count)
    assert not row.up
    assert (utcnow() - row.last_heartbeat).total_seconds() > down_time


def test_describe_on_shared_and_host_queues(running, settings, transport):
    running(EchoManager(settings))
    client = rpc.RPCClient(transport, rpc.Target(topic="echo"))
    ctx = RequestContext.admin()
    expected = {"binary": "fabric-echo", "topic": "echo", "host": "h1", "address": "192.0.2.10",
                "version": fabric.__version__, "capabilities": {"echo": True, "max_words": 3}}
    assert client.call(ctx, "describe") == expected
    assert client.prepare(server="h1").call(ctx, "describe") == expected
    assert client.call(ctx, "echo", words=["a", "b"]) == ["a", "b"]


def test_periodic_tasks_run_and_survive_exceptions(running, settings):
    manager = EchoManager(settings)
    running(manager)
    wait_until(lambda: manager.sweeps >= 4, what="four sweeps")
    assert manager.sweep_failures >= 2


def test_a_manager_without_describe_still_answers_it(running, settings, transport):
    class Bare:
        def ping(self, ctx):
            return "pong"

    running(Bare(), binary="fabric-bare", topic="bare")
    answer = rpc.RPCClient(transport, rpc.Target(topic="bare")).call(RequestContext.admin(), "describe")
    assert answer["binary"] == "fabric-bare" and answer["version"] == fabric.__version__


def test_workers_registry():
    assert {w.topic for w in workers.WORKERS.values()} == {"api", "scheduler", "compute", "network", "ipam",
                                                           "objectstore", "volume"}
    assert set(workers.ALL_IN_ONE) == set(workers.WORKERS)
    with pytest.raises(KeyError, match="unknown worker 'fabric-nope'; known: fabric-api"):
        workers.worker("fabric-nope")
    for spec in workers.WORKERS.values():
        assert issubclass(workers.manager_class(spec), Manager)


def test_the_address_recorded_is_the_advertised_one_else_the_resolved_host(settings):
    resolved = Service(settings, "fabric-echo", "echo", EchoManager(settings), host="localhost")
    assert resolved.address == "127.0.0.1"
    advertised = settings.replace(service={"advertise_address": "198.51.100.4"})
    assert Service(advertised, "fabric-echo", "echo", EchoManager(advertised), host="localhost").address \
        == "198.51.100.4"
    assert Service(settings, "fabric-echo", "echo", EchoManager(settings),
                   host="no-such-host.invalid").address == ""


def test_services_sharing_a_database_heartbeat_together_until_each_stops(running, sqlite_db, settings):
    first = running(EchoManager(settings), host="h1")
    second = running(EchoManager(settings), host="h2")
    assert first._heartbeats is second._heartbeats  # one statement per interval for both
    wait_until(lambda: all(s.report_count >= 3 for s in servicegroup.list_services(sqlite_db)),
               what="both services heartbeating")
    first.stop()
    assert first.wait(5)
    stopped = {s.host: s for s in servicegroup.list_services(sqlite_db)}["h1"]
    wait_until(lambda: {s.host: s for s in servicegroup.list_services(sqlite_db)}["h2"].report_count
               >= stopped.report_count + 3, what="the other service heartbeating on")
    assert {s.host: s for s in servicegroup.list_services(sqlite_db)}["h1"].report_count == stopped.report_count


def _drop_on_the_fanout(transport, *, stale: bool = False) -> None:
    """Publish to the echo fanout what its server refuses: unsigned, or signed too long ago."""
    if not stale:
        transport.publish("echo_fanout", "echo", b'{"v": 1}', message_id=rpc.new_message_id())
        return
    keyring = signing.keyring_of(transport)
    body = envelope.encode_request("cast", rpc.new_message_id(), "echo", {"words": []},
                                   RequestContext.admin().to_dict(), None, None, "echo")
    real_time = time.time
    signing.time.time = lambda: real_time() - keyring.max_age - 60  # a sender whose clock is behind
    try:
        old = keyring.sign(signing.REQUEST, body, "api", "echo")
    finally:
        signing.time.time = real_time
    transport.publish("echo_fanout", "echo", old, message_id=rpc.new_message_id())


def test_fanout_messages_the_server_drops_reach_the_registry_with_a_heartbeat(running, sqlite_db, settings,
                                                                             transport):
    service = running(EchoManager(settings))
    _drop_on_the_fanout(transport)
    _drop_on_the_fanout(transport, stale=True)
    _drop_on_the_fanout(transport, stale=True)
    [row] = wait_until(lambda: [s for s in servicegroup.list_services(sqlite_db)
                                if s.fanout_drops == {"unsigned": 1, "stale": 2}], what="the drops recorded")
    assert row.fanout_dropped_at == service.server.fanout_dropped_at is not None
    # Counted in the process only: a restarted worker starts again from none.
    service.stop()
    assert service.wait(5)
    running(EchoManager(settings))
    [row] = servicegroup.list_services(sqlite_db)
    assert (row.fanout_drops, row.fanout_dropped_at) == ({}, None)


def test_a_dropped_fanout_costs_no_write_of_its_own_the_next_heartbeat_carries_it(running, sqlite_db, settings,
                                                                                 transport):
    service = running(EchoManager(settings))
    group = service._heartbeats
    group.leave(service, wait=True)  # this test beats for it, when it chooses
    writes: list[str] = []

    def record(conn, cursor, statement, *args):
        if "services" in statement and not statement.lstrip().upper().startswith("SELECT"):
            writes.append(statement)

    sa.event.listen(sqlite_db.engine, "before_cursor_execute", record)
    try:
        for _ in range(5):
            _drop_on_the_fanout(transport)
        wait_until(lambda: service.server.fanout_dropped["unsigned"] == 5, what="five drops")
        assert writes == []
        assert servicegroup.list_services(sqlite_db)[0].fanout_drops == {}
        group.beat([service])
        assert len(writes) == 1 and "fanout_drops" in writes[0]  # its own heartbeat, with them
        assert servicegroup.list_services(sqlite_db)[0].fanout_drops == {"unsigned": 5}
        group.beat([service])
        assert len(writes) == 2 and "fanout_drops" not in writes[1]  # nothing new: the shared statement
    finally:
        sa.event.remove(sqlite_db.engine, "before_cursor_execute", record)
