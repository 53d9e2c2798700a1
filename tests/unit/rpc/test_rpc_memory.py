"""RPC behaviour on memory:// (same code paths and bytes as on RabbitMQ)."""

from __future__ import annotations

import json
import logging
import time

import eventlet
import pytest
from eventlet.event import Event

from fabric import rpc
from fabric.context import RequestContext
from fabric.db.types import utcnow
from fabric.exception import (
    InstanceStateConflict,
    MessagingError,
    MessagingTimeout,
    NotFound,
    RemoteError,
    Unroutable,
)
from fabric.rpc import envelope, signing
from fabric.rpc.transport import ATTEMPT_HEADER, DEAD_REASON_HEADER, QueueSpec
from tests.fixtures.rpc import serving, wait_for

LOG = logging.getLogger("tests.rpc.manager")


class Manager:
    def __init__(self) -> None:
        self.handled: list[tuple[str, object]] = []
        self.failures = 0
        self.gate: Event | None = None
        self.request_ids: list[str] = []

    def echo(self, ctx, value):
        return value

    def record(self, ctx, token):
        self.handled.append(("record", token))

    def missing(self, ctx, ident):
        raise NotFound(kind="widget", ident=ident)

    def conflict(self, ctx):
        raise InstanceStateConflict(instance="i-1", attr="vm_state", actual="error",
                                    expected=["active"])

    def crash(self, ctx):
        return {"a": 1}["b"]

    def always_fails(self, ctx, token):
        self.failures += 1
        raise RuntimeError(f"disk on fire for {token}")

    def slow(self, ctx, seconds):
        eventlet.sleep(seconds)
        return "late"

    def blocked(self, ctx, token):
        self.gate.wait()
        self.handled.append(("blocked", token))

    def who(self, ctx):
        LOG.info("handling who")
        return ctx.request_id

    def _private(self, ctx):
        return "never"


@pytest.fixture
def manager():
    return Manager()


@pytest.fixture
def server(transport, manager):
    with serving(transport, manager) as server:
        yield server


@pytest.fixture
def client(transport):
    return rpc.RPCClient(transport, rpc.Target(topic="widgets"))


@pytest.fixture
def ctx():
    return RequestContext(user_id="alice", project_id="p1", roles=("member",))


def dead_letters(transport, queue):
    """(body, headers) of each message in ``<queue>.dead``, consumed and acked."""
    got = []
    consumer = transport.consume([QueueSpec(f"{queue}.dead", "", "direct", "", durable=False)],
                                 lambda d: (got.append((d.body, d.headers)), d.ack()), prefetch=10)
    eventlet.sleep(0.01)
    consumer.stop()
    return got


def test_call_returns_the_result(server, client, ctx):
    assert client.call(ctx, "echo", value={"nested": [1, "two", None]}) == {"nested": [1, "two", None]}


def test_call_to_a_host_queue_and_fanout_cast(transport, manager, server, client, ctx):
    other = Manager()
    with serving(transport, other, host="h2"):
        assert client.prepare(server="h2").call(ctx, "echo", value=2) == 2
        client.prepare(fanout=True).cast(ctx, "record", token="all")
        wait_for(lambda: manager.handled and other.handled, what="fanout to both workers")
        assert manager.handled == other.handled == [("record", "all")]


def test_registered_remote_error_arrives_as_itself(server, client, ctx):
    with pytest.raises(NotFound) as err:
        client.call(ctx, "missing", ident="w-9")
    assert err.value.fields == {"kind": "widget", "ident": "w-9"}
    assert "widget w-9 could not be found" in err.value.message
    with pytest.raises(InstanceStateConflict) as err:
        client.call(ctx, "conflict")
    assert err.value.code == 409 and err.value.fields["actual"] == "error"


def test_unregistered_remote_error_arrives_as_remote_error(server, client, ctx):
    with pytest.raises(RemoteError) as err:
        client.call(ctx, "crash")
    assert err.value.exc_type == "KeyError"
    assert err.value.value == "'b'"
    assert "in crash" in err.value.traceback and "KeyError" in err.value.traceback


