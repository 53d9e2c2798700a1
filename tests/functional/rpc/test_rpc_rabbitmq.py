"""RPC against the real local RabbitMQ, each test in a vhost of its own."""

from __future__ import annotations

import collections
import json

import amqp
import eventlet
import pytest
from eventlet import tpool
from eventlet.event import Event

from fabric import config, rpc
from fabric.context import RequestContext
from fabric.exception import MessagingError, MessagingTimeout, NotFound, RemoteError, Unroutable
from fabric.rpc import signing
from fabric.rpc.transport import ATTEMPT_HEADER, DEAD_REASON_HEADER
from tests.fixtures.rpc import serving, wait_for
from tests.fixtures.signing import keyring_at

pytestmark = pytest.mark.functional


class Manager:
    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.effects = 0
        self.deliveries = 0
        #: How many times ``apply`` ran for each token (a redelivery counts again).
        self.runs: collections.Counter[str] = collections.Counter()
        self.failures = 0
        self.gate: Event | None = None

    def apply(self, ctx, token):
        """Idempotent by token: the effect happens once however often it is delivered."""
        self.deliveries += 1
        self.runs[token] += 1
        eventlet.sleep(0.001)
        if token not in self.seen:
            self.seen.add(token)
            self.effects += 1

    def echo(self, ctx, value):
        return value

    def slow(self, ctx, seconds):
        eventlet.sleep(seconds)
        return "done"

    def missing(self, ctx, ident):
        raise NotFound(kind="widget", ident=ident)

    def crash(self, ctx):
        raise ZeroDivisionError("division by zero in crash")

    def always_fails(self, ctx):
        self.failures += 1
        raise RuntimeError("disk on fire")

    def gated(self, ctx, value):
        self.deliveries += 1
        self.gate.wait()
        return value

    def blocked(self, ctx, token):
        self.gate.wait()
        self.seen.add(token)


@pytest.fixture
def settings(rabbit_vhost):
    return config.load(None).replace(rpc={"transport_url": rabbit_vhost, "call_timeout": 10.0,
                                          "max_deliveries": 3, "heartbeat": 10})


@pytest.fixture
def manager():
    return Manager()


@pytest.fixture
def server(transport, manager):
    with serving(transport, manager, drain=2) as server:
        yield server


@pytest.fixture
def ctx():
    return RequestContext(user_id="alice", project_id="p1")


def take_dead_letters(url, queue):
    """Every message in ``<queue>.dead`` as (body, headers), removed from the queue."""
    conn = amqp.Connection(url.split("://", 1)[1].split("@")[1].split("/")[0],
                           userid="guest", password="guest", virtual_host=url.rsplit("/", 1)[1])
    conn.connect()
    try:
        channel = conn.channel()
        got = []
        while (message := channel.basic_get(f"{queue}.dead", no_ack=True)) is not None:
            got.append((message.body, message.properties.get("application_headers") or {}))
        return got
    finally:
        conn.close()


def test_calls_errors_and_a_dead_topic(rabbit, transport, server, ctx):
    client = rpc.RPCClient(transport, rpc.Target("widgets"))
    assert client.call(ctx, "echo", value={"a": [1, 2]}) == {"a": [1, 2]}
    assert client.prepare(server="h1").call(ctx, "echo", value=3) == 3
    with pytest.raises(NotFound, match="widget w-1 could not be found"):
        client.call(ctx, "missing", ident="w-1")
    with pytest.raises(RemoteError) as err:
        client.call(ctx, "crash")
    assert err.value.exc_type == "ZeroDivisionError"
    assert "division by zero in crash" in err.value.value
    assert "in crash" in err.value.traceback
    # At once: waiting for the 10 s deadline would raise MessagingTimeout instead.
    with pytest.raises(Unroutable, match="No worker consumes nobody: the message to ping"):
        rpc.RPCClient(transport, rpc.Target("nobody")).call(ctx, "ping")
    with pytest.raises(Unroutable, match="widgets.h9"):
        client.prepare(server="h9").cast(ctx, "apply", token="x")
    queues = rabbit.queues("durable")
    assert queues["widgets"]["durable"] == "true" and queues["widgets.h1"]["durable"] == "true"
    assert "widgets.dead" in queues and "widgets.h1.dead" in queues
    assert any(name.startswith("widgets_fanout_h1_") for name in queues)


