"""``amqp://``: the RabbitMQ transport (kombu connections, py-amqp channels).

Publishing (one :class:`~fabric.rpc.amqp_link.Link` per process):

* channel 1 is in confirm mode and carries persistent messages (casts, retries, dead
  letters). py-amqp would wait for each confirm inside ``publish``; instead the
  connection is opened with ``confirm_publish=False``, ``confirm.select`` is sent once,
  and ``basic.ack``/``basic.nack`` (``multiple`` too) are matched to delivery tags by
  the link's reader. Many confirms are therefore in flight at once (pipelined), and a
  publisher waits only when it asked to (``wait_confirm``). Every unconfirmed message
  is kept and re-sent, in order, after a reconnect. A ``basic.nack`` means the broker
  could not enqueue the message (a quorum queue electing a new leader after its node
  died refuses publishes for a moment), so a nacked message is published again after
  a growing pause, for up to ``NACK_RETRY_SECONDS``, before its waiter is failed or it
  is logged as lost. A connection that has left a message unconfirmed for
  ``CONFIRM_STALL`` seconds, or has kept refusing one for ``NACK_STALL`` seconds, is
  given up and replaced (see both).
* channel 2 carries calls, transient, and consumes the replies to this process's calls
  (direct reply-to wants both on one channel). Where the broker can lose a call it took
  (``transport_url`` names a cluster, or ``quorum_queues``: ``confirm_calls``) it is in
  confirm mode too, the calls' confirms watched but never waited for: a call the broker
  refuses is published again (as a nacked cast is), and one it never confirms trips
  ``CONFIRM_STALL`` like a cast, so a call lost inside the broker fails (or is re-sent,
  if idempotent) within seconds instead of at its timeout. Seen with RabbitMQ 3.10 on a
  3-node cluster whose leader node was killed: calls published to a quorum queue around
  its leader election vanished without a trace. On one node with classic queues a call
  the broker took is not lost while the connection lives (a return still fails it at
  once), so the confirm is not asked for: it was a second wake-up of the caller's
  process per call (strace of the RPC benchmark's 1-caller loop: two epoll_wait and two
  recvfrom per call, one and one without). A call is never re-sent by the transport on
  a new connection (its reply address belonged to the old one); the client decides
  (:mod:`fabric.rpc.client`).
* channel 3 carries replies, unconfirmed and transient.
* all publish ``mandatory``: ``basic.return`` precedes the confirm of the same
  message, so a returned message (matched by its ``message_id``) fails its waiter with
  :class:`~fabric.rpc.transport.Returned`, or is reported through ``on_returned``.
* Basic.Publish is written directly (:func:`_encode_publish`), not through py-amqp's
  ``basic_publish``, which first reads pending frames and so may run consumer
  callbacks inside a publish. The first publish of a turn of the hub is written at
  once; those that follow it in the same turn (50 callers' calls, a worker's replies to
  a batch of deliveries, a loop of casts) are gathered into one more socket write
  (:meth:`~fabric.rpc.amqp_link.Link.send`). Only the link's reader
  reads; and wherever a reply is dispatched, it only resolves a
  :class:`~fabric.rpc.deferred.Deferred`, whose callbacks are scheduled on the hub,
  never run inline.

Replies: to a per-process queue (``reply_<uuid>``, exclusive and auto-deleted, declared
on channel 2 at each connect), consumed with ``no_ack``. It replaced RabbitMQ's direct
reply-to (``amq.rabbitmq.reply-to``) as the default once the calls were no longer
confirmed on one node: in tools/bench/rpc.py (median of 3 interleaved rounds, shared
2-core machine, RabbitMQ 3.10) the queue gave 1,579 calls/s with 1 caller and 9,146 with
50 against 1,188 and 5,754 for direct reply-to (p50 0.60 vs 0.69 ms and 5.5 vs 8.6 ms),
and it had been ahead with 1 caller in every run of issue 19's before. What direct
reply-to had for it holds for the queue too: it goes with its connection (exclusive),
so nothing is orphaned, a reply to a caller that has gone away is unroutable and
dropped by the broker, and calls in flight on a broken connection fail (or are re-sent,
if idempotent) as the contract asks. What the queue costs: a queue process per
publishing process on the broker and one ``queue.declare`` per connect.
``reply_mode="direct"`` selects direct reply-to (the benchmark's comparison column).

Consuming: the consumers of a process share one connection (:class:`ConsumerConnection`,
a second one only beyond ``CONSUMERS_PER_CONNECTION``), apart from the publisher's, so
a publisher blocked by flow control never stalls deliveries. Each :class:`AmqpConsumer`
has a channel of its own there, with its own prefetch window; it is set up on the link's
reader (:meth:`~fabric.rpc.amqp_link.Link.run_on_reader`), and closing it closes its
channel, so the broker gives what it left unacknowledged to others. One connection per
consumer was what ran RabbitMQ out of file descriptors at 1,000 fake hosts (two workers
each). What sharing costs: a channel error (which py-amqp raises on the reader) or a lost
connection makes every consumer of the process reconnect together, and each gets back
what it had not acked, as before. A consumer acks by delivery tag on the channel and
connection the message came from. Acks are gathered for up to ``ACK_DELAY`` (or
until half the prefetch window waits) and written together: one ``basic.ack``
``multiple`` for the longest run of handled tags from the oldest, single acks for the
rest. Measured on a 1-caller call loop, the ack's own socket write was a quarter of the
server's CPU, as much as the reply's. What the delay costs: a worker killed in it gets
those messages redelivered, which handlers already allow (they are idempotent).

Flow control: at most ``CONFIRM_WINDOW`` persistent messages wait for confirms; a
publisher beyond that waits for the broker to catch up.

Clusters: ``transport_url`` may name every node of a RabbitMQ cluster
(:func:`~fabric.rpc.amqp_link.broker_urls`); each link fails over to the next node on
its own, re-declares what it declared there and re-sends its unconfirmed casts. With
``quorum_queues`` the durable queues are replicated, so a node going down loses no
cast: the publisher's unconfirmed ones are re-sent, a consumer's unacked ones are
redelivered (handlers are idempotent). Calls in flight on a connection that broke fail
clearly (or are re-sent when idempotent), as on one broker.

Queues, and RabbitMQ 4.x: every queue is declared through :func:`queue_declarations`
(or :func:`reply_queue_declaration`), which keep to what RabbitMQ 4.3 still permits by
default: durable queues (shared, per-host, dead-letter; quorum with ``quorum_queues``)
and transient queues only when exclusive (fanout, per-process reply queue), never a
transient non-exclusive queue (``transient_nonexcl_queues``, refused from 4.3), no
``x-queue-master-locator``, ``x-queue-mode`` or ``x-queue-version``, no global QoS
(``basic.qos`` per consumer). tests/unit/rpc/test_queue_rules.py holds them to it.
"""

