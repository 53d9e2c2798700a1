"""The transport: what the RPC layer needs from a message broker.

Implemented by :class:`~fabric.rpc.amqp.AmqpTransport` (RabbitMQ through
kombu/py-amqp) and :class:`~fabric.rpc.memory.MemoryTransport` (an in-process
broker with RabbitMQ's semantics), which import this module and never the other
way round; :func:`fabric.rpc.factory.get_transport` picks one by URL. Both move
the same bytes: envelopes are encoded before they reach a transport and decoded
after, so the in-process path serialises payloads and errors exactly as the wire
does.

The contract every transport keeps (see :class:`Transport`):

* ``publish`` with ``mandatory=True`` never silently drops a message no queue takes:
  with ``wait_confirm=True`` it raises :class:`Returned`; otherwise
  ``on_returned(message_id, reason)`` is called on the hub.
* persistent publishes are kept until the broker confirms them and are re-sent after
  a reconnect; :meth:`Transport.flush` waits until none is outstanding.
* a consumer's deliveries stay unacknowledged until :meth:`Delivery.ack`; a consumer
  that stops or loses its connection gets them redelivered (to itself or another).
* after a lost connection the transport reconnects with backoff and re-declares what
  it declared; ``on_connection_lost(error)`` tells the reply side that replies to
  calls in flight will never come.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from fabric.exception import MessagingError

#: Dead letters go through this exchange to ``<queue>.dead``.
DEAD_LETTER_EXCHANGE = "fabric.dlx"
#: Header carrying why a message was dead-lettered.
DEAD_REASON_HEADER = "x-fabric-dead-reason"
#: Header carrying how many times the handler has failed on this message.
ATTEMPT_HEADER = "x-fabric-attempt"


class Returned(Exception):
    """The broker returned a mandatory message: no queue is bound for its routing key."""

    def __init__(self, exchange: str, routing_key: str, reason: str) -> None:
        super().__init__(f"{exchange}/{routing_key}: {reason}")
        self.exchange = exchange
        self.routing_key = routing_key
        self.reason = reason


class ConnectionLost(MessagingError):
    msg_fmt = "Connection to the message broker was lost: {reason}"


@dataclasses.dataclass(frozen=True)
class QueueSpec:
    """A queue to declare, bind and consume.

    ``durable`` queues (``<topic>``, ``<topic>.<host>``) survive restarts, get a
    ``<name>.dead`` dead-letter queue and may be quorum queues; the others are
    exclusive to their consumer and vanish with it (fanout queues).
    """

    name: str
    exchange: str
    exchange_type: str  # "topic" or "fanout"
    routing_key: str
    durable: bool = True

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.name}.dead"


def queue_arguments(settings: Any, spec: QueueSpec) -> dict[str, Any]:
    """Broker arguments of a durable queue: its dead-letter route and, with
    ``quorum_queues``, the quorum type whose delivery limit bounds redelivery."""
    if not spec.durable:
        return {}
    arguments: dict[str, Any] = {
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        "x-dead-letter-routing-key": spec.name,
    }
    if settings.quorum_queues:
        arguments["x-queue-type"] = "quorum"
        arguments["x-delivery-limit"] = settings.max_deliveries
    return arguments


class Delivery:
    """One received message. Acknowledge it with :meth:`ack` once the work is done."""

    __slots__ = ("body", "headers", "reply_to", "correlation_id", "redelivered", "queue",
                 "_ack", "delivery_count")

    def __init__(self, body: bytes, headers: dict[str, Any], reply_to: str | None,
                 correlation_id: str | None, redelivered: bool, queue: QueueSpec,
                 ack: Callable[[], None], delivery_count: int = 0) -> None:
        self.body = body
        self.headers = headers
        self.reply_to = reply_to
        self.correlation_id = correlation_id
        self.redelivered = redelivered
        self.queue = queue
        self._ack = ack
        self.delivery_count = delivery_count

    def ack(self) -> None:
        """Acknowledge; a no-op if the connection it came on is gone (it will come again)."""
        self._ack()


class Consumer:
    """A running subscription to some queues.

    ``cancel()`` stops new deliveries while those already received can still be
    acknowledged; ``close()`` (or ``stop()``: both) returns the unacknowledged ones
    to the broker.
    """

    def cancel(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def stop(self) -> None:
        self.cancel()
        self.close()


class Transport:
    """Base of the transports; see the module docstring for the promises."""

    #: Set by the reply side: ``on_reply(body, correlation_id)`` for each reply.
    on_reply: Callable[[bytes, str | None], None] | None = None
    #: ``on_returned(message_id, reason)`` for a mandatory publish nobody took.
    on_returned: Callable[[str, str], None] | None = None
    #: ``on_connection_lost(error)``: replies to calls in flight will not come.
    on_connection_lost: Callable[[Exception], None] | None = None

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.exchange: str = settings.exchange
        #: (exchange, routing key) pairs a confirmed publish has reached a queue through.
        self.routable: set[tuple[str, str]] = set()
        #: The client side's ReplyRouter for this transport (made by the first call).
        self.reply_router: Any = None

    @property
    def reply_address(self) -> str:
        """Where servers send replies to this process's calls (starts the reply consumer)."""
        raise NotImplementedError

    def publish(self, exchange: str, routing_key: str, body: bytes, *, message_id: str,
                persistent: bool = False, mandatory: bool = True,
                headers: dict[str, Any] | None = None, reply_to: str | None = None,
                correlation_id: str | None = None, wait_confirm: bool = False,
                exchange_type: str | None = None, timeout: float | None = None) -> None:
        """Send one message.

        ``exchange_type`` declares the exchange first if this transport has not yet.
        ``wait_confirm`` blocks until the broker confirmed it (or ``timeout`` passed) and
        raises :class:`Returned` if it was unroutable. Raises
        :class:`~fabric.exception.MessagingError` if the broker refused it or could not
        be reached within ``timeout``.
        """
        raise NotImplementedError

    def consume(self, queues: list[QueueSpec], on_delivery: Callable[[Delivery], None],
                prefetch: int) -> Consumer:
        """Declare and bind ``queues`` and deliver their messages to ``on_delivery``.

        ``on_delivery`` runs on the consumer's reader and must not block: hand the
        work to a green thread.
        """
        raise NotImplementedError

    def wake_soon(self, switch: Callable[[], Any]) -> None:
        """Call ``switch`` (a parked green thread's) soon: on the hub's next turn here;
        a transport whose consumer has a reader of its own may do it when that reader
        next waits (AMQP: :func:`fabric.rpc.amqp_link.wake_soon`)."""
        from eventlet import hubs

        hubs.get_hub().schedule_call_global(0, switch)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until no persistent publish is outstanding (confirmed, or returned or
        refused and logged); MessagingError naming how many are left if not in time."""
        raise NotImplementedError

    def cleanup(self) -> None:
        """Close every connection; consumers stop, unacked messages go back to the broker."""
        raise NotImplementedError