def test_call_that_outlives_its_deadline(transport, server, ctx):
    client = rpc.RPCClient(transport, rpc.Target("widgets"), timeout=0.2)
    with pytest.raises(MessagingTimeout) as err:
        client.call(ctx, "slow", seconds=1.0)
    msg_id = err.value.fields["msg_id"]
    assert f"from widgets to slow (message {msg_id})" in err.value.message


def test_malformed_and_failing_messages_are_dead_lettered(rabbit, transport, server, manager, ctx, signing_keys):
    """Signatures are checked before decoding: an unsigned message is refused as unsigned, a
    correctly signed one that is not an envelope is still dead-lettered as malformed, and each
    dead letter keeps its exact bytes (signature line included)."""
    garbage = b"\x00not json"
    signed_garbage = keyring_at(signing_keys, ["api"]).sign(signing.REQUEST, garbage, "api", "widgets")
    for message_id, body in (("unsigned-1", garbage), ("malformed-1", signed_garbage)):
        transport.publish("fabric", "widgets", body, message_id=message_id, persistent=True,
                          wait_confirm=True)
    client = rpc.RPCClient(transport, rpc.Target("widgets"))
    client.cast(ctx, "always_fails")
    assert client.call(ctx, "echo", value="alive") == "alive"  # the worker keeps running
    wait_for(lambda: manager.failures == 3 and rabbit.queues("messages")["widgets.dead"]["messages"] == "3",
             timeout=15, what="three dead letters")
    letters = {headers[DEAD_REASON_HEADER]: (body, headers) for body, headers in
               take_dead_letters(rabbit.url, "widgets")}
    assert len(letters) == 3, sorted(letters)
    unsigned, malformed, failed = (next(reason for reason in letters if reason.startswith(start)) for start in
                                   ("refused (unsigned): ", "Malformed message: body is not JSON",
                                    "always_fails failed 3 time(s), last with RuntimeError: disk on fire"))
    assert server.refused == {"unsigned": 1}  # the signed garbage passed the signature check
    assert letters[unsigned][0] == garbage
    assert letters[malformed][0] == signed_garbage
    # The failed cast is dead-lettered as it arrived: still signed, its signature still good.
    failed_body, failed_headers = letters[failed]
    envelope = signing.keyring_of(transport).check(signing.REQUEST, failed_body, "widgets")[3]
    assert json.loads(envelope)["method"] == "always_fails"
    assert failed_headers[ATTEMPT_HEADER] == 3
    assert manager.failures == 3


def test_unacked_work_goes_to_another_worker(transport, ctx):
    first, second = Manager(), Manager()
    first.gate, second.gate = Event(), Event()
    second.gate.send()
    one = rpc.RPCServer(transport, topic="widgets", host="h1", endpoint=first)
    one.start()
    rpc.RPCClient(transport, rpc.Target("widgets")).cast(ctx, "blocked", token="t-1")
    wait_for(lambda: one._running == 1, what="the first worker to take it")
    two = rpc.RPCServer(transport, topic="widgets", host="h2", endpoint=second)
    two.start()
    one.stop()
    assert one.wait(0.01) is False  # closes its connection with the message unacked
    wait_for(lambda: second.seen, timeout=10, what="redelivery")
    assert second.seen == {"t-1"} and not first.seen
    first.gate.send()
    two.stop()
    two.wait(2)