from __future__ import annotations

import dataclasses
import logging
import struct
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import amqp
import eventlet
from amqp import spec as amqp_spec
from eventlet.event import Event

from fabric.exception import MessagingError
from fabric.rpc import transport as base
from fabric.rpc.amqp_link import Link, broker_urls, describe, wake_soon
from fabric.rpc.transport import ConnectionLost, Delivery, QueueSpec, Returned

LOG = logging.getLogger(__name__)

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
#: Unconfirmed persistent messages a publisher may have in flight before ``publish``
#: waits for confirms: enough to pipeline, small enough to bound memory and re-sends.
CONFIRM_WINDOW = 1000
#: Seconds a persistent message may wait for its confirm before the publisher decides
#: the connection will never give it and replaces it (re-sending what it did not
#: confirm). A queue confirms in milliseconds, a quorum queue electing a leader within a
#: second or two; seen with RabbitMQ 3.10 on a 3-node cluster whose leader node was
#: killed: a channel that published to a quorum queue before its new leader was known
#: never confirmed anything more for that queue, however long it was left.
CONFIRM_STALL = 10.0
#: How long a consumer may hold handled messages' acks to write them together.
ACK_DELAY = 0.01
#: How long a message the broker refuses (``basic.nack``) is published again before
#: it counts as lost: longer than a quorum queue's leader election takes.
NACK_RETRY_SECONDS = 60.0
#: How long one connection may keep refusing a message before it is replaced: seen with
#: RabbitMQ 3.10 after a cluster node was killed, a channel nacked every publish to a
#: quorum queue for a full minute while new connections published to it at once.
NACK_STALL = 5.0
#: The pauses between those publishes: from the first to the longest, doubling.
NACK_PAUSE_FIRST, NACK_PAUSE_LONGEST = 0.05, 2.0
#: The pauses before a consumer whose set-up the broker refused tries it again on the same
#: connection: from the first to the longest, doubling. A refusal can pass: seen on a 3-node
#: cluster whose node was killed, a consumer that moved to another node had its fanout
#: queue's bind refused (404, the dead node's queue not yet removed) while the connection
#: stayed up, and with no retry before the next connection its queues went unconsumed.
SETUP_RETRY_FIRST, SETUP_RETRY_LONGEST = 0.5, 30.0
#: Consumers (a channel each) one connection carries before the next is opened: well
#: within RabbitMQ's default ``channel_max`` (2,047), and a thousand fake hosts' workers
#: (two each) in four processes still need one connection per process.
CONSUMERS_PER_CONNECTION = 1000
_PUBLISH_SIG = amqp_spec.Basic.Publish


@dataclasses.dataclass(frozen=True)
class QueueDeclaration:
    """One ``queue.declare`` as fabric sends it, and the binding that follows (if any)."""

    name: str
    durable: bool
    exclusive: bool
    auto_delete: bool
    arguments: dict[str, Any]
    exchange: str | None = None
    routing_key: str | None = None

    def declare(self, channel: amqp.Channel) -> None:
        channel.queue_declare(self.name, durable=self.durable, exclusive=self.exclusive,
                              auto_delete=self.auto_delete, arguments=self.arguments)
        if self.exchange is not None:
            channel.queue_bind(self.name, self.exchange, self.routing_key)


def queue_declarations(settings: Any, specs: Sequence[QueueSpec]) -> list[QueueDeclaration]:
    """What a consumer of ``specs`` declares, in order: for each durable queue its
    ``<name>.dead`` queue (bound to the dead-letter exchange) and then the queue; for
    each other one an exclusive, auto-deleted queue. See the module docstring for the
    RabbitMQ 4.x rules these keep."""
    declarations = []
    for spec in specs:
        if spec.durable:
            dead_arguments = {"x-queue-type": "quorum"} if settings.quorum_queues else {}
            declarations.append(QueueDeclaration(
                spec.dead_letter_queue, durable=True, exclusive=False, auto_delete=False,
                arguments=dead_arguments, exchange=base.DEAD_LETTER_EXCHANGE, routing_key=spec.name))
        # A transient queue must be exclusive: RabbitMQ 4.3 refuses transient shared ones.
        declarations.append(QueueDeclaration(
            spec.name, durable=spec.durable, exclusive=not spec.durable, auto_delete=not spec.durable,
            arguments=base.queue_arguments(settings, spec), exchange=spec.exchange,
            routing_key=spec.routing_key))
    return declarations