def test_unknown_and_private_methods_are_refused(server, client, ctx):
    for name in ("nope", "_private"):
        with pytest.raises(Exception) as err:
            client.call(ctx, name)
        assert type(err.value).__name__ == "UnknownMethod"
        assert repr(name) in err.value.message and "echo" in err.value.message


def test_call_and_cast_to_a_dead_topic_fail_at_once(transport, ctx):
    nobody = rpc.RPCClient(transport, rpc.Target(topic="nobody"))
    # At once: waiting for the 5 s deadline would raise MessagingTimeout instead.
    with pytest.raises(Unroutable, match="No worker consumes nobody: the message to ping"):
        nobody.call(ctx, "ping")
    with pytest.raises(Unroutable, match="nobody.h7"):
        nobody.prepare(server="h7").cast(ctx, "ping")
    with pytest.raises(Unroutable, match=r"nobody \(fanout\)"):
        nobody.fanout_cast(ctx, "ping")


def test_call_that_outlives_its_deadline_names_target_method_and_id(server, client, ctx):
    deferred = client.call_async(ctx, "slow", seconds=1, timeout=0.05)
    with pytest.raises(MessagingTimeout) as err:
        deferred.wait()
    message = err.value.message
    assert "widgets" in message and "slow" in message and "0.05" in message
    assert err.value.fields["msg_id"] in message


def test_a_reply_that_comes_while_the_request_is_being_sent_is_taken_and_no_timeout_is_left(
        transport, server, client, ctx):
    """A call's timeout starts after its request is sent (off the 1-caller path); a reply
    the hub delivers while the send waits still finds the call, which then starts no timer."""
    from fabric.rpc.client import ReplyRouter

    publish = transport.publish
    waited = []

    def publish_then_wait(*args, **kwargs):
        publish(*args, **kwargs)
        router = ReplyRouter.of(transport)
        wait_for(lambda: not router.pending, what="the reply, while the send is still on the stack")
        waited.append(True)

    router = ReplyRouter.of(transport)
    finish, finished = router._finish, []
    router._finish = lambda msg_id: finished.append(finish(msg_id)) or finished[-1]
    transport.publish = publish_then_wait
    try:
        deferred = client.call_async(ctx, "echo", value="early", timeout=0.2)
    finally:
        transport.publish = publish
        del router._finish
    assert waited and deferred.done and deferred.wait() == "early"
    assert not router.pending
    assert [call.armed for call in finished] == [False]  # answered before its timeout was started
    assert not router._deadlines


def test_a_shorter_timeout_after_a_longer_one_fires_first_and_alone(server, client, ctx):
    """One timer per router serves every call's own deadline: a call of a shorter timeout
    made after one of a longer times out at its own, and the longer one is left to finish."""
    long = client.call_async(ctx, "slow", seconds=0.3, timeout=10)
    short = client.call_async(ctx, "slow", seconds=0.5, timeout=0.05)
    with pytest.raises(MessagingTimeout, match="0.05"):
        short.wait()
    assert not long.done
    assert long.wait() == "late"


def test_answered_calls_leave_no_pile_of_deadlines(transport, server, client, ctx):
    from fabric.rpc.client import ReplyRouter

    for number in range(300):
        assert client.call(ctx, "echo", value=number) == number
    router = ReplyRouter.of(transport)
    assert not router.pending and len(router._deadlines) <= 64 + 1


def test_server_drops_a_request_whose_caller_gave_up(transport, server, manager, ctx):
    body = envelope.encode_request("call", "m-late", "record", {"token": "late"},
                                   ctx.to_dict(), time.time() - 1, None, "widgets")
    transport.publish("fabric", "widgets", body, message_id="m-late", persistent=True)
    rpc.RPCClient(transport, rpc.Target("widgets")).cast(ctx, "record", token="after")
    wait_for(lambda: ("record", "after") in manager.handled, what="the later cast")
    assert ("record", "late") not in manager.handled
    assert transport.queue_depth("widgets") == 0


