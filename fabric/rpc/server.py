"""The serving side: :class:`RPCServer` dispatches messages to an endpoint's methods.

Promises:

* consumes ``<topic>`` (shared, durable), ``<topic>.<host>`` (durable) and an exclusive
  queue on the ``<topic>_fanout`` exchange; every public method of the endpoint
  (name not starting with ``_``) is callable as ``method(ctx, **args)``;
* each message is handled on a green thread of a pool of ``rpc.executor_size`` and
  acknowledged only after its handler has finished (and, for a call, after the reply
  was sent), so a worker that dies mid-handler gets the message redelivered;
* the request context travels in the message and is the current context while the
  handler runs, so every log line it causes carries the request id;
* a call whose caller's deadline has passed is dropped (acked, logged) unhandled;
* a cast whose handler raises is tried again (re-published to its queue with an
  attempt count) up to ``rpc.max_deliveries`` times, then dead-lettered to
  ``<queue>.dead`` with the reason; a message that cannot be decoded, names an unknown
  method, has arguments the method does not accept, or whose handler raises
  :class:`~fabric.exception.Invalid` (bad input does not get better) is dead-lettered
  at once.
  A call's failure goes back to the caller as data instead. The worker keeps running
  in every case;
* ``stop()`` stops consuming; ``wait(timeout)`` lets the handlers in flight finish
  (bounded), then closes the connection, which returns anything unfinished to the
  broker.
"""

from __future__ import annotations

import inspect
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import eventlet
from eventlet.semaphore import Semaphore

from fabric import context as fabric_context
from fabric.context import RequestContext
from fabric.exception import FabricError, Invalid, MessagingError
from fabric.rpc import envelope, errors
from fabric.rpc.client import new_message_id
from fabric.rpc.target import Target, check_name
from fabric.rpc.transport import (
    ATTEMPT_HEADER,
    DEAD_LETTER_EXCHANGE,
    DEAD_REASON_HEADER,
    Consumer,
    Delivery,
    QueueSpec,
    Returned,
    Transport,
)

LOG = logging.getLogger(__name__)


class UnknownMethod(FabricError):
    code = 400
    msg_fmt = "{topic} has no RPC method {method!r}; it has: {known}."


def public_methods(endpoint: object) -> dict[str, Callable[..., Any]]:
    """The endpoint's callable public attributes, by name.

    Names the endpoint lists in an ``rpc_private`` attribute (lifecycle hooks,
    periodic tasks) are not exposed.
    """
    hidden = frozenset(getattr(endpoint, "rpc_private", ()))
    methods = {}
    for name in dir(endpoint):
        if name.startswith("_") or name in hidden:
            continue
        value = getattr(endpoint, name, None)
        if callable(value) and not inspect.isclass(value):
            methods[name] = value
    return methods


