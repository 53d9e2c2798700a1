"""``memory://``: an in-process broker with RabbitMQ's semantics, for ``fabric-all`` and tests.

Stricter than a fake: exchanges (default, topic, fanout, direct), bindings and queues
behave as on RabbitMQ, bodies stay bytes and headers are JSON-encoded on publish and
decoded on each delivery (so anything the wire cannot carry fails here too), unroutable
mandatory messages are returned, consumers have a prefetch window, unacknowledged
messages return to their queue (flagged ``redelivered``) when a consumer stops or its
connection is dropped (:meth:`MemoryTransport.drop_connections`), and queues declared
with ``x-dead-letter-exchange`` / ``x-delivery-limit`` dead-letter as RabbitMQ's quorum
queues do. Publisher confirms are immediate.

kombu's own ``memory`` transport is not used: it has no basic.return, no delivery
limits or dead-lettering, and polls with a blocking ``time.sleep``, which would stall
the hub of a process that is not monkey-patched.

``memory://`` shares one broker per process; ``memory://<name>`` gives a separate one
(tests use a name of their own).
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import eventlet
from eventlet.queue import LightQueue

from fabric.exception import MessagingError
from fabric.rpc import transport as base
from fabric.rpc.transport import Delivery, QueueSpec, Returned

LOG = logging.getLogger(__name__)

_BROKERS: dict[str, Broker] = {}


class _Message:
    __slots__ = ("body", "headers_json", "reply_to", "correlation_id", "message_id",
                 "redelivered", "delivery_count", "routing_key")

    def __init__(self, body: bytes, headers_json: str, reply_to: str | None,
                 correlation_id: str | None, message_id: str, routing_key: str) -> None:
        self.body = body
        self.headers_json = headers_json
        self.reply_to = reply_to
        self.correlation_id = correlation_id
        self.message_id = message_id
        self.routing_key = routing_key
        self.redelivered = False
        self.delivery_count = 0

    def copy(self) -> _Message:
        return _Message(self.body, self.headers_json, self.reply_to, self.correlation_id,
                        self.message_id, self.routing_key)


def _topic_regex(pattern: str) -> re.Pattern[str]:
    parts = []
    for word in pattern.split("."):
        parts.append({"*": r"[^.]+", "#": r".*"}.get(word, re.escape(word)))
    return re.compile("^" + r"\.".join(parts) + "$")


class _Queue:
    def __init__(self, name: str, arguments: dict[str, Any], owner: object | None) -> None:
        self.name = name
        self.arguments = dict(arguments)
        self.owner = owner
        self.messages: deque[_Message] = deque()
        self.consumers: list[_MemoryConsumer] = []
        self._next = 0

    @property
    def delivery_limit(self) -> int | None:
        return self.arguments.get("x-delivery-limit")


class Broker:
    """The in-process broker behind one ``memory://`` URL."""

    def __init__(self) -> None:
        self.exchanges: dict[str, str] = {"": "direct"}
        self.bindings: dict[str, list[tuple[str, re.Pattern[str] | None, str]]] = {}
        self.queues: dict[str, _Queue] = {}
        self._tags = itertools.count(1)

    # -- declarations ---------------------------------------------------------
    def declare_exchange(self, name: str, kind: str) -> None:
        existing = self.exchanges.get(name)
        if existing is not None and existing != kind:
            raise MessagingError(reason=f"exchange {name!r} exists as {existing}, not {kind}")
        self.exchanges[name] = kind
        self.bindings.setdefault(name, [])

    def declare_queue(self, name: str, arguments: dict[str, Any], owner: object | None = None) -> _Queue:
        queue = self.queues.get(name)
        if queue is None:
            queue = self.queues[name] = _Queue(name, arguments, owner)
        elif queue.owner is not None and queue.owner is not owner:
            raise MessagingError(reason=f"queue {name!r} is exclusive to another consumer")
        return queue

    def bind(self, queue: str, exchange: str, routing_key: str) -> None:
        kind = self.exchanges[exchange]
        regex = _topic_regex(routing_key) if kind == "topic" else None
        entry = (routing_key, regex, queue)
        if entry not in self.bindings[exchange]:
            self.bindings[exchange].append(entry)

    def delete_queue(self, name: str) -> None:
        self.queues.pop(name, None)
        for entries in self.bindings.values():
            entries[:] = [e for e in entries if e[2] != name]

    # -- routing ----------------------------------------------------------------
    def route(self, exchange: str, routing_key: str) -> list[_Queue]:
        kind = self.exchanges.get(exchange)
        if kind is None:
            raise MessagingError(reason=f"NOT_FOUND - no exchange {exchange!r}")
        if exchange == "":
            queue = self.queues.get(routing_key)
            return [queue] if queue else []
        names: list[str] = []
        for key, regex, queue in self.bindings[exchange]:
            if kind == "fanout" or (regex.match(routing_key) if regex else key == routing_key):
                if queue not in names:
                    names.append(queue)
        return [self.queues[n] for n in names if n in self.queues]

    def enqueue(self, queue: _Queue, message: _Message) -> None:
        queue.messages.append(message)
        self.dispatch(queue)

    def dispatch(self, queue: _Queue) -> None:
        while queue.messages and queue.consumers:
            consumers = queue.consumers
            for offset in range(len(consumers)):
                consumer = consumers[(queue._next + offset) % len(consumers)]
                if consumer.has_room():
                    queue._next = (queue._next + offset + 1) % len(consumers)
                    break
            else:
                return
            consumer.deliver(queue, queue.messages.popleft(), next(self._tags))

    def requeue(self, queue: _Queue, message: _Message) -> None:
        """Put an unacknowledged message back at the head, as RabbitMQ does."""
        message.redelivered = True
        message.delivery_count += 1
        limit = queue.delivery_limit
        if limit is not None and message.delivery_count > limit:
            self.dead_letter(queue, message, "delivery_limit")
            return
        if queue.name in self.queues:
            queue.messages.appendleft(message)

    def dead_letter(self, queue: _Queue, message: _Message, reason: str) -> None:
        exchange = queue.arguments.get("x-dead-letter-exchange")
        if exchange is None:
            return
        routing_key = queue.arguments.get("x-dead-letter-routing-key", message.routing_key)
        headers = json.loads(message.headers_json)
        headers.setdefault("x-first-death-reason", reason)
        headers.setdefault("x-first-death-queue", queue.name)
        dead = _Message(message.body, json.dumps(headers), message.reply_to,
                        message.correlation_id, message.message_id, routing_key)
        for target in self.route(exchange, routing_key):
            self.enqueue(target, dead)