def test_call_async_callbacks_run_on_the_hub(server, client, ctx):
    results = []
    done = Event()
    deferred = client.call_async(ctx, "echo", value="v")
    deferred.add_callback(lambda r: (results.append(r), done.send()))
    done.wait(5)
    assert results == ["v"]
    errors = []
    client.call_async(ctx, "missing", ident=3).add_errback(errors.append)
    wait_for(lambda: errors, what="the errback")
    assert isinstance(errors[0], NotFound)


def test_callback_may_make_another_call(server, client, ctx):
    chained = []
    first = client.call_async(ctx, "echo", value=1)
    first.add_callback(lambda r: chained.append(client.call(ctx, "echo", value=r + 1)))
    wait_for(lambda: chained, what="the chained call")
    assert chained == [2]


def test_context_is_active_in_the_handler_and_its_log_lines(server, client, ctx, caplog):
    from fabric.log import RequestIdFilter

    handler_filter = RequestIdFilter()
    caplog.handler.addFilter(handler_filter)
    with caplog.at_level(logging.INFO, logger="tests.rpc.manager"):
        assert client.call(ctx, "who") == ctx.request_id
    records = [r for r in caplog.records if r.getMessage() == "handling who"]
    assert records and records[0].request_id == ctx.request_id


def test_malformed_message_is_dead_lettered_and_worker_keeps_running(transport, server, client, ctx):
    # Signed, so it is the envelope that is refused (unsigned ones: test_signing.py).
    keyring = signing.keyring_of(transport)
    transport.publish("fabric", "widgets", keyring.sign(signing.REQUEST, b'{"v": 1, "kind": "cast"', "api", "widgets"),
                      message_id="bad-1", persistent=True)
    transport.publish("fabric", "widgets", keyring.sign(signing.REQUEST, json.dumps({"v": 0}).encode(), "api",
                                                        "widgets"), message_id="bad-2", persistent=True)
    assert client.call(ctx, "echo", value="still here") == "still here"
    wait_for(lambda: transport.queue_depth("widgets.dead") == 2, what="two dead letters")
    reasons = [headers[DEAD_REASON_HEADER] for _, headers in dead_letters(transport, "widgets")]
    assert "not JSON" in reasons[0]
    assert "request envelope" in reasons[1] and "v" in reasons[1]


def test_failing_cast_is_dead_lettered_after_max_deliveries(transport, server, manager, client, ctx):
    client.cast(ctx, "always_fails", token="t-1")
    wait_for(lambda: transport.queue_depth("widgets.dead") == 1, what="the dead letter")
    assert manager.failures == 3  # rpc.max_deliveries in these tests
    [(body, headers)] = dead_letters(transport, "widgets")
    assert "always_fails failed 3 time(s)" in headers[DEAD_REASON_HEADER]
    assert "disk on fire for t-1" in headers[DEAD_REASON_HEADER]
    assert headers[ATTEMPT_HEADER] == 3
    assert envelope.decode_request(signing.strip(body))["args"] == {"token": "t-1"}
    assert client.call(ctx, "echo", value=1) == 1


