"""A result that arrives later: what :meth:`RPCClient.call_async` returns.

Promises:

* exactly one outcome: the first :meth:`Deferred.resolve` or :meth:`Deferred.fail`
  wins, later ones are ignored;
* callbacks and errbacks run on the eventlet hub in a green thread of their own,
  never inside the code that delivered the outcome (which may be a connection's
  reader, or a ``publish`` that read a reply while holding the connection), so a
  callback may itself make RPC calls; each runs once, in the order added, also
  when added after the outcome;
* an exception raised by a callback is logged, never lost silently, and does not
  stop the others.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import eventlet
from eventlet.event import NOT_USED, Event

LOG = logging.getLogger(__name__)

_PENDING = object()


class _WakingEvent(Event):
    """eventlet's Event whose waiters are woken through ``wake(switch)`` instead of a hub
    timer each: a transport's ``wake_soon``, which on a link's reader (a reply arriving)
    switches to the caller when the reader next waits (fabric.rpc.amqp_link.wake_soon)."""

    def __init__(self, wake: Callable[[Callable[[], Any]], None]) -> None:
        super().__init__()
        self._wake = wake

    def send(self, result: Any = None, exc: Any = None) -> None:
        assert self._result is NOT_USED, "Trying to re-send() an already-triggered event."
        self._result = result
        self._exc = exc if exc is None or isinstance(exc, tuple) else (exc,)
        for waiter in self._waiters:  # a waiter gone by then (timed out) is not switched to
            self._wake(functools.partial(self._do_send, self._result, self._exc, waiter))


class Deferred:
    """The future outcome of one call."""

    __slots__ = ("_event", "_result", "_error", "_callbacks", "_errbacks", "description")

    def __init__(self, description: str = "", wake: Callable[[Callable[[], Any]], None] | None = None) -> None:
        """``wake``: how a waiter is woken (a transport's ``wake_soon``); the hub's next turn by default."""
        self._event = Event() if wake is None else _WakingEvent(wake)
        self._result: Any = _PENDING
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[Any], Any]] = []
        self._errbacks: list[Callable[[BaseException], Any]] = []
        self.description = description

    @property
    def done(self) -> bool:
        return self._result is not _PENDING or self._error is not None

    def resolve(self, result: Any) -> bool:
        """Set the result; False if an outcome was already set."""
        if self.done:
            return False
        self._result = result
        self._event.send(True)
        if self._callbacks:
            eventlet.spawn_n(self._run, self._callbacks, result)
        self._errbacks = []
        return True

    def fail(self, error: BaseException) -> bool:
        """Set the error; False if an outcome was already set."""
        if self.done:
            return False
        self._error = error
        self._event.send(True)
        if self._errbacks:
            eventlet.spawn_n(self._run, self._errbacks, error)
        self._callbacks = []
        return True

    def add_callback(self, fn: Callable[[Any], Any]) -> Deferred:
        """Run ``fn(result)`` on the hub when (or if already) the call succeeds."""
        if self._result is not _PENDING:
            eventlet.spawn_n(self._run, [fn], self._result)
        elif self._error is None:
            self._callbacks.append(fn)
        return self

    def add_errback(self, fn: Callable[[BaseException], Any]) -> Deferred:
        """Run ``fn(error)`` on the hub when (or if already) the call fails."""
        if self._error is not None:
            eventlet.spawn_n(self._run, [fn], self._error)
        elif self._result is _PENDING:
            self._errbacks.append(fn)
        return self

    def wait(self, timeout: float | None = None) -> Any:
        """Block this green thread until the outcome; return the result or raise the error.

        With ``timeout``, raises :class:`TimeoutError` if nothing arrived in time (the
        outcome may still come later; a call's own deadline fails it with
        MessagingTimeout).
        """
        if not self.done:
            self._event.wait(timeout)
            if not self.done:
                raise TimeoutError(f"{self.description or 'the deferred'} has no outcome "
                                   f"after {timeout}s")
        if self._error is not None:
            raise self._error
        return self._result

    def _run(self, functions: list[Callable[[Any], Any]], value: Any) -> None:
        for fn in functions:
            try:
                fn(value)
            except Exception:  # noqa: BLE001 - a callback's failure must not hide others
                LOG.exception("Callback %r of %s failed", fn, self.description or "a call")
