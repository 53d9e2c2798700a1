"""The calling side: :class:`RPCClient` (cast, call, call_async, fanout cast).

Promises:

* ``cast`` publishes a persistent message to the target's durable queue with a
  publisher confirm and returns; the first cast to a routing key waits for its
  confirm, so a target no queue is bound for raises
  :class:`~fabric.exception.Unroutable` at once; later casts to a key known to be
  routable are pipelined (the transport tracks their confirms, re-sends them after a
  reconnect, and logs any the broker returns or refuses; a return also forgets the
  route, so the next cast to it checks again and raises). ``transport.flush()``
  waits for every outstanding confirm. Delivery is at least once: a re-sent cast may
  arrive twice, so handlers are idempotent.
* ``call`` is ``call_async(...).wait()``. Its deadline (``timeout``, else the
  client's, else ``rpc.call_timeout``) travels in the message; when it passes,
  :class:`~fabric.exception.MessagingTimeout` names target, method and message id.
  A call to an unroutable target fails at once with ``Unroutable``. A remote
  registered ``FabricError`` is raised as itself, anything else as ``RemoteError``.
* every request is signed (:mod:`fabric.rpc.signing`) as a role the callee accepts,
  and a reply is taken only with a valid signature of the same pair of roles: a reply
  that fails the check is dropped (logged, counted in ``ReplyRouter.refused``) and the
  call goes on waiting for the real one;
* if the broker connection breaks while a call waits, the call fails with
  :class:`~fabric.exception.MessagingError` saying it may or may not have run, unless
  it was made inside an :func:`idempotent` function (or with
  ``prepare(idempotent=True)``): then it is sent again, once per reconnect, until its
  deadline.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import heapq
import itertools
import logging
import math
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import eventlet
from eventlet import hubs

from fabric import context as fabric_context
from fabric.context import RequestContext
from fabric.exception import Invalid, MessagingError, MessagingTimeout, Unroutable
from fabric.rpc import envelope, errors, signing
from fabric.rpc.deferred import Deferred
from fabric.rpc.metrics import RPC as METRICS
from fabric.rpc.target import Target
from fabric.rpc.transport import ConnectionLost, Returned, Transport

LOG = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

_IDEMPOTENT: contextvars.ContextVar[bool] = contextvars.ContextVar("fabric_rpc_idempotent", default=False)
#: Inside :func:`confirmed`: the seconds a cast waits for its broker confirm.
_CONFIRMED: contextvars.ContextVar[float | None] = contextvars.ContextVar("fabric_rpc_confirmed", default=None)

_ids = itertools.count(1)
_ID_PREFIX = f"{uuid.uuid4().hex[:12]}-{os.getpid()}-"


def new_message_id() -> str:
    """A message id unique across processes (random prefix per process plus a counter)."""
    return f"{_ID_PREFIX}{next(_ids)}"


def idempotent(fn: F) -> F:
    """Mark a function safe to repeat: calls it makes are re-sent after a broker reconnect.

    Put it on the ``rpcapi`` method whose remote side can run twice without harm
    (reads, or work guarded by a request token); on a manager method it documents that
    the handler is safe to redeliver.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        token = _IDEMPOTENT.set(True)
        try:
            return fn(*args, **kwargs)
        finally:
            _IDEMPOTENT.reset(token)

    wrapper.fabric_idempotent = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def confirmed(timeout: float) -> Iterator[None]:
    """Casts made inside wait for the broker's confirm (at most ``timeout`` seconds) before
    returning, and raise MessagingError when it does not come (the outbox's relay needs it:
    :mod:`fabric.rpc.outbox`)."""
    token = _CONFIRMED.set(timeout)
    try:
        yield
    finally:
        _CONFIRMED.reset(token)


def _context_dict(ctx: RequestContext | None) -> dict[str, Any]:
    if ctx is None:
        ctx = fabric_context.current() or RequestContext()
    elif not isinstance(ctx, RequestContext):
        raise Invalid(reason=f"context {ctx!r}: a fabric.context.RequestContext is accepted")
    return {"request_id": ctx.request_id, "user_id": ctx.user_id, "project_id": ctx.project_id,
            "roles": list(ctx.roles), "is_admin": ctx.is_admin}


