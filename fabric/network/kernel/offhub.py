"""Run blocking kernel work off the eventlet hub, inside a chosen network namespace.

pyroute2's 0.9 line drives netlink with asyncio and misbehaves under eventlet,
so every netlink call, sysctl write and short kernel-facing subprocess runs in
a *native* thread. There is one such thread per network namespace: at start it
joins the namespace with ``setns(2)`` (a per-thread operation for network
namespaces), so sockets it opens, ``/proc/sys/net`` files it writes and children
it forks all live in that namespace. Callers wait for the result without
blocking the hub: through :func:`eventlet.tpool.execute` when the process is
monkey-patched, directly otherwise.

This is the only module that knows about threads and namespaces; swap it to
change the concurrency model.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from typing import Any, TypeVar

from eventlet import patcher

from fabric import exception

_threading = patcher.original("threading")
_queue = patcher.original("queue")

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"

T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)


class _Result:
    """A one-shot result slot built on native primitives (safe across the hub)."""

    def __init__(self) -> None:
        self._done = _threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None

    def set(self, value: Any = None, error: BaseException | None = None) -> None:
        self._value, self._error = value, error
        self._done.set()

    def get(self) -> Any:
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value


def _join_namespace(netns: str) -> None:
    """Move the calling native thread into the named network namespace."""
    path = os.path.join(NETNS_RUN_DIR, netns)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise exception.NamespaceNotFound(netns=netns) from None
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise exception.KernelError(op="setns", target=netns, errno=errno,
                                        reason=os.strerror(errno))
    finally:
        os.close(fd)


class NamespaceThread:
    """One native thread living in one network namespace, running work in order.

    Work items run one at a time, in submission order, so callers never race
    each other on the same kernel objects. ``netns=None`` means the process's
    own namespace.
    """

    def __init__(self, netns: str | None) -> None:
        self.netns = netns
        self._work: Any = _queue.SimpleQueue()
        self._local: dict[str, Any] = {}  # per-thread resources (the netlink socket)
        started = _Result()
        self._thread = _threading.Thread(target=self._loop, args=(started,),
                                         name=f"netns-{netns or 'self'}", daemon=True)
        self._thread.start()
        self._wait(started)  # raises NamespaceNotFound here, in the caller

    @staticmethod
    def _wait(result: _Result) -> Any:
        if patcher.is_monkey_patched("thread"):
            from eventlet import tpool

            return tpool.execute(result.get)
        return result.get()

    def _loop(self, started: _Result) -> None:
        try:
            if self.netns is not None:
                _join_namespace(self.netns)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            started.set(error=exc)
            return
        started.set()
        while True:
            item = self._work.get()
            if item is None:
                break
            result, fn, args, kwargs = item
            try:
                result.set(fn(self._local, *args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                result.set(error=exc)
        for resource in self._local.values():
            close = getattr(resource, "close", None)
            if close is not None:
                close()

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(local, *args, **kwargs)`` in the namespace thread; return or raise its outcome.

        ``local`` is a dict the function may keep per-thread resources in.
        """
        if not self._thread.is_alive():
            raise exception.KernelError(op="run", target=self.netns or "self", errno=0,
                                        reason="the namespace thread has stopped")
        result = _Result()
        self._work.put((result, fn, args, kwargs))
        return self._wait(result)

    def stop(self) -> None:
        """Close the thread's resources and end it (idempotent)."""
        if self._thread.is_alive():
            self._work.put(None)
            self._thread.join(timeout=10)


_threads: dict[str | None, NamespaceThread] = {}
_threads_lock = _threading.Lock()


def thread_for(netns: str | None) -> NamespaceThread:
    """The (shared) thread for a namespace, started on first use.

    Raises NamespaceNotFound when the namespace does not exist.
    """
    with _threads_lock:
        worker = _threads.get(netns)
        if worker is None or not worker._thread.is_alive():
            worker = _threads[netns] = NamespaceThread(netns)
        return worker


def release(netns: str | None) -> None:
    """Stop the thread of a namespace (call before deleting the namespace)."""
    with _threads_lock:
        worker = _threads.pop(netns, None)
    if worker is not None:
        worker.stop()