def test_a_retried_cast_is_signed_afresh_so_its_wait_in_the_queue_does_not_make_it_stale(
        transport, server, manager, ctx, monkeypatch):
    keyring = signing.keyring_of(transport)
    body = envelope.encode_request("cast", "m-old", "always_fails", {"token": "t-old"},
                                   ctx.to_dict(), None, None, "widgets")
    real_time = time.time
    monkeypatch.setattr(signing.time, "time", lambda: real_time() - keyring.max_age + 30)
    old = keyring.sign(signing.REQUEST, body, "api", "widgets")  # accepted, 30 s from stale
    monkeypatch.undo()
    transport.publish("fabric", "widgets", old, message_id="m-old", persistent=True)
    wait_for(lambda: transport.queue_depth("widgets.dead") == 1, what="the dead letter")
    assert manager.failures == 3  # each retry was accepted, none refused
    [(dead, headers)] = dead_letters(transport, "widgets")
    assert "always_fails failed 3 time(s)" in headers[DEAD_REASON_HEADER]
    # The last retry carries a new signature by the same signer, with the same envelope.
    signer, verifier, _, envelope_bytes = keyring.check(signing.REQUEST, dead, "widgets")
    assert (signer, verifier, envelope_bytes) == ("api", "widgets", body)
    signed_at = float(dead.split(b"\n", 1)[0].split(b" ")[3])
    assert signed_at > real_time() - 60


def test_what_a_fanout_queue_cannot_dead_letter_is_dropped_and_counted_by_code(
        transport, server, manager, client, ctx, monkeypatch):
    """A fanout queue has no dead-letter queue: what is refused or given up on there is dropped,
    and counted by code for the worker's heartbeat (tests/unit/service/test_service.py)."""
    keyring = signing.keyring_of(transport)
    body = envelope.encode_request("cast", "m-stale", "record", {"token": "late"}, ctx.to_dict(), None, None,
                                   "widgets")
    real_time = time.time
    monkeypatch.setattr(signing.time, "time", lambda: real_time() - keyring.max_age - 60)
    stale = keyring.sign(signing.REQUEST, body, "api", "widgets")  # as a sender whose clock is behind
    monkeypatch.undo()
    transport.publish("widgets_fanout", "widgets", stale, message_id="m-stale")
    transport.publish("widgets_fanout", "widgets", b'{"v": 1}', message_id="m-unsigned")
    client.prepare(fanout=True).cast(ctx, "always_fails", token="t-1")
    # Refused on a durable queue: dead-lettered, so not a fanout drop.
    transport.publish("fabric", "widgets", b'{"v": 1}', message_id="m-durable", persistent=True)
    wait_for(lambda: sum(server.fanout_dropped.values()) == 3 and transport.queue_depth("widgets.dead") == 1,
             what="three fanout drops and one dead letter")
    assert server.fanout_dropped == {"stale": 1, "unsigned": 1, "failed": 1}
    assert server.refused == {"stale": 1, "unsigned": 2}
    assert manager.handled == [] and manager.failures == 3
    assert abs((utcnow() - server.fanout_dropped_at).total_seconds()) < 5


def test_cast_with_arguments_the_method_lacks_is_dead_lettered_at_once(transport, server, manager,
                                                                     client, ctx):
    client.cast(ctx, "record", tokn="typo")
    wait_for(lambda: transport.queue_depth("widgets.dead") == 1, what="the dead letter")
    [(_, headers)] = dead_letters(transport, "widgets")
    assert "['tokn'] do not fit record" in headers[DEAD_REASON_HEADER]


def test_unfinished_work_is_redelivered_when_a_worker_goes(transport, manager, ctx):
    manager.gate = Event()
    first = rpc.RPCServer(transport, topic="widgets", host="h1", endpoint=manager)
    first.start()
    rpc.RPCClient(transport, rpc.Target("widgets")).cast(ctx, "blocked", token="t-1")
    wait_for(lambda: first._running == 1, what="the handler to start")
    first.stop()
    assert first.wait(0.01) is False  # still blocked: the message goes back unacked
    assert transport.queue_depth("widgets") == 1
    other = Manager()
    other.gate = Event()
    other.gate.send()
    second = rpc.RPCServer(transport, topic="widgets", host="h2", endpoint=other)
    second.start()
    try:
        wait_for(lambda: other.handled, what="redelivery to the other worker")
        assert other.handled == [("blocked", "t-1")]
    finally:
        manager.gate.send()
        second.stop()
        second.wait(1)