def test_every_cast_handled_once_in_effect_across_closed_connections(rabbit, settings, transport, server,
                                                                     manager, ctx):
    """1,000 casts, the broker closing every connection in the middle of them: each is handled,
    and the handler runs again only for what was in flight at the close, never for the rest."""
    client = rpc.RPCClient(transport, rpc.Target("widgets"))
    tokens = [f"t-{i}" for i in range(1000)]
    batch = 20
    first_generation = transport._link.generation
    cast_after_reconnect = 0

    def cast_all():
        nonlocal cast_after_reconnect
        for number, token in enumerate(tokens, 1):
            client.cast(ctx, "apply", token=token)
            reconnected = transport._link.generation > first_generation
            cast_after_reconnect += reconnected
            if number % batch == 0:
                # At most a batch unconfirmed at any moment, so the re-sends after the close
                # have a known bound (and the handlers and connection readers get to run).
                transport.flush(timeout=30)
            if number >= 300 and not reconnected:
                # Slow down until the close has happened, so it lands between casts rather
                # than after the last one (rabbitmqctl takes ~0.5-2 s to act).
                eventlet.sleep(0.01)

    caster = eventlet.spawn(cast_all)
    wait_for(lambda: manager.effects >= 150, timeout=20, what="150 casts handled")
    consumer_generation = server._consumer.link.generation
    tpool.execute(rabbit.close_all_connections)
    caster.wait()
    wait_for(lambda: manager.effects == 1000, timeout=60, what="all 1,000 casts handled")
    transport.flush(timeout=10)
    assert client.call(ctx, "echo", value="after") == "after"
    # The connections really were closed and re-opened, with casts still to send.
    assert transport._link.generation > first_generation
    assert server._consumer.link.generation > consumer_generation
    assert cast_after_reconnect > 0, "every cast was sent before the close: nothing crossed it"
    # Nothing lost: every token ran, and its effect happened exactly once.
    assert manager.seen == set(tokens) and set(manager.runs) == set(tokens)
    assert manager.effects == 1000
    # Handled again only what the close left in flight: the messages the server held
    # unacknowledged (its prefetch window) and the casts the broker had not yet confirmed.
    assert manager.deliveries == sum(manager.runs.values())
    again = manager.deliveries - manager.effects
    assert again <= settings.rpc.prefetch + batch, (
        f"{again} deliveries beyond the 1,000: {sorted(t for t, n in manager.runs.items() if n > 1)}")
    assert max(manager.runs.values()) <= 3  # an unconfirmed re-send, itself redelivered once, at most


def test_calls_in_flight_fail_clearly_or_are_retried_when_idempotent(rabbit, transport, server,
                                                                     manager, ctx):
    manager.gate = Event()  # nothing answers until the connections have been closed
    client = rpc.RPCClient(transport, rpc.Target("widgets"))
    plain = client.call_async(ctx, "gated", value="plain")

    @rpc.idempotent
    def careful():
        return client.call_async(ctx, "gated", value="careful")

    retried = careful()
    wait_for(lambda: manager.deliveries == 2, timeout=10, what="both calls to arrive")
    tpool.execute(rabbit.close_all_connections)
    with pytest.raises(MessagingError, match="may or may not have run") as err:
        plain.wait()
    assert "gated" in err.value.message and "widgets" in err.value.message
    manager.gate.send()
    assert retried.wait() == "careful"  # sent again after the reconnect, answered then


