"""The serving side: :class:`RPCServer` dispatches messages to an endpoint's methods.

Promises:

* consumes ``<topic>`` (shared, durable), ``<topic>.<host>`` (durable) and an exclusive
  queue on the ``<topic>_fanout`` exchange, or those of them ``consume`` names (a process of
  many simulated hosts, :mod:`fabric.sim.fanout`, takes the fanout once for all of its
  hosts); every public method of the endpoint
  (name not starting with ``_``) is callable as ``method(ctx, **args)``;
* each message is handled on a green thread of a pool of ``rpc.executor_size`` (and,
  given a ``limiter``, inside it: the servers of a process sharing one handle at most its
  count of messages at once between them) and acknowledged only after its handler has
  finished (and, for a call, after the reply was sent), so a worker that dies mid-handler gets the message redelivered;
* the request context travels in the message and is the current context while the
  handler runs, so every log line it causes carries the request id;
* a call whose caller's deadline has passed is dropped (acked, logged) unhandled;
* every message is checked before anything else (:mod:`fabric.rpc.signing`): unsigned,
  forged, stale, signed for another role, or signed by a role the endpoint's
  ``rpc_callers`` table does not name for the method, it is dead-lettered with the
  reason ("refused (<code>): ...") and counted in ``refused`` by code, and nothing
  runs; a refused call gets no reply, except an authentic caller of the wrong role,
  which gets :class:`NotPermitted`. An endpoint without a table (not a Manager)
  takes any role. Replies are signed for the request's pair of roles;
* a handler that fails because the database cannot be reached
  (:func:`fabric.db.retry.is_connection_error`) is run again, after a pause
  growing to two seconds, while its message stays unacknowledged: handlers are
  safe to run again, exactly as for a redelivery. So a database restart costs
  only time: the work resumes within seconds of the database answering again,
  and such failures never count towards ``rpc.max_deliveries``. A call stops
  trying at its caller's deadline (replying DatabaseUnavailable); on ``stop()``
  the waiting handlers give up and leave their messages to the broker;
* a cast whose handler raises is tried again (re-published to its queue with an
  attempt count, signed afresh so that its wait there does not make it stale) up to
  ``rpc.max_deliveries`` times, then dead-lettered to
  ``<queue>.dead`` with the reason; a message that cannot be decoded, names an unknown
  method, has arguments the method does not accept, or whose handler raises
  :class:`~fabric.exception.Invalid` (bad input does not get better) is dead-lettered
  at once.
  A call's failure goes back to the caller as data instead. The worker keeps running
  in every case;
* a fanout queue has no dead-letter queue: what would be dead-lettered from it is dropped
  (acked, logged) and counted in ``fanout_dropped`` by code, with the time of the last in
  ``fanout_dropped_at``, which the worker's heartbeat carries to the services registry
  (:mod:`fabric.service`) for ``fabric-manage status`` to name;
* ``stop()`` stops consuming; ``wait(timeout)`` lets the handlers in flight finish
  (bounded), then closes the server's consumer (its channel; the process's other
  servers go on on the same connection), which returns anything unfinished to the broker.
"""

from __future__ import annotations

import collections
import datetime
import inspect
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from typing import Any

import eventlet
import greenlet
from eventlet import hubs

from fabric import context as fabric_context
from fabric.context import RequestContext
from fabric.db.retry import retry_on_disconnect
from fabric.db.types import utcnow
from fabric.exception import DatabaseUnavailable, FabricError, Invalid, MessagingError
from fabric.rpc import envelope, errors, signing
from fabric.rpc.client import new_message_id
from fabric.rpc.metrics import RPC as METRICS
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


class _LeftForRedelivery(Exception):
    """The server stopped while the handler waited for the database: do not ack."""


class UnknownMethod(FabricError):
    code = 400
    msg_fmt = "{topic} has no RPC method {method!r}; it has: {known}."


class NotPermitted(FabricError):
    code = 403
    msg_fmt = "{topic}.{method} may not be called by role {role}; it takes: {allowed}."


#: The queues a server can consume: the topic's shared queue, its host's, the fanout queue.
QUEUE_KINDS = ("shared", "host", "fanout")