def reply_queue_declaration(name: str) -> QueueDeclaration:
    """The per-process reply queue of ``reply_mode="queue"``: exclusive, transient."""
    return QueueDeclaration(name, durable=False, exclusive=True, auto_delete=True, arguments={})


class _Outgoing:
    """A persistent message kept until the broker confirms it."""

    __slots__ = ("exchange", "routing_key", "body", "properties", "message_id", "mandatory", "waiter",
                 "first_nack", "nack_pause", "sent_at", "call_of", "nacked_on", "nacked_since")

    def __init__(self, exchange: str, routing_key: str, body: bytes, properties: dict[str, Any],
                 message_id: str, mandatory: bool, waiter: Event | None) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.body = body
        self.properties = properties
        self.message_id = message_id
        self.mandatory = mandatory
        self.waiter = waiter
        #: When the broker first refused it (monotonic), and the pause before the next try.
        self.first_nack: float | None = None
        self.nack_pause = NACK_PAUSE_FIRST
        #: The connection generation refusing it lately, and since when (monotonic).
        self.nacked_on = -1
        self.nacked_since = 0.0
        #: When it was last written to a connection (monotonic).
        self.sent_at = 0.0
        #: For a call: the connection generation whose reply address it carries (it
        #: is never sent on another); None for a persistent message.
        self.call_of: int | None = None


_pack = struct.Struct(">BHI").pack
_pack_ack = struct.Struct(">BHIHHQB").pack  # frame header, Basic.Ack (60, 80), tag, multiple
_FRAME_END = b"\xce"
_CONTENT_TYPE = b"\x10application/json"
#: Properties :func:`_encode_publish` writes itself, with their flag bits (AMQP 0-9-1
#: basic properties, in wire order); anything else goes through py-amqp.
_FAST_PROPERTIES = {"content_type": 0x8000, "delivery_mode": 0x1000, "correlation_id": 0x0400,
                    "reply_to": 0x0200, "message_id": 0x0080}
#: Whole Basic.Publish method frames by (channel, exchange, routing key, mandatory).
_method_frames: dict[tuple[int, str, str, bool], bytes] = {}
_pack_content_header = struct.Struct(">BHIHHQH").pack  # frame header, class 60, weight, size, flags
_pack_body_start = struct.Struct(">BBHI").pack  # the header frame's end octet, then the body's frame header
_LENGTH_OCTETS = tuple(bytes((n,)) for n in range(256))


def _shortstr(value: str) -> bytes:
    data = value.encode()
    if len(data) > 255:
        raise ValueError(f"{value[:40]!r}...: AMQP short strings hold at most 255 bytes")
    return _LENGTH_OCTETS[len(data)] + data


def _encode_publish(channel_id: int, frame_max: int, exchange: str, routing_key: str,
                    mandatory: bool, body: bytes, properties: dict[str, Any]) -> bytes:
    """Basic.Publish, content header and body frames as one buffer, for ``properties``
    among ``_FAST_PROPERTIES`` with the JSON content type (what :func:`_send` checks).

    Byte for byte what py-amqp writes (tests/unit/rpc/test_amqp_encoding.py holds them
    equal), in ~4 µs instead of ~23 µs: fabric's messages always have the same few
    properties, so they are packed here directly.
    """
    return _encode_own(channel_id, frame_max, exchange, routing_key, mandatory, body,
                       properties["message_id"], properties.get("delivery_mode") == 2,
                       properties.get("correlation_id"), properties.get("reply_to"))


def _encode_own(channel_id: int, frame_max: int, exchange: str, routing_key: str, mandatory: bool,
                body: bytes, message_id: str, persistent: bool, correlation_id: str | None,
                reply_to: str | None) -> bytes:
    """:func:`_encode_publish` from the properties themselves (no dict to build and read)."""
    key = (channel_id, exchange, routing_key, mandatory)
    method = _method_frames.get(key)
    if method is None:
        if len(_method_frames) > 4096:  # reply keys come and go with callers' connections
            _method_frames.clear()
        arguments = (b"\x00\x3c\x00\x28\x00\x00" + _shortstr(exchange) + _shortstr(routing_key)
                     + (b"\x01" if mandatory else b"\x00"))
        method = _method_frames[key] = _pack(1, channel_id, len(arguments)) + arguments + _FRAME_END
    flags = 0x8080
    parts = [_CONTENT_TYPE]
    if persistent:
        flags |= 0x1000
        parts.append(b"\x02")
    if correlation_id is not None:
        flags |= 0x0400
        parts.append(_shortstr(correlation_id))
    if reply_to is not None:
        flags |= 0x0200
        parts.append(_shortstr(reply_to))
    parts.append(_shortstr(message_id))
    properties = b"".join(parts)
    size = len(body)
    header = _pack_content_header(2, channel_id, 14 + len(properties), 60, 0, size, flags)
    if 0 < size <= frame_max - 8:  # one body frame: fabric's messages, nearly always
        return b"".join((method, header, properties, _pack_body_start(0xCE, 3, channel_id, size), body, _FRAME_END))
    frames = [method, header, properties, _FRAME_END]
    chunk = frame_max - 8
    for offset in range(0, size, chunk):
        piece = body[offset:offset + chunk]
        frames += (_pack(3, channel_id, len(piece)), piece, _FRAME_END)
    return b"".join(frames)


