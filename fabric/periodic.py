"""Periodic tasks: manager methods that run every so often on green threads.

Mark a manager method with :func:`periodic_task`; the worker's
:class:`~fabric.service.Service` finds the marked methods and runs each on a
green thread of its own, called as ``method(ctx)`` with an admin context that
has a fresh request id per run (so each run's log lines can be followed).

A task that raises is logged with its traceback and runs again at its next
turn: an exception never ends the loop. A run that takes longer than the
spacing is followed by the next run at once, never by overlapping runs.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import eventlet
import eventlet.event

from fabric import context

LOG = logging.getLogger(__name__)

_MARK = "_fabric_periodic"

#: A spacing is seconds, or a function of the manager returning seconds
#: (to read it from the manager's settings).
Spacing = float | Callable[[Any], float]


@dataclasses.dataclass(frozen=True)
class _TaskSpec:
    spacing: Spacing
    run_immediately: bool


def periodic_task(spacing: Spacing, *, run_immediately: bool = False) -> Callable:
    """Mark a manager method ``method(self, ctx)`` to run every ``spacing`` seconds.

    ``spacing`` is a number of seconds, or a function of the manager giving it
    (e.g. ``lambda self: self.settings.compute.power_sync_interval``). With
    ``run_immediately`` the first run happens at start instead of one spacing
    later.
    """

    def mark(method: Callable) -> Callable:
        setattr(method, _MARK, _TaskSpec(spacing, run_immediately))
        return method

    return mark


@dataclasses.dataclass
class PeriodicTask:
    """One periodic task bound to its manager, with counts for observers."""

    name: str
    method: Callable[[context.RequestContext], Any]
    spacing: float
    run_immediately: bool
    runs: int = 0
    failures: int = 0


def is_periodic_task(member: Any) -> bool:
    """True for a method marked with :func:`periodic_task`."""
    return getattr(member, _MARK, None) is not None


def periodic_tasks(manager: Any) -> list[PeriodicTask]:
    """The periodic tasks of a manager, in name order.

    Raises ValueError naming the task when its spacing is not a positive number.
    """
    tasks = []
    for name, member in inspect.getmembers(type(manager), callable):
        spec = getattr(member, _MARK, None)
        if spec is None:
            continue
        spacing = spec.spacing(manager) if callable(spec.spacing) else spec.spacing
        if not isinstance(spacing, (int, float)) or spacing <= 0:
            raise ValueError(f"periodic task {type(manager).__name__}.{name} has spacing "
                             f"{spacing!r}; a positive number of seconds is required")
        tasks.append(PeriodicTask(name, getattr(manager, name), float(spacing), spec.run_immediately))
    return tasks


class PeriodicRunner:
    """Runs a manager's periodic tasks until stopped."""

    def __init__(self, manager: Any, limiter: AbstractContextManager | None = None) -> None:
        """``limiter``: entered around each run, shared by the runners of a process whose runs
        together must stay within what its database pool serves (fake hosts)."""
        self.tasks = periodic_tasks(manager)
        self._limiter = limiter if limiter is not None else nullcontext()
        self._stopping = eventlet.event.Event()
        self._threads: list[eventlet.greenthread.GreenThread] = []

    def start(self) -> None:
        for task in self.tasks:
            LOG.info("Periodic task %s runs every %gs", task.name, task.spacing)
            self._threads.append(eventlet.spawn(self._loop, task))

    def request_stop(self) -> None:
        """Schedule no further runs (a run in progress goes on)."""
        if not self._stopping.ready():
            self._stopping.send(True)

    def stop(self, timeout: float | None = None) -> None:
        """Stop scheduling runs; wait up to ``timeout`` for a run in progress to end.

        A run still going at the deadline is killed (logged as a warning).
        """
        self.request_stop()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                with eventlet.Timeout(remaining):
                    thread.wait()
            except eventlet.Timeout:
                LOG.warning("A periodic task is still running after %ss; abandoning it", timeout)
                thread.kill()
        self._threads.clear()

    def _idle(self, seconds: float) -> bool:
        """Wait up to ``seconds``; True when stopped meanwhile."""
        return self._stopping.wait(seconds) is True

    def _loop(self, task: PeriodicTask) -> None:
        if not task.run_immediately and self._idle(task.spacing):
            return
        while not self._stopping.ready():
            started = time.monotonic()
            self._run_once(task)
            if self._idle(max(0.0, task.spacing - (time.monotonic() - started))):
                return

    def _run_once(self, task: PeriodicTask) -> None:
        ctx = context.RequestContext.admin()
        token = ctx.activate()
        try:
            with self._limiter:
                task.method(ctx)
        except Exception:
            task.failures += 1
            LOG.exception("Periodic task %s failed; it runs again in %gs", task.name, task.spacing)
        finally:
            task.runs += 1
            context.reset(token)