def _signed(transport: Transport, target: Target, method: str, body: bytes) -> tuple[str, bytes]:
    """(signer role, wire bytes) of an encoded request to ``target``."""
    keyring = signing.keyring_of(transport)
    if not keyring.enabled:
        return "", body
    signer = keyring.signing_role(target.topic, method)
    return signer, keyring.sign(signing.REQUEST, body, signer, target.topic)


class _PendingCall:
    __slots__ = ("deferred", "target", "method", "timeout", "armed", "idempotent", "resend", "signer", "sent_at")

    def __init__(self, deferred: Deferred, target: Target, method: str, timeout: float,
                 idempotent: bool, resend: Callable[[], None], signer: str) -> None:
        self.deferred = deferred
        self.target = target
        self.method = method
        self.timeout = timeout
        #: Its timeout has been started (:meth:`ReplyRouter.arm`).
        self.armed = False
        self.idempotent = idempotent
        self.resend = resend
        #: The role the request was signed as: its reply must be signed for the same pair.
        self.signer = signer
        self.sent_at = time.monotonic()


class ReplyRouter:
    """Matches replies to the calls of one transport (one per process)."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.pending: dict[str, _PendingCall] = {}
        #: (deadline on the hub's clock, message id) of the calls armed (see :meth:`arm`): no
        #: reference to the call, so an answered one is freed at once (message ids are unique).
        self._deadlines: list[tuple[float, str]] = []
        self._timer: Any = None
        self._timer_at = math.inf
        #: Replies dropped for a bad signature, by reason code.
        self.refused: Counter[str] = Counter()
        transport.on_reply = self.on_reply
        transport.on_returned = self.on_returned
        transport.on_connection_lost = self.on_connection_lost

    @classmethod
    def of(cls, transport: Transport) -> ReplyRouter:
        """The transport's router, made (and hooked to its callbacks) on first use."""
        if transport.reply_router is None:
            transport.reply_router = cls(transport)
        return transport.reply_router

    def register(self, msg_id: str, call: _PendingCall) -> None:
        """Expect the reply to ``msg_id`` (before the request is sent) and start its timeout."""
        self.pending[msg_id] = call
        self.arm(msg_id, call)

    def arm(self, msg_id: str, call: _PendingCall) -> None:
        """Start the timeout of ``call`` if it still waits for its reply and has none yet.

        One hub timer per router, for the earliest deadline of the calls armed (kept in a
        heap), instead of a timer per call scheduled and cancelled: with calls of one
        timeout each new deadline is the latest, so a call costs a heap push. Entries of
        calls answered meanwhile are dropped when they come first, or all at once when
        they outnumber the waiting calls."""
        if call.armed or self.pending.get(msg_id) is not call:
            return
        call.armed = True
        hub = hubs.get_hub()
        at = hub.clock() + call.timeout
        deadlines = self._deadlines
        if len(deadlines) > 2 * len(self.pending) + 64:
            pending = self.pending
            deadlines[:] = [entry for entry in deadlines if entry[1] in pending]
            heapq.heapify(deadlines)
        heapq.heappush(deadlines, (at, msg_id))
        if at < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = at
            self._timer = hub.schedule_call_global(call.timeout, self._expire)

    def _expire(self) -> None:
        """On the hub at the earliest deadline: time out every call past its own, then
        wait for the next."""
        self._timer, self._timer_at = None, math.inf
        hub = hubs.get_hub()
        now = hub.clock()
        deadlines, pending = self._deadlines, self.pending
        while deadlines:
            at, msg_id = deadlines[0]
            waiting = msg_id in pending
            if waiting and at > now:
                self._timer_at = at
                self._timer = hub.schedule_call_global(at - now, self._expire)
                return
            heapq.heappop(deadlines)
            if waiting:
                self._timed_out(msg_id)

    def _finish(self, msg_id: str) -> _PendingCall | None:
        return self.pending.pop(msg_id, None)

    def _timed_out(self, msg_id: str) -> None:
        call = self.pending.pop(msg_id, None)
        if call is not None:
            call.deferred.fail(MessagingTimeout(timeout=call.timeout, target=str(call.target),
                                                method=call.method, msg_id=msg_id))

    def on_reply(self, body: bytes, correlation_id: str | None) -> None:
        try:
            signer, verifier, _, body = signing.keyring_of(self.transport).check(signing.REPLY, body)
            call = self.pending.get(correlation_id) if correlation_id else None
            if call is not None and signer and (signer, verifier) != (call.signer, call.target.topic):
                raise signing.Refused("wrong-role", f"a reply signed for {signer}>{verifier} to a call "
                                      f"from {call.signer} to {call.target.topic}")
        except signing.Refused as refused:
            self.refused[refused.code] += 1
            LOG.error("Dropped a reply (correlation id %s): %s", correlation_id, signing.refusal_reason(refused))
            return
        try:
            reply = envelope.decode_reply(body)
        except envelope.MalformedMessage as exc:
            call = self._finish(correlation_id) if correlation_id else None
            if call is None:
                LOG.error("Dropped a malformed reply: %s", exc)
            else:
                call.deferred.fail(exc)
            return
        call = self._finish(reply["msg_id"])
        if call is None:
            LOG.debug("Reply to %s arrived after its caller gave up", reply["msg_id"])
            return
        METRICS.call_answered(call.target.topic, call.method, time.monotonic() - call.sent_at)
        if reply["ok"]:
            call.deferred.resolve(reply["result"])
        else:
            call.deferred.fail(errors.from_wire(reply["error"] or {}, reply["traceback"]))

    def on_returned(self, msg_id: str, reason: str) -> None:
        call = self._finish(msg_id)
        if call is not None:
            call.deferred.fail(Unroutable(target=str(call.target), method=call.method))

    def on_connection_lost(self, error: Exception) -> None:
        for msg_id in list(self.pending):
            call = self.pending[msg_id]
            if call.idempotent:
                LOG.warning("Re-sending idempotent call %s to %s (message %s) after: %s",
                            call.method, call.target, msg_id, error)
                eventlet.spawn_n(self._resend, msg_id, call)
                continue
            self._finish(msg_id)
            call.deferred.fail(MessagingError(
                reason=f"the broker connection was lost while waiting for the reply from "
                f"{call.target} to {call.method} (message {msg_id}): it may or may not have "
                f"run ({error})"))

    def _resend(self, msg_id: str, call: _PendingCall) -> None:
        try:
            call.resend()
        except Exception as exc:  # noqa: BLE001 - the call fails with the reason
            if self._finish(msg_id) is not None:
                call.deferred.fail(exc if isinstance(exc, MessagingError) else MessagingError(
                    reason=f"re-sending {call.method} to {call.target} failed: {exc}"))