def _send(link: Link, channel: amqp.Channel, exchange: str, routing_key: str, body: bytes,
          properties: dict[str, Any], mandatory: bool) -> None:
    """Send one Basic.Publish on ``link``, gathered with the others of this turn of the
    hub into one write (the caller holds the link's lock)."""
    connection = channel.connection
    if properties.keys() <= _FAST_PROPERTIES.keys() and properties.get("content_type") == "application/json":
        link.send(connection, _encode_publish(
            channel.channel_id, connection.frame_max, exchange, routing_key, mandatory, body, properties))
        return
    # Channel.basic_publish would first read pending frames (connection.blocked check);
    # the link's reader does that, so send the method straight away, after what was
    # gathered before it (confirm tags count publishes in the order they arrive).
    link.write_gathered(connection)
    channel.send_method(_PUBLISH_SIG, "Bssbb", (0, exchange, routing_key, mandatory, False),
                        amqp.Message(body, **properties))


class AmqpTransport(base.Transport):
    """The RabbitMQ transport; see the module docstring."""

    def __init__(self, settings: Any, reply_mode: str = "queue") -> None:
        super().__init__(settings)
        if reply_mode not in ("direct", "queue"):
            raise ValueError(f"reply_mode {reply_mode!r}: accepted are 'direct' and 'queue'")
        #: One URL per broker node; links fail over between them.
        self.urls = broker_urls(settings.transport_url)
        self.reply_mode = reply_mode
        self._confirm_channel: amqp.Channel | None = None
        self._call_channel: amqp.Channel | None = None
        self._reply_channel: amqp.Channel | None = None
        self._next_tag = 1
        self._unconfirmed: dict[int, _Outgoing] = {}
        #: The calls' own delivery tags and confirms (channel 2).
        self._next_call_tag = 1
        self._unconfirmed_calls: dict[int, _Outgoing] = {}
        self._resend: list[_Outgoing] = []
        #: Nacked messages waiting for their pause to end before they are published again.
        self._nacked = 0
        #: The connection generation already being replaced for refusing (see NACK_STALL).
        self._replacing = -1
        self._returned: dict[str, str] = {}
        self._window_open = Event()
        self._exchanges: dict[str, str] = {self.exchange: "topic", base.DEAD_LETTER_EXCHANGE: "direct"}
        self._reply_queue = DIRECT_REPLY_TO if reply_mode == "direct" else f"reply_{uuid.uuid4().hex}"
        self._consumers: list[AmqpConsumer] = []
        #: The connections consumers share (one until it carries CONSUMERS_PER_CONNECTION).
        self._consumer_connections: list[ConsumerConnection] = []
        self._consumer_number = 0
        #: Whether calls are published in confirm mode (see the module docstring): only
        #: where the broker has been seen to lose one, a cluster or quorum queues.
        self.confirm_calls = len(self.urls) > 1 or bool(settings.quorum_queues)
        self._link = Link(self.urls, settings.heartbeat, "rpc publisher", self._connected, self._lost,
                          settings.failover_strategy)
        self._watchdog = eventlet.spawn(self._watch_confirms)

    # -- connection life ------------------------------------------------------
    def _connected(self, raw: amqp.Connection) -> None:
        confirm = raw.channel()
        confirm.confirm_select()
        confirm.events["basic_ack"].add(self._on_ack)
        confirm.events["basic_nack"].add(self._on_nack)
        confirm.events["basic_return"].add(self._on_confirmed_return)
        calls = raw.channel()
        calls.events["basic_return"].add(self._on_call_return)
        # The link's reader hands confirms over directly (fabric.rpc.amqp_frames); the
        # py-amqp events serve frames read while connecting.
        confirms = self._link.frames.confirms
        confirms[confirm.channel_id] = self._on_ack
        if self.confirm_calls:
            calls.confirm_select()
            calls.events["basic_ack"].add(self._on_call_ack)
            calls.events["basic_nack"].add(self._on_call_nack)
            confirms[calls.channel_id] = self._on_call_ack
        self._reply_channel = raw.channel()
        for name, kind in self._exchanges.items():
            confirm.exchange_declare(name, kind, durable=kind != "fanout", auto_delete=False)
        self._consume_replies(calls)
        self._confirm_channel, self._call_channel = confirm, calls
        self._next_tag = self._next_call_tag = 1
        self._returned.clear()
        # Everything the old connection did not confirm goes again, in order.
        resend, self._resend = self._resend, []
        for outgoing in resend:
            self._send_tracked(outgoing)

    def _lost(self, error: Exception) -> None:
        # Calls are not sent again here: the client fails or re-sends them (on_connection_lost).
        self._resend = list(self._unconfirmed.values()) + self._resend
        self._unconfirmed.clear()
        self._unconfirmed_calls.clear()
        if self.on_connection_lost is not None:
            self.on_connection_lost(ConnectionLost(reason=f"{type(error).__name__}: {error}"))

    def _watch_confirms(self) -> None:
        """Replace a connection that has stopped confirming (see ``CONFIRM_STALL``)."""
        while True:
            eventlet.sleep(CONFIRM_STALL / 10)
            raw = self._link.raw
            if raw is None:
                continue
            # Each in delivery-tag order: the first is the oldest.
            oldest = [next(iter(u.values())).sent_at for u in (self._unconfirmed, self._unconfirmed_calls) if u]
            unconfirmed = len(self._unconfirmed) + len(self._unconfirmed_calls)
            waited = time.monotonic() - min(oldest) if oldest else 0.0
            if waited > CONFIRM_STALL:
                LOG.warning("rpc publisher: %d message(s) unconfirmed, the oldest sent %.1fs ago; "
                            "replacing the connection to %s to send them again", unconfirmed,
                            waited, describe(self._link.url))
                self._link.broken(raw, MessagingError(reason="confirms stalled"))

    def _consume_replies(self, channel: amqp.Channel) -> None:
        # Done at connect time, before the reader starts: a synchronous method later
        # would read the socket beside the reader (which a monkey-patched socket forbids).
        if self.reply_mode == "queue":
            reply_queue_declaration(self._reply_queue).declare(channel)
        tag = channel.basic_consume(self._reply_queue, no_ack=True, callback=self._on_reply_message)
        self._link.frames.deliveries[(channel.channel_id, tag)] = self._on_reply_frames

    @property
    def reply_address(self) -> str:
        return self._reply_queue

    # -- frames from the broker (run on the link's reader, must not block) ---
    def _on_reply_message(self, message: amqp.Message) -> None:
        if self.on_reply is not None:
            self.on_reply(message.body, message.properties.get("correlation_id"))

    def _on_reply_frames(self, body: bytes, properties: dict[str, Any], delivery_tag: int,
                         redelivered: bool) -> None:
        if self.on_reply is not None:
            self.on_reply(body, properties.get("correlation_id"))

    def _on_call_return(self, exc: Exception, exchange: str, routing_key: str,
                        message: amqp.Message) -> None:
        if self.on_returned is not None:
            self.on_returned(message.properties.get("message_id", ""), getattr(exc, "reply_text", str(exc)))

    def _on_confirmed_return(self, exc: Exception, exchange: str, routing_key: str,
                             message: amqp.Message) -> None:
        self._returned[message.properties.get("message_id", "")] = getattr(exc, "reply_text", str(exc))

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._acked(self._unconfirmed, delivery_tag, multiple)

    def _on_call_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._acked(self._unconfirmed_calls, delivery_tag, multiple)

    def _on_nack(self, delivery_tag: int, multiple: bool, requeue: bool = False) -> None:
        self._refused(self._unconfirmed, delivery_tag, multiple)

    def _on_call_nack(self, delivery_tag: int, multiple: bool, requeue: bool = False) -> None:
        self._refused(self._unconfirmed_calls, delivery_tag, multiple)

    def _acked(self, unconfirmed: dict[int, _Outgoing], delivery_tag: int, multiple: bool) -> None:
        if multiple:
            while unconfirmed:
                tag = next(iter(unconfirmed))
                if tag > delivery_tag:
                    break
                self._confirmed(unconfirmed.pop(tag), None)
        else:
            outgoing = unconfirmed.pop(delivery_tag, None)
            if outgoing is not None:
                self._confirmed(outgoing, None)

    def _refused(self, unconfirmed: dict[int, _Outgoing], delivery_tag: int, multiple: bool) -> None:
        tags = [t for t in unconfirmed if t <= delivery_tag] if multiple else [delivery_tag]
        now = time.monotonic()
        for tag in tags:
            outgoing = unconfirmed.pop(tag, None)
            if outgoing is None:
                continue
            if outgoing.first_nack is None:
                outgoing.first_nack = now
            self._replace_if_refusing(outgoing, now)
            if now - outgoing.first_nack < NACK_RETRY_SECONDS:
                # Not enqueued (no quorum for the moment): publish it again shortly. The
                # reader must not write, so a green thread does it after the pause.
                self._nacked += 1
                eventlet.spawn_after(outgoing.nack_pause, self._publish_again, outgoing)
                outgoing.nack_pause = min(outgoing.nack_pause * 2, NACK_PAUSE_LONGEST)
                continue
            self._confirmed(outgoing, MessagingError(
                reason=f"the broker refused (nack) message {outgoing.message_id} to "
                f"{outgoing.exchange}/{outgoing.routing_key} for {NACK_RETRY_SECONDS:.0f}s"))

    def _replace_if_refusing(self, outgoing: _Outgoing, now: float) -> None:
        """Replace the connection once it has refused ``outgoing`` for NACK_STALL seconds."""
        link = self._link
        generation = link.generation
        if outgoing.nacked_on != generation:
            outgoing.nacked_on, outgoing.nacked_since = generation, now
        elif now - outgoing.nacked_since >= NACK_STALL and self._replacing != generation and link.raw is not None:
            self._replacing = generation
            LOG.warning("rpc publisher: %s has refused message %s to %s/%s for %.1fs; replacing the "
                        "connection", describe(link.url), outgoing.message_id, outgoing.exchange,
                        outgoing.routing_key, now - outgoing.nacked_since)
            link.broken(link.raw, MessagingError(reason="publishes refused"))

    def _publish_again(self, outgoing: _Outgoing) -> None:
        """Publish a nacked message again (or keep it for the next connection)."""
        link = self._link
        with link.lock:
            self._nacked -= 1
            raw = link.raw
            if outgoing.call_of is not None and (raw is None or outgoing.call_of != link.generation):
                return  # its connection is gone: the client fails or re-sends the call
            if raw is None:
                self._resend.append(outgoing)
                return
            try:
                self._send_tracked(outgoing)
            except Exception as exc:  # noqa: BLE001 - in _unconfirmed: re-sent on reconnect
                link.broken(raw, exc)

    def _confirmed(self, outgoing: _Outgoing, error: Exception | None) -> None:
        if len(self._unconfirmed) < CONFIRM_WINDOW // 2 and not self._window_open.ready():
            self._window_open.send(True)
        if outgoing.call_of is not None:  # a return went to on_returned already
            if error is not None:
                LOG.warning("Call %s to %s/%s not taken by the broker: %s (it times out)",
                            outgoing.message_id, outgoing.exchange, outgoing.routing_key, error)
            return
        reason = self._returned.pop(outgoing.message_id, None) if self._returned else None
        if reason is not None:
            error = Returned(outgoing.exchange, outgoing.routing_key, reason)
            self.routable.discard((outgoing.exchange, outgoing.routing_key))
        if outgoing.waiter is not None:
            if error is None:
                outgoing.waiter.send(None)
            else:
                outgoing.waiter.send_exception(error)
        elif error is not None:
            LOG.error("Message %s to %s/%s was lost: %s", outgoing.message_id, outgoing.exchange,
                      outgoing.routing_key, error)

    # -- publishing -------------------------------------------------------------
    def _send_tracked(self, outgoing: _Outgoing) -> None:
        """Send a message and track its confirm (caller holds the lock): a call on the
        call channel, anything else on the confirm channel."""
        if outgoing.call_of is None:
            tag, self._next_tag = self._next_tag, self._next_tag + 1
            self._unconfirmed[tag] = outgoing
            channel = self._confirm_channel
        else:
            tag, self._next_call_tag = self._next_call_tag, self._next_call_tag + 1
            self._unconfirmed_calls[tag] = outgoing
            channel = self._call_channel
        outgoing.sent_at = time.monotonic()
        _send(self._link, channel, outgoing.exchange, outgoing.routing_key, outgoing.body,
              outgoing.properties, outgoing.mandatory)

    def _declare_exchange(self, name: str, kind: str) -> None:
        """Declare a fanout exchange once per connection (caller holds the lock)."""
        if self._exchanges.get(name) != kind:
            self._exchanges[name] = kind
            self._link.write_gathered(self._confirm_channel.connection)
            self._confirm_channel.exchange_declare(name, kind, durable=False, auto_delete=False,
                                                   nowait=True)

    def publish(self, exchange: str, routing_key: str, body: bytes, *, message_id: str,
                persistent: bool = False, mandatory: bool = True,
                headers: dict[str, Any] | None = None, reply_to: str | None = None,
                correlation_id: str | None = None, wait_confirm: bool = False,
                exchange_type: str | None = None, timeout: float | None = None) -> None:
        link = self._link
        if not (persistent or headers or self.confirm_calls and reply_to is not None):
            # A reply, or a call on one node: nothing kept, fabric's own few properties.
            self._publish_transient(exchange, routing_key, body, message_id, mandatory, reply_to,
                                    correlation_id, timeout)
            return None
        properties: dict[str, Any] = {"content_type": "application/json", "message_id": message_id}
        if headers:
            properties["application_headers"] = headers
        if reply_to is not None:
            properties["reply_to"] = reply_to
        if correlation_id is not None:
            properties["correlation_id"] = correlation_id
        if persistent:
            properties["delivery_mode"] = 2
            waiter = Event() if wait_confirm else None
            outgoing = _Outgoing(exchange, routing_key, body, properties, message_id, mandatory,
                                 waiter)
            with link.lock:
                raw = link.raw
                if raw is None:
                    # Sent when the connection is back, with what it did not confirm.
                    if exchange_type is not None:
                        self._exchanges.setdefault(exchange, exchange_type)
                    self._resend.append(outgoing)
                else:
                    tracked = False
                    try:
                        if exchange_type is not None:
                            self._declare_exchange(exchange, exchange_type)
                        tracked = True  # from here on it is in _unconfirmed
                        self._send_tracked(outgoing)
                    except Exception as exc:  # noqa: BLE001 - kept for re-sending
                        if not tracked:
                            self._resend.append(outgoing)
                        link.broken(raw, exc)
            if waiter is None and len(self._unconfirmed) >= CONFIRM_WINDOW:
                # Flow control: let the broker catch up before sending more.
                if self._window_open.ready():
                    self._window_open = Event()
                self._window_open.wait(timeout)
            if waiter is not None:
                result = waiter.wait(timeout)
                if not waiter.ready():
                    raise MessagingError(reason=f"no confirm from the broker for message {message_id} "
                                         f"to {exchange}/{routing_key} within {timeout}s")
                return result
            return None
        self._publish_transient(exchange, routing_key, body, message_id, mandatory, reply_to,
                                correlation_id, timeout, properties)
        return None

    def _publish_transient(self, exchange: str, routing_key: str, body: bytes, message_id: str,
                           mandatory: bool, reply_to: str | None, correlation_id: str | None,
                           timeout: float | None, properties: dict[str, Any] | None = None) -> None:
        """:meth:`publish` of a reply (``reply_to`` None) or of a call: encoded from its
        properties directly when it has no ``properties`` dict (no headers) and is on one node
        (a return is all that can come back), else through :func:`_send`, or tracked for its
        confirm (a call on a cluster: see the module docstring)."""
        link = self._link
        if link.raw is None and not link.wait_up(timeout):
            raise ConnectionLost(reason=f"no broker connection within {timeout}s "
                                 f"for message {message_id} to {exchange}/{routing_key}")
        with link.lock:
            raw = link.raw
            if raw is None:
                raise ConnectionLost(reason=f"lost before sending message {message_id}")
            try:
                channel = self._reply_channel if reply_to is None else self._call_channel
                if properties is None:  # fabric's own few properties: the hot path
                    connection = channel.connection
                    link.send(connection, _encode_own(channel.channel_id, connection.frame_max, exchange,
                                                      routing_key, mandatory, body, message_id, False,
                                                      correlation_id, reply_to))
                elif reply_to is None or not self.confirm_calls:  # with headers
                    _send(link, channel, exchange, routing_key, body, properties, mandatory)
                else:
                    outgoing = _Outgoing(exchange, routing_key, body, properties, message_id,
                                         mandatory, None)
                    outgoing.call_of = link.generation
                    self._send_tracked(outgoing)
            except Exception as exc:
                link.broken(raw, exc)
                raise ConnectionLost(reason=f"{type(exc).__name__}: {exc}") from exc

    def flush(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._unconfirmed or self._resend or self._nacked:
            if deadline is not None and time.monotonic() >= deadline:
                raise MessagingError(reason=f"{len(self._unconfirmed) + len(self._resend) + self._nacked} "
                                     f"messages still unconfirmed after {timeout}s")
            eventlet.sleep(0.005)

    # -- consuming --------------------------------------------------------------
    def consume(self, queues: list[QueueSpec], on_delivery: Callable[[Delivery], None],
                prefetch: int) -> AmqpConsumer:
        connection = next((c for c in self._consumer_connections
                           if len(c.consumers) < CONSUMERS_PER_CONNECTION), None)
        if connection is None:
            self._consumer_number += 1
            connection = ConsumerConnection(self, self._consumer_number)
            self._consumer_connections.append(connection)
        consumer = AmqpConsumer(self, connection, queues, on_delivery, prefetch)
        self._consumers.append(consumer)
        connection.add(consumer)
        if not consumer.tried.wait(30):
            LOG.warning("Consumer of %s is not connected yet; it keeps trying", consumer.names)
        return consumer

    def wake_soon(self, switch: Callable[[], Any]) -> None:
        """On a consumer link's reader (a delivery handed over), when it next waits."""
        wake_soon(switch)

    def cleanup(self, flush_timeout: float = 5.0) -> None:
        """Wait (bounded) for outstanding confirms, then close every connection."""
        try:
            self.flush(flush_timeout)
        except MessagingError as exc:
            LOG.error("Closing with unconfirmed messages (they may be lost): %s", exc.message)
        for consumer in self._consumers:
            consumer._flush_acks()
        self._consumers.clear()
        for connection in self._consumer_connections:
            connection.close()
        self._consumer_connections.clear()
        self._watchdog.kill()
        self._link.close()


class ConsumerConnection:
    """One broker connection carrying up to ``CONSUMERS_PER_CONNECTION`` consumers, each
    on a channel of its own; see the module docstring."""

    def __init__(self, transport: AmqpTransport, number: int) -> None:
        self.transport = transport
        self.consumers: list[AmqpConsumer] = []
        settings = transport.settings
        self.link = Link(transport.urls, settings.heartbeat, f"rpc consumers ({number})",
                         self._connected, lambda error: None, settings.failover_strategy)

    def _connected(self, raw: amqp.Connection) -> None:
        for consumer in list(self.consumers):
            consumer.attach(raw)

    def _attach_new(self, raw: amqp.Connection) -> None:
        """Reader task: attach the consumers added since this connection was set up."""
        for consumer in list(self.consumers):
            if consumer.generation != self.link.generation:
                consumer.attach(raw)

    def add(self, consumer: AmqpConsumer) -> None:
        self.consumers.append(consumer)
        self.link.run_on_reader(self._attach_new)

    def remove(self, consumer: AmqpConsumer, timeout: float = 10.0) -> None:
        """Stop ``consumer`` for good: its channel is closed, so the broker gives what it
        left unacknowledged to other consumers (the connection, when it was the last)."""
        if consumer not in self.consumers:
            return
        self.consumers.remove(consumer)
        if not self.consumers:
            if self in self.transport._consumer_connections:
                self.transport._consumer_connections.remove(self)
            self.link.close()
            return
        if self.link.raw is None or consumer.generation != self.link.generation:
            consumer.detach(None)
            return
        done = Event()

        def detach(raw: amqp.Connection) -> None:
            try:
                consumer.detach(raw)
            finally:
                done.send(True)

        self.link.run_on_reader(detach)
        if not self.link.in_reader():
            done.wait(timeout)

    def close(self) -> None:
        self.consumers.clear()
        self.link.close()


class AmqpConsumer(base.Consumer):
    """Consumes some queues on a channel of its own; see the module docstring."""

    def __init__(self, transport: AmqpTransport, connection: ConsumerConnection, queues: list[QueueSpec],
                 on_delivery: Callable[[Delivery], None], prefetch: int) -> None:
        self.transport = transport
        self.connection = connection
        self.link = connection.link
        self.specs = queues
        self.on_delivery = on_delivery
        self.prefetch = prefetch
        self.channel: amqp.Channel | None = None
        #: The link generation this consumer last attached to (or failed to), -1: never.
        self.generation = -1
        #: Set once the first attempt to attach has been made (see ``attach``).
        self.tried = Event()
        self.cancelled = False
        self._tags: list[str] = []
        #: Delivery tags received on the current connection and not yet acked, oldest
        #: first, each with whether its handler has finished (its ack is due).
        self._unacked: dict[int, bool] = {}
        self._acks_due = 0
        self._flush_timer: Any = None
        #: The pause before the next try of a set-up the broker refused (SETUP_RETRY_*).
        self._setup_pause = SETUP_RETRY_FIRST
        self.names = ", ".join(q.name for q in queues)

    def attach(self, raw: amqp.Connection) -> None:
        """Open this consumer's channel on ``raw``, declare its queues and consume them
        (on the link's reader, under its lock). A declaration the broker refuses closes
        only this channel: it is logged, and tried again on the same connection after a
        pause (doubling, see ``SETUP_RETRY_FIRST``), and at once on a new connection."""
        self.generation = self.link.generation
        self.channel = None
        try:
            self._attach(raw)
            self._setup_pause = SETUP_RETRY_FIRST
        except amqp.exceptions.ChannelError as exc:
            pause, self._setup_pause = self._setup_pause, min(self._setup_pause * 2, SETUP_RETRY_LONGEST)
            LOG.error("Consumer of %s: the broker refused its set-up (%s); trying again in %gs",
                      self.names, exc, pause)
            eventlet.spawn_after(pause, self.link.run_on_reader, self._retry_setup(self.generation))
        finally:
            if not self.tried.ready():
                self.tried.send(True)

    def _retry_setup(self, generation: int) -> Callable[[amqp.Connection], None]:
        """A reader task trying the refused set-up again, if it is still this consumer's to do:
        on the connection it was refused on (a new one has set every consumer up already),
        not set up since, and neither cancelled nor removed."""
        def retry(raw: amqp.Connection) -> None:
            if (self.link.generation == generation and self.generation == generation and self.channel is None
                    and not self.cancelled and self in self.connection.consumers):
                self.attach(raw)
        return retry

    def _attach(self, raw: amqp.Connection) -> None:
        channel = raw.channel()
        channel.basic_qos(0, self.prefetch, False)  # per consumer: global QoS is deprecated
        channel.exchange_declare(base.DEAD_LETTER_EXCHANGE, "direct", durable=True, auto_delete=False)
        for spec in self.specs:
            channel.exchange_declare(spec.exchange, spec.exchange_type,
                                     durable=spec.exchange_type != "fanout", auto_delete=False)
        for declaration in queue_declarations(self.transport.settings, self.specs):
            declaration.declare(channel)
        self.channel = channel
        self._tags = []
        self._unacked, self._acks_due = {}, 0
        if not self.cancelled:
            deliveries = self.link.frames.deliveries
            for spec in self.specs:
                receive = self._receiver(spec, self.link.generation)
                tag = channel.basic_consume(spec.name, callback=lambda message, receive=receive: receive(
                    message.body, message.properties, message.delivery_info["delivery_tag"],
                    message.delivery_info["redelivered"]))
                # The link's reader hands deliveries over directly (fabric.rpc.amqp_frames);
                # py-amqp's callback serves those read by a synchronous method.
                deliveries[(channel.channel_id, tag)] = receive
                self._tags.append(tag)

    def detach(self, raw: amqp.Connection | None) -> None:
        """Close this consumer's channel on ``raw`` if it has one there (reader task)."""
        channel, self.channel = self.channel, None
        if raw is None or channel is None or self.generation != self.link.generation:
            return
        deliveries = self.link.frames.deliveries
        for key in [key for key in deliveries if key[0] == channel.channel_id]:
            del deliveries[key]
        self._tags = []
        try:
            channel.close()
        except amqp.exceptions.ChannelError as exc:
            LOG.debug("Consumer of %s: closing its channel: %s", self.names, exc)

    def _receiver(self, spec: QueueSpec, generation: int) -> Callable[[bytes, dict[str, Any], int, bool], None]:
        on_delivery = self.on_delivery

        def receive(body: bytes, properties: dict[str, Any], tag: int, redelivered: bool) -> None:
            headers = properties.get("application_headers") or {}
            self._unacked[tag] = False
            delivery = Delivery(
                body, headers, properties.get("reply_to"), properties.get("correlation_id"),
                redelivered, spec, self._acker(tag, generation),
                int(headers.get("x-delivery-count", 0) or 0))
            on_delivery(delivery)

        return receive

    def _acker(self, tag: int, generation: int) -> Callable[[], None]:
        def ack() -> None:
            if self.link.generation != generation or self._unacked.get(tag) is not False:
                return  # from a lost connection (the broker redelivers it), or acked already
            self._unacked[tag] = True
            self._acks_due += 1
            if self._acks_due >= max(1, self.prefetch // 2):
                self._flush_acks()
            elif self._flush_timer is None:
                self._flush_timer = eventlet.spawn_after(ACK_DELAY, self._flush_acks)
        return ack

    def _flush_acks(self) -> None:
        """Write every due ack: ``multiple`` up to the last of the oldest handled run, then
        one for each other handled tag, in one write."""
        timer, self._flush_timer = self._flush_timer, None
        if timer is not None and timer is not eventlet.getcurrent():
            timer.cancel()
        link = self.link
        with link.lock:
            raw, unacked = link.raw, self._unacked
            if raw is None or not self._acks_due or self.channel is None:
                return
            run_end = None
            for tag, due in unacked.items():
                if not due:
                    break
                run_end = tag
            frames = []
            channel_id = self.channel.channel_id
            if run_end is not None:
                frames.append(_pack_ack(1, channel_id, 13, 60, 80, run_end, 1) + _FRAME_END)
                for tag in [t for t in unacked if t <= run_end]:
                    del unacked[tag]
            singles = [tag for tag, due in unacked.items() if due]
            for tag in singles:
                frames.append(_pack_ack(1, channel_id, 13, 60, 80, tag, 0) + _FRAME_END)
                del unacked[tag]
            self._acks_due = 0
            try:
                link.write(raw, b"".join(frames))
            except Exception as exc:  # noqa: BLE001 - unacked: the broker redelivers them
                link.broken(raw, exc)

    def cancel(self) -> None:
        self.cancelled = True
        self._flush_acks()
        link = self.link
        with link.lock:
            if link.raw is not None and self.channel is not None:
                for tag in self._tags:
                    try:
                        self.channel.basic_cancel(tag, nowait=True)
                    except Exception as exc:  # noqa: BLE001
                        link.broken(link.raw, exc)
                        break
            self._tags = []

    def close(self) -> None:
        self._flush_acks()
        if self in self.transport._consumers:
            self.transport._consumers.remove(self)
        self.connection.remove(self)