def argument_error(method: Callable[..., Any], name: str, args: dict[str, Any], exc: TypeError,
                   ctx: RequestContext) -> Exception:
    """An Invalid naming the arguments if ``args`` do not fit ``method`` (the TypeError ``exc``
    its call raised is then the sender's doing); else ``exc``, the handler's own error."""
    try:
        inspect.signature(method).bind(ctx, **args)
    except TypeError as mismatch:
        return Invalid(reason=f"arguments {sorted(args)} do not fit {name}: {mismatch}")
    except ValueError:
        pass
    return exc


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

    def __init__(self, transport: Transport, topic: str, host: str, endpoint: object, *,
                 consume: Collection[str] = QUEUE_KINDS, limiter: AbstractContextManager | None = None) -> None:
        check_name("topic", topic)
        check_name("host", host)
        if not consume or not set(consume) <= set(QUEUE_KINDS):
            raise ValueError(f"consume {sorted(consume)}: accepted a non-empty choice of {', '.join(QUEUE_KINDS)}")
        settings = transport.settings
        self.transport = transport
        self.target = Target(topic=topic, server=host, exchange=transport.exchange)
        self.endpoint = endpoint
        self.methods = public_methods(endpoint)
        #: The role messages to this server are signed for (the topic).
        self.role = topic
        #: Method -> roles that may call it; None: any role (an endpoint that is not a Manager).
        self.callers: dict[str, frozenset[str]] | None = getattr(endpoint, "rpc_callers", None)
        #: Messages refused before dispatch, by reason code (unsigned, forged, stale, ...).
        self.refused: Counter[str] = Counter()
        #: Messages dropped from the fanout queue (no dead-letter queue), by reason code, and
        #: when the last was (naive UTC, this host's clock). Held by this object only: a new
        #: server (a restarted worker) starts again from none.
        self.fanout_dropped: Counter[str] = Counter()
        self.fanout_dropped_at: datetime.datetime | None = None
        self.max_deliveries = settings.max_deliveries
        queues = {
            "shared": QueueSpec(topic, transport.exchange, "topic", topic),
            "host": QueueSpec(f"{topic}.{host}", transport.exchange, "topic", f"{topic}.{host}"),
            "fanout": QueueSpec(f"{topic}_fanout_{host}_{uuid.uuid4().hex[:8]}", f"{topic}_fanout", "fanout",
                                topic, durable=False),
        }
        self.queues = [queues[kind] for kind in QUEUE_KINDS if kind in consume]
        #: Received deliveries no handler green thread has taken yet, oldest first.
        self._backlog: collections.deque[Delivery] = collections.deque()
        #: Handler green threads (at most ``executor_size``) and those parked, waiting for work.
        self._executor_size = settings.executor_size
        #: Entered around each message's handling: shared by the servers of a process whose
        #: handlers together must stay within what its database pool serves (fake hosts).
        self._limiter = limiter
        self._workers = 0
        self._parked: list[greenlet.greenlet] = []
        #: A handler green thread has been woken (or started) and has not reached the backlog yet.
        self._waking = False
        self._prefetch = settings.prefetch
        self._consumer: Consumer | None = None
        self._running = 0
        self._idle = eventlet.event.Event()
        self._idle.send(True)
        self._stopping = eventlet.event.Event()
        self._unwatch: Callable[[], None] | None = None

    # -- life ---------------------------------------------------------------
    def start(self) -> None:
        """Declare the queues and start consuming (idempotent).

        Raises SigningError when this process has no signing keys to check messages with.
        """
        if self._consumer is None:
            signing.keyring_of(self.transport)
            if self._stopping.ready():
                self._stopping = eventlet.event.Event()
            self._consumer = self.transport.consume(self.queues, self._received, self._prefetch)
            if self._unwatch is None:
                self._unwatch = METRICS.watch_in_flight(self.target.topic, lambda: self._running)

    def stop(self) -> None:
        """Stop taking new messages; those being handled go on, except handlers
        waiting for the database, which give up and leave their messages unacknowledged."""
        if not self._stopping.ready():
            self._stopping.send(True)
        if self._consumer is not None:
            self._consumer.cancel()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` for handlers in flight, then close the consumer.

        Returns True if every handler finished; unfinished messages return to the broker.
        """
        finished = bool(self._idle.wait(timeout)) if self._running else True
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        return finished

    # -- receiving ---------------------------------------------------------------
    def _received(self, delivery: Delivery) -> None:
        # Runs on the connection's reader: must not block, so a handler green thread
        # takes it from the backlog (the prefetch window bounds how many wait there).
        if self._running == 0:
            self._idle = eventlet.event.Event()
        self._running += 1
        self._backlog.append(delivery)
        self._wake_worker()

    def _wake_worker(self) -> None:
        """Have one more handler green thread take from the backlog, unless one is on its
        way to it already: that one wakes the next when it takes a message and leaves
        more behind, so a handler that waits (for the database) never holds up the rest,
        while handlers that never wait do not wake a green thread per message for
        nothing (the first takes the whole backlog)."""
        if self._waking:
            return
        if self._parked:
            self._waking = True
            self.transport.wake_soon(self._parked.pop().switch)
        elif self._workers < self._executor_size:
            self._waking = True
            self._workers += 1
            eventlet.spawn_n(self._work)

    def _work(self) -> None:
        """A handler green thread: handles the backlog, oldest first, then parks until
        :meth:`_wake_worker` wakes it. They live as long as the process: a green thread per
        message cost, on Python 3.11, an mmap and munmap of its frame stack and their
        page faults besides its creation (strace of the RPC benchmark's server: one
        mmap/munmap pair per call)."""
        me = greenlet.getcurrent()
        backlog = self._backlog
        try:
            while True:
                self._waking = False
                while backlog:
                    delivery = backlog.popleft()
                    if backlog:
                        self._wake_worker()
                    if self._limiter is None:
                        self._handle_one(delivery)
                    else:
                        with self._limiter:
                            self._handle_one(delivery)
                self._parked.append(me)
                hubs.get_hub().switch()
        finally:
            self._workers -= 1
            if me in self._parked:
                self._parked.remove(me)

    def _handle_one(self, delivery: Delivery) -> None:
        try:
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
            signer, _, kid, body = signing.keyring_of(self.transport).check(signing.REQUEST, delivery.body,
                                                                            self.role)
        except signing.Refused as refused:
            self._refuse(delivery, refused)
            return
        try:
            request = envelope.decode_request(body)
        except envelope.MalformedMessage as exc:
            LOG.error("Malformed message on %s: %s", delivery.queue.name, exc.message)
            newer = isinstance(exc, envelope.NewerEnvelope)
            self._dead_letter(delivery, exc.message, code="newer-version" if newer else "malformed")
            return
        sent_at = request["sent_at"]
        waited = None if sent_at is None else time.time() - sent_at
        request["signed"] = (signer, kid)
        ctx = RequestContext.from_dict(request["context"])
        token = ctx.activate()
        try:
            self._dispatch(delivery, request, ctx)
        finally:
            fabric_context.reset(token)
            if waited is not None:  # counted once the reply is out: off the caller's wait
                METRICS.waited(self.target.topic, waited)

    def _refuse(self, delivery: Delivery, refused: signing.Refused) -> None:
        self.refused[refused.code] += 1
        reason = signing.refusal_reason(refused)
        LOG.error("Refused a message on %s: %s", delivery.queue.name, reason)
        self._dead_letter(delivery, reason, code=refused.code)

    def _permitted(self, delivery: Delivery, request: dict[str, Any]) -> bool:
        """Whether the request's signer may call its method; refuses it if not."""
        signer = request["signed"][0]
        if self.callers is None or not signer:
            return True
        allowed = self.callers.get(request["method"], frozenset())
        if signer in allowed:
            return True
        error = NotPermitted(topic=self.target.topic, method=request["method"], role=signer,
                             allowed=", ".join(sorted(allowed)) or "no role")
        self._refuse(delivery, signing.Refused("wrong-role", error.message))
        if request["kind"] == "call":
            self._send_reply(delivery, request, error=error)
        return False

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
        if method is not None and not self._permitted(delivery, request):
            return
        if method is None:
            error: Exception = UnknownMethod(topic=self.target.topic, method=method_name,
                                             known=", ".join(sorted(self.methods)) or "none")
            if is_call:
                self._reply(delivery, request, error=error)
            else:
                self._dead_letter(delivery, error.message, code="unknown-method")
            return
        started = time.perf_counter()
        try:
            result = self._run(method, ctx, request)
        except _LeftForRedelivery:
            LOG.info("Left %s of %s (message %s) unacknowledged for redelivery: stopping while "
                     "the database was unreachable", request["kind"], method_name, request["msg_id"])
            return
        except Exception as exc:  # noqa: BLE001 - goes back to the caller or is retried
            METRICS.handled_message(request["kind"], self.target.topic, method_name, False,
                                    time.perf_counter() - started)
            if isinstance(exc, TypeError):
                exc = argument_error(method, method_name, request["args"], exc, ctx)
            if is_call:
                log = LOG.info if isinstance(exc, FabricError) else LOG.exception
                log("%s raised %s: %s", method_name, type(exc).__name__, exc)
                self._reply(delivery, request, error=exc)
            else:
                self._failed_cast(delivery, request, exc)
            return
        seconds = time.perf_counter() - started
        if is_call:
            self._reply(delivery, request, result=result)
        else:
            delivery.ack()
        # After the reply: a 1-caller call loop waits for nothing but the reply.
        METRICS.handled_message(request["kind"], self.target.topic, method_name, True, seconds)

    def _run(self, method: Callable[..., Any], ctx: RequestContext, request: dict[str, Any]) -> Any:
        """The handler's result, run again while the database is unreachable (see the module docstring)."""
        deadline = request["deadline"]
        try:
            return retry_on_disconnect(
                lambda: method(ctx, **request["args"]), pause=self._pause,
                give_up_after=None if deadline is None else max(0.0, deadline - time.time()),
                what=lambda: f"{request['kind']} {request['method']} (message {request['msg_id']})")
        except DatabaseUnavailable:
            if self._stopping.ready() and request["kind"] != "call":
                raise _LeftForRedelivery() from None
            raise

    def _pause(self, seconds: float) -> bool:
        """Wait ``seconds`` for the database; True (give up) once the server is stopping."""
        return self._stopping.wait(seconds) is True

    # -- answering -------------------------------------------------------------------
    def _reply(self, delivery: Delivery, request: dict[str, Any], result: Any = None,
               error: Exception | None = None) -> None:
        self._send_reply(delivery, request, result, error)
        delivery.ack()

    def _send_reply(self, delivery: Delivery, request: dict[str, Any], result: Any = None,
                    error: Exception | None = None) -> None:
        reply_to = delivery.reply_to or request["reply_to"]
        msg_id = request["msg_id"]
        # In the request's envelope version: the caller may be of the previous release.
        if error is None:
            body = envelope.encode_reply(msg_id, result=result, version=request["v"])
        else:
            data, trace = errors.to_wire(error)
            body = envelope.encode_reply(msg_id, error=data, traceback=trace, version=request["v"])
        signer, kid = request["signed"]
        if signer:  # the reply goes back signed for the request's pair, with its key
            body = signing.keyring_of(self.transport).sign(signing.REPLY, body, signer, self.role, kid)
        if reply_to:
            try:
                self.transport.publish("", reply_to, body, message_id=new_message_id(),
                                       mandatory=False, correlation_id=msg_id, timeout=5)
            except MessagingError as exc:
                # The reply cannot go to this caller's connection any more: it failed there.
                LOG.warning("Reply to %s (message %s) not sent: %s", request["method"], msg_id, exc)

    def _failed_cast(self, delivery: Delivery, request: dict[str, Any], exc: Exception) -> None:
        attempt = int(delivery.headers.get(ATTEMPT_HEADER, 1) or 1)
        deliveries = attempt + delivery.delivery_count
        description = f"{request['method']} failed {deliveries} time(s), last with {type(exc).__name__}: {exc}"
        if deliveries >= self.max_deliveries or isinstance(exc, Invalid):
            LOG.error("Giving up on cast %s (message %s): %s", request["method"],
                      request["msg_id"], description)
            self._dead_letter(delivery, description, code="invalid" if isinstance(exc, Invalid) else "failed")
            return
        LOG.warning("Cast %s (message %s) will be retried: %s", request["method"], request["msg_id"],
                    description, exc_info=not isinstance(exc, FabricError))
        queue = delivery.queue
        headers = dict(delivery.headers)
        headers[ATTEMPT_HEADER] = attempt + 1
        headers.pop("x-delivery-count", None)
        body = delivery.body
        signer, kid = request["signed"]
        if signer:
            # Signed afresh, as its signer, with the pair key it was checked with: the retry
            # waits at the back of the queue, and under its first signature that wait counted
            # against [signing] max_age (a 1,000-host storm's backlog refused 25 retried builds
            # as stale). A pair key signs only towards this server's own role, which its check
            # already trusts, so this lets the server vouch for nothing it could not before.
            body = signing.keyring_of(self.transport).sign(signing.REQUEST, signing.strip(body),
                                                           signer, self.role, kid)
        try:
            self.transport.publish("", queue.name, body, message_id=new_message_id(),
                                   persistent=True, mandatory=True, headers=headers,
                                   wait_confirm=True, timeout=30)
        except (MessagingError, Returned) as error:
            LOG.error("Could not re-queue %s (message %s): %s; the broker will redeliver it",
                      request["method"], request["msg_id"], error)
            return
        delivery.ack()

    def _dead_letter(self, delivery: Delivery, reason: str, *, code: str) -> None:
        """Move the message to ``<queue>.dead`` with ``reason``, then ack it; counted by ``code``."""
        METRICS.dead_lettered(self.target.topic, code)
        queue = delivery.queue
        if not queue.durable:
            LOG.error("Dropped a message from %s (fanout queues have no dead-letter queue): %s",
                      queue.name, reason)
            self.fanout_dropped[code] += 1
            self.fanout_dropped_at = utcnow()
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