@dataclasses.dataclass(frozen=True)
class _Options:
    timeout: float | None
    idempotent: bool


class RPCClient:
    """Sends casts and calls to one :class:`Target`; see the module docstring.

    Cheap to create and to :meth:`prepare`; share the transport, not the client.
    """

    def __init__(self, transport: Transport, target: Target, timeout: float | None = None,
                 idempotent: bool = False) -> None:
        if timeout is not None and timeout <= 0:
            raise Invalid(reason=f"timeout {timeout!r}: a number of seconds > 0 is accepted")
        self.transport = transport
        self.target = target
        self._options = _Options(timeout, idempotent)

    def prepare(self, server: str | None | object = ..., fanout: bool | None = None,
                timeout: float | None = None, idempotent: bool | None = None) -> RPCClient:
        """A copy of this client with a different server, fanout, timeout or idempotence."""
        changes: dict[str, Any] = {}
        if server is not ...:
            changes["server"] = server
        if fanout is not None:
            changes["fanout"] = fanout
        target = self.target.replace(**changes) if changes else self.target
        return RPCClient(self.transport, target,
                         timeout if timeout is not None else self._options.timeout,
                         self._options.idempotent if idempotent is None else idempotent)

    # -- cast -----------------------------------------------------------------
    def cast(self, ctx: RequestContext | None, method: str, **kwargs: Any) -> None:
        """Send ``method(ctx, **kwargs)`` to one worker of the target (or all: fanout).

        Raises :class:`~fabric.exception.Unroutable` if no queue takes it and
        ``MalformedMessage`` if an argument is not JSON-serialisable.
        """
        target = self.target
        msg_id = new_message_id()
        transport = self.transport
        body = _signed(transport, target, method, envelope.encode_request(
            "cast", msg_id, method, kwargs, _context_dict(ctx), None, None, str(target),
            transport.settings.envelope_version))[1]
        if target.fanout:
            exchange, routing_key, kind = target.fanout_exchange, target.topic, "fanout"
        else:
            exchange, routing_key, kind = target.exchange or transport.exchange, target.routing_key, None
        route = (exchange, routing_key)
        check = route not in transport.routable
        confirm_timeout = _CONFIRMED.get()
        try:
            transport.publish(exchange, routing_key, body, message_id=msg_id, persistent=True,
                              mandatory=True, wait_confirm=check or confirm_timeout is not None,
                              exchange_type=kind,
                              timeout=confirm_timeout or self._options.timeout or transport.settings.call_timeout)
        except Returned:
            raise Unroutable(target=str(target), method=method) from None
        METRICS.sent_message("cast", target.topic, method)
        if check:
            transport.routable.add(route)

    def fanout_cast(self, ctx: RequestContext | None, method: str, **kwargs: Any) -> None:
        """``prepare(fanout=True).cast(...)``: to every worker of the topic."""
        self.prepare(fanout=True).cast(ctx, method, **kwargs)

    # -- call -----------------------------------------------------------------
    def call_async(self, ctx: RequestContext | None, method: str, *,
                   timeout: float | None = None, **kwargs: Any) -> Deferred:
        """Send a call; the :class:`Deferred` gets the result, the remote error,
        ``Unroutable`` or ``MessagingTimeout``."""
        target = self.target
        if target.fanout:
            raise Invalid(reason=f"call to {target}: calls go to one worker, not fanout")
        timeout = timeout or self._options.timeout or self.transport.settings.call_timeout
        if timeout <= 0:
            raise Invalid(reason=f"timeout {timeout!r}: a number of seconds > 0 is accepted")
        transport = self.transport
        router = ReplyRouter.of(transport)
        reply_to = transport.reply_address
        msg_id = new_message_id()
        deadline = time.time() + timeout
        signer, body = _signed(transport, target, method, envelope.encode_request(
            "call", msg_id, method, kwargs, _context_dict(ctx), deadline, reply_to, str(target),
            transport.settings.envelope_version))
        deferred = Deferred(f"call {method} to {target}", wake=transport.wake_soon)
        exchange, routing_key = target.exchange or transport.exchange, target.routing_key

        def send() -> None:
            remaining = deadline - time.time()
            if remaining <= 0:
                return  # the timer fails it
            transport.publish(exchange, routing_key, body, message_id=msg_id, mandatory=True,
                              reply_to=transport.reply_address, correlation_id=msg_id,
                              timeout=remaining)

        idem = self._options.idempotent or _IDEMPOTENT.get()
        call = _PendingCall(deferred, target, method, timeout, idem, send, signer)
        # Expected before it is sent (sending may wait on the hub, where the reply can
        # come); its timeout is started after: the caller waits for the reply then
        # anyway, while before the send it delayed the request (1-caller call loop).
        router.pending[msg_id] = call
        try:
            send()
            METRICS.sent_message("call", target.topic, method)
        except ConnectionLost as exc:
            if router._finish(msg_id) is not None:
                deferred.fail(exc)
        except Exception:
            router._finish(msg_id)
            raise
        router.arm(msg_id, call)
        return deferred

    def call(self, ctx: RequestContext | None, method: str, *, timeout: float | None = None,
             **kwargs: Any) -> Any:
        """Call ``method(ctx, **kwargs)`` on one worker and return its result.

        Raises the remote error (as itself if registered, else ``RemoteError``),
        ``Unroutable``, ``MessagingTimeout``, or ``MessagingError`` on a lost connection.
        """
        return self.call_async(ctx, method, timeout=timeout, **kwargs).wait()