class _MemoryConsumer(base.Consumer):
    def __init__(self, broker: Broker, queues: list[QueueSpec],
                 on_delivery: Callable[[Delivery], None], prefetch: int, no_ack: bool = False,
                 arguments: Callable[[QueueSpec], dict[str, Any]] = lambda spec: {}) -> None:
        self.broker = broker
        self.arguments = arguments
        self.specs = queues
        self.on_delivery = on_delivery
        self.prefetch = prefetch
        self.no_ack = no_ack
        self.generation = 0
        self.unacked: dict[int, tuple[_Queue, _Message]] = {}
        self.stopped = False
        self._inbox: LightQueue = LightQueue()
        self._reader = eventlet.spawn(self._read)
        self._subscribe()

    def _subscribe(self) -> None:
        for spec in self.specs:
            if spec.durable:
                self.broker.declare_exchange(base.DEAD_LETTER_EXCHANGE, "direct")
                dead = self.broker.declare_queue(spec.dead_letter_queue, {})
                self.broker.bind(dead.name, base.DEAD_LETTER_EXCHANGE, spec.name)
                queue = self.broker.declare_queue(spec.name, self.arguments(spec))
            else:
                queue = self.broker.declare_queue(spec.name, {}, owner=self)
            if spec.exchange:
                self.broker.declare_exchange(spec.exchange, spec.exchange_type)
                self.broker.bind(spec.name, spec.exchange, spec.routing_key)
            queue.consumers.append(self)
        for spec in self.specs:
            self.broker.dispatch(self.broker.queues[spec.name])

    def has_room(self) -> bool:
        return not self.stopped and (self.no_ack or len(self.unacked) < self.prefetch)

    def deliver(self, queue: _Queue, message: _Message, tag: int) -> None:
        if not self.no_ack:
            self.unacked[tag] = (queue, message)
        self._inbox.put((self.generation, queue, message, tag))

    def _read(self) -> None:
        while True:
            generation, queue, message, tag = self._inbox.get()
            if tag < 0:
                return
            if generation != self.generation:
                continue
            spec = next((s for s in self.specs if s.name == queue.name), None)
            headers = json.loads(message.headers_json)
            if queue.delivery_limit is not None and message.delivery_count:
                headers["x-delivery-count"] = message.delivery_count
            delivery = Delivery(
                message.body, headers, message.reply_to, message.correlation_id,
                message.redelivered, spec or QueueSpec(queue.name, "", "", queue.name, False),
                self._acker(tag, generation), message.delivery_count)
            try:
                self.on_delivery(delivery)
            except Exception:  # noqa: BLE001 - a reader must survive its callback
                LOG.exception("Delivery callback failed on %s", queue.name)

    def _acker(self, tag: int, generation: int) -> Callable[[], None]:
        def ack() -> None:
            if generation != self.generation:
                return
            entry = self.unacked.pop(tag, None)
            if entry is not None:
                self.broker.dispatch(entry[0])
        return ack

    def _release(self) -> None:
        """Return every unacknowledged message to its queue (a lost connection)."""
        self.generation += 1
        for queue, message in reversed(list(self.unacked.values())):
            self.broker.requeue(queue, message)
        self.unacked.clear()

    def drop_connection(self) -> None:
        """What a broken connection does: requeue unacked, then consume again."""
        queues = [q for q in self.broker.queues.values() if self in q.consumers]
        for queue in queues:
            queue.consumers.remove(self)
            if queue.owner is self:
                self.broker.delete_queue(queue.name)
        self._release()
        self._subscribe()

    def cancel(self) -> None:
        """No new deliveries; those received can still be acknowledged."""
        for queue in list(self.broker.queues.values()):
            if self in queue.consumers:
                queue.consumers.remove(self)

    def close(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        for queue in list(self.broker.queues.values()):
            if self in queue.consumers:
                queue.consumers.remove(self)
        for queue in list(self.broker.queues.values()):
            if queue.owner is self:
                self.broker.delete_queue(queue.name)
        self._release()
        for queue in list(self.broker.queues.values()):
            self.broker.dispatch(queue)
        self._inbox.put((self.generation, None, None, -1))


class MemoryTransport(base.Transport):
    """The ``memory://`` transport; see the module docstring."""

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        name = settings.transport_url.split("://", 1)[1].strip("/")
        self.broker = _BROKERS.setdefault(name, Broker())
        self.broker.declare_exchange(self.exchange, "topic")
        self.broker.declare_exchange(base.DEAD_LETTER_EXCHANGE, "direct")
        self._consumers: list[_MemoryConsumer] = []
        self._reply_queue: str | None = None

    @property
    def reply_address(self) -> str:
        if self._reply_queue is None:
            name = f"reply_{uuid.uuid4().hex}"
            spec = QueueSpec(name, "", "", name, durable=False)
            self._consumers.append(_MemoryConsumer(
                self.broker, [spec], self._reply_delivered, prefetch=1, no_ack=True))
            self._reply_queue = name
        return self._reply_queue

    def _reply_delivered(self, delivery: Delivery) -> None:
        if self.on_reply is not None:
            self.on_reply(delivery.body, delivery.correlation_id)

    def publish(self, exchange: str, routing_key: str, body: bytes, *, message_id: str,
                persistent: bool = False, mandatory: bool = True,
                headers: dict[str, Any] | None = None, reply_to: str | None = None,
                correlation_id: str | None = None, wait_confirm: bool = False,
                exchange_type: str | None = None, timeout: float | None = None) -> None:
        if not isinstance(body, bytes):
            raise TypeError(f"message body must be bytes, not {type(body).__name__}")
        try:
            headers_json = json.dumps(headers or {}, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise MessagingError(reason=f"headers cannot be sent: {exc}") from exc
        if exchange_type is not None:
            self.broker.declare_exchange(exchange, exchange_type)
        queues = self.broker.route(exchange, routing_key)
        if not queues:
            if mandatory:
                if wait_confirm:
                    raise Returned(exchange, routing_key, "NO_ROUTE")
                if self.on_returned is not None:
                    eventlet.spawn_n(self.on_returned, message_id, "NO_ROUTE")
            return
        message = _Message(body, headers_json, reply_to, correlation_id, message_id, routing_key)
        for queue in queues:
            self.broker.enqueue(queue, message.copy() if len(queues) > 1 else message)

    def consume(self, queues: list[QueueSpec], on_delivery: Callable[[Delivery], None],
                prefetch: int) -> base.Consumer:
        consumer = _MemoryConsumer(self.broker, queues, on_delivery, prefetch,
                                   arguments=lambda spec: base.queue_arguments(self.settings, spec))
        self._consumers.append(consumer)
        return consumer

    def drop_connections(self) -> None:
        """Simulate losing the broker: unacked messages return, calls in flight fail."""
        for consumer in self._consumers:
            if not consumer.stopped:
                consumer.drop_connection()
        if self.on_connection_lost is not None:
            self.on_connection_lost(base.ConnectionLost(reason="memory transport dropped"))

    def queue_depth(self, name: str) -> int:
        """Messages ready in queue ``name`` (0 if it does not exist): a test helper."""
        queue = self.broker.queues.get(name)
        return len(queue.messages) if queue else 0

    def flush(self, timeout: float | None = None) -> None:
        return None

    def cleanup(self) -> None:
        for consumer in self._consumers:
            consumer.stop()
        self._consumers.clear()
        self._reply_queue = None