def test_quorum_queues_bound_redelivery(rabbit, settings, ctx):
    settings = settings.replace(rpc={"quorum_queues": True, "max_deliveries": 2})
    transport = rpc.get_transport(settings.rpc)
    manager = Manager()
    server = rpc.RPCServer(transport, topic="widgets", host="h1", endpoint=manager)
    server.start()
    try:
        queues = rabbit.queues("type", "arguments")
        assert queues["widgets"]["type"] == "quorum" and queues["widgets.h1"]["type"] == "quorum"
        assert "x-delivery-limit" in queues["widgets"]["arguments"]
        client = rpc.RPCClient(transport, rpc.Target("widgets"))
        assert client.call(ctx, "echo", value=1) == 1
        server.stop()
        server.wait(2)
        # A worker that keeps dying mid-message: the broker counts the returns.
        client.prepare(server="h1").cast(ctx, "apply", token="poison")
        conn = amqp.Connection("127.0.0.1:5672", userid="guest", password="guest",
                               virtual_host=rabbit.name)
        conn.connect()
        try:
            channel = conn.channel()
            returns = 0
            while (message := channel.basic_get("widgets.h1")) is not None:
                channel.basic_reject(message.delivery_info["delivery_tag"], requeue=True)
                returns += 1
                assert returns < 10, "the delivery limit did not stop redelivery"
        finally:
            conn.close()
        assert returns == 3  # delivered, returned twice more, then dead-lettered
        [(body, headers)] = take_dead_letters(rabbit.url, "widgets.h1")
        # The dead letter is the signed message as sent, its signature still good.
        assert json.loads(signing.keyring_of(transport).check(signing.REQUEST, body, "widgets")[3])["args"] == {
            "token": "poison"}
        assert headers["x-first-death-reason"] == "delivery_limit"
    finally:
        transport.cleanup()