class RPCServer:
    """Serves ``endpoint`` on ``topic`` for ``host``; see the module docstring."""

    def __init__(self, transport: Transport, topic: str, host: str, endpoint: object) -> None:
        check_name("topic", topic)
        check_name("host", host)
        settings = transport.settings
        self.transport = transport
        self.target = Target(topic=topic, server=host, exchange=transport.exchange)
        self.endpoint = endpoint
        self.methods = public_methods(endpoint)
        self.max_deliveries = settings.max_deliveries
        self.queues = [
            QueueSpec(topic, transport.exchange, "topic", topic),
            QueueSpec(f"{topic}.{host}", transport.exchange, "topic", f"{topic}.{host}"),
            QueueSpec(f"{topic}_fanout_{host}_{uuid.uuid4().hex[:8]}", f"{topic}_fanout", "fanout",
                      topic, durable=False),
        ]
        self._slots = Semaphore(settings.executor_size)
        self._prefetch = settings.prefetch
        self._consumer: Consumer | None = None
        self._running = 0
        self._idle = eventlet.event.Event()
        self._idle.send(True)

    # -- life ---------------------------------------------------------------
    def start(self) -> None:
        """Declare the queues and start consuming (idempotent)."""
        if self._consumer is None:
            self._consumer = self.transport.consume(self.queues, self._received, self._prefetch)

    def stop(self) -> None:
        """Stop taking new messages; those being handled go on."""
        if self._consumer is not None:
            self._consumer.cancel()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` for handlers in flight, then close the connection.

        Returns True if every handler finished; unfinished messages return to the broker.
        """
        finished = bool(self._idle.wait(timeout)) if self._running else True
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        return finished

    # -- receiving ---------------------------------------------------------------
    def _received(self, delivery: Delivery) -> None:
        # Runs on the connection's reader: must not block, so the slot is taken in
        # the new green thread (the prefetch window bounds how many wait for one).
        if self._running == 0:
            self._idle = eventlet.event.Event()
        self._running += 1
        eventlet.spawn_n(self._handle_in_slot, delivery)

    def _handle_in_slot(self, delivery: Delivery) -> None:
        try:
            with self._slots:
                self._handle(delivery)
        except Exception:  # noqa: BLE001 - the worker keeps running; the broker redelivers
            LOG.exception("Handling a message from %s failed; it will be redelivered",
                          delivery.queue.name)
        finally:
            self._running -= 1
            if self._running == 0:
                self._idle.send(True)

    def _handle(self, delivery: Delivery) -> None:
        try:
            request = envelope.decode_request(delivery.body)
        except envelope.MalformedMessage as exc:
            LOG.error("Malformed message on %s: %s", delivery.queue.name, exc.message)
            self._dead_letter(delivery, exc.message)
            return
        ctx = RequestContext.from_dict(request["context"])
        token = ctx.activate()
        try:
            self._dispatch(delivery, request, ctx)
        finally:
            fabric_context.reset(token)

    def _dispatch(self, delivery: Delivery, request: dict[str, Any], ctx: RequestContext) -> None:
        method_name = request["method"]
        is_call = request["kind"] == "call"
        deadline = request["deadline"]
        if deadline is not None and time.time() > deadline:
            LOG.warning("Dropped %s of %s (message %s): its caller gave up %.3fs ago",
                        request["kind"], method_name, request["msg_id"], time.time() - deadline)
            delivery.ack()
            return
        method = self.methods.get(method_name)
        if method is None:
            error: Exception = UnknownMethod(topic=self.target.topic, method=method_name,
                                             known=", ".join(sorted(self.methods)) or "none")
            if is_call:
                self._reply(delivery, request, error=error)
            else:
                self._dead_letter(delivery, error.message)
            return
        try:
            result = method(ctx, **request["args"])
        except Exception as exc:  # noqa: BLE001 - goes back to the caller or is retried
            if isinstance(exc, TypeError):
                exc = self._argument_error(method, method_name, request["args"], exc, ctx)
            if is_call:
                log = LOG.info if isinstance(exc, FabricError) else LOG.exception
                log("%s raised %s: %s", method_name, type(exc).__name__, exc)
                self._reply(delivery, request, error=exc)
            else:
                self._failed_cast(delivery, request, exc)
            return
        if is_call:
            self._reply(delivery, request, result=result)
        else:
            delivery.ack()

    def _argument_error(self, method: Callable[..., Any], name: str, args: dict[str, Any],
                        exc: TypeError, ctx: RequestContext) -> Exception:
        """An Invalid naming the arguments if ``args`` do not fit ``method``; else ``exc``."""
        try:
            inspect.signature(method).bind(ctx, **args)
        except TypeError as mismatch:
            return Invalid(reason=f"arguments {sorted(args)} do not fit {name}: {mismatch}")
        except ValueError:
            pass
        return exc

    # -- answering -------------------------------------------------------------------
    def _reply(self, delivery: Delivery, request: dict[str, Any], result: Any = None,
               error: Exception | None = None) -> None:
        reply_to = delivery.reply_to or request["reply_to"]
        msg_id = request["msg_id"]
        if error is None:
            body = envelope.encode_reply(msg_id, result=result)
        else:
            data, trace = errors.to_wire(error)
            body = envelope.encode_reply(msg_id, error=data, traceback=trace)
        if reply_to:
            try:
                self.transport.publish("", reply_to, body, message_id=new_message_id(),
                                       mandatory=False, correlation_id=msg_id, timeout=5)
            except MessagingError as exc:
                # The reply cannot go to this caller's connection any more: it failed there.
                LOG.warning("Reply to %s (message %s) not sent: %s", request["method"], msg_id, exc)
        delivery.ack()

    def _failed_cast(self, delivery: Delivery, request: dict[str, Any], exc: Exception) -> None:
        attempt = int(delivery.headers.get(ATTEMPT_HEADER, 1) or 1)
        deliveries = attempt + delivery.delivery_count
        description = f"{request['method']} failed {deliveries} time(s), last with {type(exc).__name__}: {exc}"
        if deliveries >= self.max_deliveries or isinstance(exc, Invalid):
            LOG.error("Giving up on cast %s (message %s): %s", request["method"],
                      request["msg_id"], description)
            self._dead_letter(delivery, description)
            return
        LOG.warning("Cast %s (message %s) will be retried: %s", request["method"], request["msg_id"],
                    description, exc_info=not isinstance(exc, FabricError))
        queue = delivery.queue
        headers = dict(delivery.headers)
        headers[ATTEMPT_HEADER] = attempt + 1
        headers.pop("x-delivery-count", None)
        try:
            self.transport.publish("", queue.name, delivery.body, message_id=new_message_id(),
                                   persistent=True, mandatory=True, headers=headers,
                                   wait_confirm=True, timeout=30)
        except (MessagingError, Returned) as error:
            LOG.error("Could not re-queue %s (message %s): %s; the broker will redeliver it",
                      request["method"], request["msg_id"], error)
            return
        delivery.ack()

    def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move the message to ``<queue>.dead`` with ``reason``, then ack it."""
        queue = delivery.queue
        if not queue.durable:
            LOG.error("Dropped a message from %s (fanout queues have no dead-letter queue): %s",
                      queue.name, reason)
            delivery.ack()
            return
        headers = dict(delivery.headers)
        headers[DEAD_REASON_HEADER] = reason[:4000]
        headers["x-fabric-queue"] = queue.name
        try:
            self.transport.publish(DEAD_LETTER_EXCHANGE, queue.name, delivery.body,
                                   message_id=new_message_id(), persistent=True, mandatory=True,
                                   headers=headers, wait_confirm=True, timeout=30)
        except (MessagingError, Returned) as error:
            LOG.error("Could not dead-letter a message from %s (%s): %s; the broker will "
                      "redeliver it", queue.name, reason, error)
            return
        delivery.ack()