def test_lost_connection_fails_calls_in_flight_clearly(transport, server, client, ctx):
    deferred = client.call_async(ctx, "slow", seconds=0.2)
    eventlet.sleep(0.01)
    transport.drop_connections()
    with pytest.raises(MessagingError, match="may or may not have run") as err:
        deferred.wait()
    assert "slow" in err.value.message and "widgets" in err.value.message


def test_idempotent_calls_are_resent_after_a_lost_connection(transport, server, client, ctx):
    @rpc.idempotent
    def slow_call():
        deferred = client.call_async(ctx, "slow", seconds=0.05)
        eventlet.sleep(0.01)
        transport.drop_connections()
        return deferred.wait()

    assert slow_call() == "late"
    assert client.prepare(idempotent=True)._options.idempotent


def test_quorum_delivery_limit_dead_letters_a_message_that_keeps_coming_back(settings, ctx):
    settings = settings.replace(rpc={"quorum_queues": True, "max_deliveries": 2})
    transport = rpc.get_transport(settings.rpc)
    manager = Manager()
    manager.gate = Event()
    server = rpc.RPCServer(transport, topic="widgets", host="h1", endpoint=manager)
    server.start()
    try:
        rpc.RPCClient(transport, rpc.Target("widgets")).cast(ctx, "blocked", token="poison")
        for _ in range(3):  # the worker "dies" in the handler three times
            wait_for(lambda: server._running >= 1, what="delivery")
            transport.drop_connections()
            eventlet.sleep(0.005)
        wait_for(lambda: transport.queue_depth("widgets.dead") == 1, what="the dead letter")
        [(_, headers)] = dead_letters(transport, "widgets")
        assert headers["x-first-death-reason"] == "delivery_limit"
        assert transport.broker.queues["widgets"].arguments["x-queue-type"] == "quorum"
    finally:
        manager.gate.send()
        transport.cleanup()


def test_arguments_must_be_json(server, client, ctx):
    with pytest.raises(envelope.MalformedMessage, match="JSON-serialisable"):
        client.cast(ctx, "record", token={1, 2})


def test_a_configured_exchange_is_used_by_both_sides(settings, ctx):
    settings = settings.replace(rpc={"exchange": "fabric_blue"})
    transport = rpc.get_transport(settings.rpc)
    server = rpc.RPCServer(transport, topic="widgets", host="h1", endpoint=Manager())
    server.start()
    try:
        assert rpc.RPCClient(transport, rpc.Target("widgets")).call(ctx, "echo", value=5) == 5
        assert [b[2] for b in transport.broker.bindings["fabric_blue"]] == ["widgets", "widgets.h1"]
    finally:
        transport.cleanup()


def test_handlers_share_at_most_executor_size_green_threads(settings, ctx):
    """Messages wait for the server's handler green threads: never more than
    ``executor_size`` handlers run at once, each green thread takes message after message,
    and every message is handled once the blocked ones finish."""
    transport = rpc.get_transport(settings.replace(rpc={"executor_size": 2}).rpc)
    manager = Manager()
    manager.gate = Event()
    threads: set[int] = set()
    blocked = manager.blocked

    def blocked_on(ctx, token):
        threads.add(id(eventlet.getcurrent()))
        blocked(ctx, token)

    manager.blocked = blocked_on
    try:
        with serving(transport, manager) as server:
            client = rpc.RPCClient(transport, rpc.Target("widgets"))
            for token in range(6):
                client.cast(ctx, "blocked", token=token)
            wait_for(lambda: server._running == 6 and len(threads) == 2, what="two handlers to block")
            eventlet.sleep(0.05)  # a third green thread would have started by now
            assert len(threads) == 2 and manager.handled == []
            manager.gate.send()
            wait_for(lambda: len(manager.handled) == 6, what="every cast to be handled")
            assert sorted(token for _, token in manager.handled) == list(range(6))
            assert len(threads) == 2
    finally:
        transport.cleanup()