def test_a_message_the_broker_refuses_is_published_again_until_it_is_taken(rabbit_vhost, transport):
    """The broker nacks what it cannot enqueue (a quorum queue without a leader for a
    moment; here, a full queue that rejects publishes): the transport publishes it again
    after a pause instead of losing it, and each arrives once there is room."""
    vhost = rabbit_vhost.rsplit("/", 1)[1]
    conn = amqp.Connection("127.0.0.1:5672", userid="guest", password="guest", virtual_host=vhost)
    conn.connect()
    try:
        channel = conn.channel()
        channel.queue_declare("narrow", durable=True, auto_delete=False,
                              arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
        for number in range(3):
            transport.publish("", "narrow", json.dumps(number).encode(), message_id=f"narrow-{number}",
                              persistent=True)
        # One fits; the broker refuses the other two, which keep coming back.
        with pytest.raises(MessagingError, match="still unconfirmed"):
            transport.flush(timeout=0.5)
        taken = []
        for _ in range(200):
            message = channel.basic_get("narrow", no_ack=True)
            if message is not None:
                taken.append(json.loads(message.body))
                if len(taken) == 3:
                    break
            else:
                eventlet.sleep(0.05)
        transport.flush(timeout=10)
        assert sorted(taken) == [0, 1, 2]
        assert channel.basic_get("narrow", no_ack=True) is None  # each once
    finally:
        conn.close()


def test_a_connection_that_stops_confirming_is_replaced(rabbit_vhost, transport, monkeypatch):
    """A connection on which the broker stops confirming (RabbitMQ 3.10 did, for a quorum
    queue, after a leader change) is given up after CONFIRM_STALL: its unconfirmed messages
    go again on a new connection, which confirms them."""
    from fabric.rpc import amqp as amqp_transport

    monkeypatch.setattr(amqp_transport, "CONFIRM_STALL", 0.5)
    vhost = rabbit_vhost.rsplit("/", 1)[1]
    conn = amqp.Connection("127.0.0.1:5672", userid="guest", password="guest", virtual_host=vhost)
    conn.connect()
    try:
        channel = conn.channel()
        channel.queue_declare("stalled", durable=True, auto_delete=False)
        assert transport._link.wait_up(10)
        first = transport._link.generation
        deaf = transport._link.raw
        on_ack = transport._on_ack

        def deaf_on_the_first_connection(delivery_tag, multiple):
            if transport._link.raw is not deaf:
                on_ack(delivery_tag, multiple)

        monkeypatch.setattr(transport, "_on_ack", deaf_on_the_first_connection)
        # _connected binds the handler at connect time: bind it again on this one, where the
        # link's frame reader hands confirms over (and py-amqp's events, which serve frames
        # read while connecting).
        transport._link.frames.confirms[deaf.channels[1].channel_id] = deaf_on_the_first_connection
        deaf.channels[1].events["basic_ack"].clear()
        deaf.channels[1].events["basic_ack"].add(lambda tag, multiple: deaf_on_the_first_connection(tag, multiple))
        transport.publish("", "stalled", b'"once"', message_id="stalled-1", persistent=True)
        transport.flush(timeout=15)  # confirmed, on another connection
        assert transport._link.generation > first
        bodies = []
        while (message := channel.basic_get("stalled", no_ack=True)) is not None:
            bodies.append(message.body)
        assert bodies and set(bodies) == {b'"once"'}  # sent on both: at least once, never lost
    finally:
        conn.close()


def test_a_connection_that_keeps_refusing_is_replaced(rabbit_vhost, transport, monkeypatch):
    """A connection that has refused one message for NACK_STALL is replaced (RabbitMQ 3.10
    left one channel refusing a quorum queue for a minute after a node died); the message is
    still published again until it is taken."""
    from fabric.rpc import amqp as amqp_transport

    monkeypatch.setattr(amqp_transport, "NACK_STALL", 0.3)
    vhost = rabbit_vhost.rsplit("/", 1)[1]
    conn = amqp.Connection("127.0.0.1:5672", userid="guest", password="guest", virtual_host=vhost)
    conn.connect()
    try:
        channel = conn.channel()
        channel.queue_declare("full", durable=True, auto_delete=False,
                              arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
        assert transport._link.wait_up(10)
        first = transport._link.generation
        for number in range(2):
            transport.publish("", "full", json.dumps(number).encode(), message_id=f"full-{number}", persistent=True)
        wait_for(lambda: transport._link.generation > first and transport._link.raw is not None, timeout=10,
                 what="the refusing connection replaced")
        taken = []
        for _ in range(200):
            message = channel.basic_get("full", no_ack=True)
            if message is not None:
                taken.append(json.loads(message.body))
                if len(taken) == 2:
                    break
            else:
                eventlet.sleep(0.05)
        transport.flush(timeout=10)
        assert sorted(taken) == [0, 1]
    finally:
        conn.close()


def test_a_process_consumes_on_one_connection_a_channel_per_server(rabbit, transport, ctx):
    """Ten servers of one transport: two broker connections in all (the publisher's and
    the consumers'), each server answers on its own channel, stopping one leaves the others
    serving, and after the broker closes everything each of them is back on one connection."""
    managers = [Manager() for _ in range(10)]
    servers = [rpc.RPCServer(transport, topic=f"widgets{n}", host=f"h{n}", endpoint=m)
               for n, m in enumerate(managers)]
    for server in servers:  # each after the connection is up: set up on its reader
        server.start()

    def every_server_answers(which):
        for n in which:
            client = rpc.RPCClient(transport, rpc.Target(f"widgets{n}", server=f"h{n}"))
            assert client.call(ctx, "echo", value=n) == n

    try:
        every_server_answers(range(10))
        assert len({server._consumer.link for server in servers}) == 1
        wait_for(lambda: rabbit.connection_count() == 2, timeout=10, what="two connections")
        servers[3].stop()
        assert servers[3].wait(2) is True
        every_server_answers([n for n in range(10) if n != 3])
        queues = rabbit.queues()
        assert "widgets3.h3" in queues  # durable: kept for the host's next start
        assert servers[3].queues[2].name not in queues  # its fanout queue went with its channel
        assert servers[4].queues[2].name in queues
        generation = servers[0]._consumer.link.generation
        tpool.execute(rabbit.close_all_connections)
        wait_for(lambda: servers[0]._consumer.link.generation > generation and servers[0]._consumer.link.raw,
                 timeout=15, what="the consumers' reconnection")
        every_server_answers([n for n in range(10) if n != 3])
        wait_for(lambda: rabbit.connection_count() == 2, timeout=10, what="two connections again")
    finally:
        for server in servers:
            server.stop()
            server.wait(2)


def test_a_turns_first_publish_is_written_at_once_and_the_rest_together(transport, monkeypatch):
    """A lone call or reply goes to the socket inside ``publish`` (it waited a turn of the
    hub before); what else is published before the hub's next turn goes in one more write,
    in order; after that turn the next publish is written at once again."""
    link = transport._link
    assert link.wait_up(10)
    writes: list[bytes] = []
    real_write = link.write
    monkeypatch.setattr(link, "write", lambda raw, data: (writes.append(data), real_write(raw, data))[1])
    eventlet.sleep(0.01)  # a fresh turn

    def publish(number: int) -> None:  # unroutable, not mandatory: the broker drops it
        transport.publish("", "nowhere", b"{}", message_id=f"turn-{number:02d}", mandatory=False)

    publish(0)
    assert len(writes) == 1 and b"turn-00" in writes[0]
    for number in range(1, 6):
        publish(number)
    assert len(writes) == 1  # gathered behind the first, not written yet
    wait_for(lambda: len(writes) == 2, what="the gathered publishes written")
    gathered = writes[1]
    positions = [gathered.index(f"turn-{number:02d}".encode()) for number in range(1, 6)]
    assert positions == sorted(positions)  # one write, in the order published
    eventlet.sleep(0.01)
    publish(6)
    assert len(writes) == 3 and b"turn-06" in writes[2]


def test_a_write_the_socket_does_not_take_at_once_is_finished_through_py_amqp(transport, server, ctx,
                                                                              monkeypatch):
    """Link.write gives the real socket what it takes without waiting; a message larger
    than the socket's buffer has its rest written by py-amqp (waiting on the hub), whole."""
    link = transport._link
    assert link.wait_up(10)
    tails: list[int] = []
    real_write = link.raw.transport.write
    monkeypatch.setattr(link.raw.transport, "write", lambda data: (tails.append(len(data)), real_write(data))[1])
    value = "0123456789abcdef" * (1 << 20)  # 16 MiB: more than a loopback socket takes at once
    client = rpc.RPCClient(transport, rpc.Target("widgets"), timeout=60)
    assert client.call(ctx, "echo", value=value) == value
    assert tails and 0 < tails[0] < len(value)


def test_a_consumer_whose_set_up_the_broker_refused_tries_again_on_the_same_connection(
        rabbit_vhost, transport, manager, ctx, caplog):
    """The broker refuses a consumer's set-up for a while (here, a queue of the server's name
    declared with other arguments; on a cluster, a lost node's queue not yet removed): the
    consumer tries again on the same connection, with pauses, and serves once the refusal
    passes, with no reconnection (which is all that set it up again before: until then, its
    queues went unconsumed)."""
    vhost = rabbit_vhost.rsplit("/", 1)[1]
    conn = amqp.Connection("127.0.0.1:5672", userid="guest", password="guest", virtual_host=vhost)
    conn.connect()
    try:
        channel = conn.channel()
        channel.queue_declare("widgets", durable=True, auto_delete=False, arguments={"x-max-length": 7})
        with caplog.at_level("ERROR", logger="fabric.rpc.amqp"), serving(transport, manager, drain=2) as server:
            consumer = server._consumer
            generation = consumer.link.generation
            wait_for(lambda: sum("refused its set-up" in r.getMessage() for r in caplog.records) >= 2,
                     timeout=10, what="the set-up refused twice")
            assert consumer.channel is None
            channel.queue_delete("widgets")
            wait_for(lambda: consumer.channel is not None, timeout=15, what="the consumer set up again")
            client = rpc.RPCClient(transport, rpc.Target("widgets"))
            assert client.call(ctx, "echo", value="served") == "served"
            assert consumer.link.generation == generation  # on the same connection
    finally:
        conn.close()
