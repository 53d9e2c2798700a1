"""A worker service: one manager served on its queues, registered and heartbeating.

A :class:`Service` binds a manager to an :class:`~fabric.rpc.RPCServer`
consuming the topic's three queues (``<topic>``, ``<topic>.<host>`` and the
fanout queue), registers itself in the services registry
(:mod:`fabric.servicegroup`) with its host, address, version and
capabilities, heartbeats every ``service.report_interval`` seconds (in one
statement with the other services of its process on the same database:
:class:`Heartbeats`; a heartbeat also carries the fanout messages its server
dropped, or a fake host's process dropped for it (:mod:`fabric.sim.fanout`), by
reason code, when they changed since the last), runs
the manager's periodic tasks and the relay of its cast outbox, if it has one. :meth:`Service.stop` stops consuming;
:meth:`Service.wait` lets in-flight handlers finish (bounded) and releases
what the service opened. :func:`serve` runs services until SIGTERM or SIGINT.
"""

from __future__ import annotations

import datetime
import logging
import os
import signal
import socket
import time
from collections import Counter
from typing import Any

import eventlet
import eventlet.event
import eventlet.hubs
import eventlet.semaphore

import fabric
from fabric import config, heap, rpc, servicegroup
from fabric.context import RequestContext
from fabric.db import Database
from fabric.periodic import PeriodicRunner

LOG = logging.getLogger(__name__)


def host_address(host: str) -> str:
    """The address ``host`` resolves to, or ``""`` when it does not resolve."""
    try:
        return socket.gethostbyname(host)
    except OSError:
        return ""


class Service:
    """One worker: a manager, its RPC server, its heartbeat and its periodic tasks.

    ``transport`` and ``db`` are shared when given (``fabric-all`` runs every
    worker on one of each) and otherwise created from ``settings`` and
    released by :meth:`wait`.
    """

    def __init__(self, settings: config.Settings, binary: str, topic: str, manager: Any,
                 host: str | None = None, transport: Any = None, db: Database | None = None,
                 *, address: str | None = None, consume: tuple[str, ...] = rpc.server.QUEUE_KINDS,
                 limiter: Any = None, periodic_limiter: Any = None) -> None:
        self.settings = settings
        self.binary = binary
        self.topic = topic
        self.manager = manager
        self.host = host or settings.default.host
        if address is None:
            address = settings.service.advertise_address or host_address(self.host)
        self.address = address
        #: The topic's queues this worker consumes (:class:`~fabric.rpc.RPCServer`'s ``consume``):
        #: a fake host of :mod:`fabric.sim.fake_hosts` leaves the fanout to its process.
        self.consume = consume
        #: Shared with the process's other workers of its topic (:class:`~fabric.rpc.RPCServer`'s
        #: ``limiter``), and with all of its workers (:class:`~fabric.periodic.PeriodicRunner`'s):
        #: the fake hosts of one process stay within its database pool together.
        self.limiter = limiter
        self.periodic_limiter = periodic_limiter
        self.transport = transport
        self._owns_transport = transport is None
        self.db = db
        self._owns_db = db is None
        self.server: Any = None
        #: The process's consumer of this worker's fanout when its server does not consume it
        #: (a fake host's :class:`fabric.sim.fanout.HostFanout`, set by :mod:`fabric.sim.fake_hosts`):
        #: what it dropped for this host joins the server's in the heartbeat (:meth:`fanout_drops`).
        self.fanout: Any = None
        self.outbox: Any = None
        self.periodic = PeriodicRunner(manager, periodic_limiter)
        self._stopping = eventlet.event.Event()
        self._heartbeats: Heartbeats | None = None
        self._started = False
        self._released = False
        self._reported_capabilities: dict[str, Any] = {}
        #: The server's fanout drops as the registry last recorded them (none at registration).
        self._reported_fanout_drops: dict[str, int] = {}
        if not callable(getattr(manager, "describe", None)):
            # Every worker answers describe, even one whose manager predates the base class.
            manager.describe = self.describe
        manager.service = self

    def __repr__(self) -> str:
        return f"<Service {self.binary} topic={self.topic} host={self.host}>"

    # --- what the registry records ------------------------------------------

    def capabilities(self) -> dict[str, Any]:
        """The manager's capabilities (``{}`` when it declares none)."""
        method = getattr(self.manager, "capabilities", None)
        return dict(method()) if callable(method) else {}

    def describe(self, ctx: RequestContext | None = None) -> dict[str, Any]:
        """Binary, topic, host, address, version and capabilities of this worker."""
        return {"binary": self.binary, "topic": self.topic, "host": self.host,
                "address": self.address, "version": fabric.__version__,
                "capabilities": self.capabilities()}

    # --- life cycle -----------------------------------------------------------

    def start(self) -> None:
        """Register, start consuming, heartbeating and running periodic tasks.

        Raises what the database or the transport raise when unreachable
        (e.g. DatabaseUnavailable); nothing is left consuming in that case.
        """
        if self._started:
            return
        if self.db is None:
            self.db = Database.from_settings(self.settings)
        if self.transport is None:
            self.transport = rpc.get_transport(self.settings.rpc)
        init_host = getattr(self.manager, "init_host", None)
        if callable(init_host):
            init_host()
        # A manager that stages casts (fabric.rpc.outbox) has its relay run by the service:
        # it first sends what a killed predecessor of its kind committed and never had confirmed.
        self.outbox = getattr(self.manager, "outbox", None)
        if self.outbox is not None:
            self.outbox.start()
        self._reported_capabilities = self.capabilities()
        self._reported_fanout_drops = {}
        servicegroup.register(self.db, host=self.host, binary=self.binary, topic=self.topic,
                              version=fabric.__version__, address=self.address,
                              capabilities=self._reported_capabilities)
        self.server = rpc.RPCServer(self.transport, topic=self.topic, host=self.host,
                                    endpoint=self.manager, consume=self.consume, limiter=self.limiter)
        self.server.start()
        self._started = True
        self._heartbeats = Heartbeats.join(self)
        self.periodic.start()
        LOG.info("Started %s on host %s: consuming %s; %d periodic task(s)", self.binary, self.host,
                 ", ".join(queue.name for queue in self.server.queues), len(self.periodic.tasks))

    def stop(self) -> None:
        """Stop consuming and stop heartbeats and periodic runs (in-flight work goes on)."""
        if not self._started or self._stopping.ready():
            return
        self._stopping.send(True)
        self._heartbeats.leave(self)
        self.server.stop()
        self.periodic.request_stop()
        LOG.info("%s on host %s stopped consuming; in-flight work goes on", self.binary, self.host)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for in-flight work, then release resources.

        Returns False when in-flight handlers were still running at the
        deadline (their messages are not acknowledged and will be redelivered).
        """
        if not self._started:
            self._release()
            return True
        deadline = None if timeout is None else time.monotonic() + timeout

        def remaining() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        finished = self.server.wait(remaining()) is not False
        self.periodic.stop(remaining())
        if self._heartbeats is not None:
            self._heartbeats.leave(self, wait=True)  # no heartbeat of this service from now on
            self._heartbeats = None
        if not finished:
            LOG.warning("%s on host %s: in-flight work did not finish within %.3gs; "
                        "its messages will be redelivered", self.binary, self.host, timeout)
        if self.outbox is not None:
            self.outbox.stop(remaining())
        cleanup_host = getattr(self.manager, "cleanup_host", None)
        if callable(cleanup_host):
            try:
                cleanup_host()
            except Exception:
                LOG.exception("%s: cleanup_host failed", self.binary)
        self._release()
        LOG.info("Stopped %s on host %s", self.binary, self.host)
        return finished

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
        if self._owns_transport and self.transport is not None:
            self.transport.cleanup()
        if self._owns_db and self.db is not None:
            self.db.dispose()

    # --- heartbeat ------------------------------------------------------------

    def report_state(self) -> None:
        """One heartbeat into the registry, with the capabilities if they changed, and the
        fanout messages the server dropped (by reason code, and when the last was) if more
        were dropped since the last heartbeat.

        Re-creates the row if an operator deleted it. The drops are counted in this
        process's memory only (:attr:`fabric.rpc.RPCServer.fanout_dropped`, and a fake host's
        :attr:`fanout` consumer's): a restarted worker registers afresh and reports none until
        it drops one again.
        """
        capabilities = self.capabilities()
        changed = capabilities if capabilities != self._reported_capabilities else None
        drops, dropped_at = self.fanout_drops_and_last()
        servicegroup.heartbeat(self.db, host=self.host, binary=self.binary, topic=self.topic,
                               capabilities=changed,
                               fanout_drops=drops if drops != self._reported_fanout_drops else None,
                               fanout_dropped_at=dropped_at)
        self._reported_capabilities = capabilities
        self._reported_fanout_drops = drops

    def fanout_drops(self) -> dict[str, int]:
        """The fanout messages dropped for this worker, by reason code: by its server since it
        started, and by the process's :attr:`fanout` consumer, if it has one, for this host
        (and, for its one reporting host, for all: :meth:`fabric.sim.fanout.HostFanout.drops_for`)."""
        return self.fanout_drops_and_last()[0]

    def fanout_drops_and_last(self) -> tuple[dict[str, int], datetime.datetime | None]:
        """:meth:`fanout_drops`, and when the last of them was dropped (None: none)."""
        counts: Counter[str] = Counter()
        times = []
        if self.server is not None:
            counts.update(self.server.fanout_dropped)
            times.append(self.server.fanout_dropped_at)
        if self.fanout is not None:
            shared, shared_at = self.fanout.drops_for(self.host)
            counts.update(shared)
            times.append(shared_at)
        return dict(counts), max((t for t in times if t is not None), default=None)

    def reports_changed(self) -> bool:
        """Whether the next heartbeat has more to write than the time: new capabilities or
        new fanout drops (see :meth:`report_state`)."""
        return (self.capabilities() != self._reported_capabilities
                or self.fanout_drops() != self._reported_fanout_drops)


class Heartbeats:
    """The heartbeats of the started services of one process that share a database and a
    ``report_interval``: every interval, one statement for all of them
    (:func:`fabric.servicegroup.heartbeat_many`), and a service whose capabilities changed,
    or whose server dropped fanout messages since its last heartbeat, its own
    :meth:`Service.report_state` (in place of, not besides, its share of that statement: a
    dropped message never costs a write of its own).

    A process of 250 fake hosts (two services each) wrote 500 transactions per interval, one
    per service: a tenth of its CPU in the boot storm (tools/bench/storm.py), and at 1,000
    hosts 200 transactions a second. Each service is still judged by its own row's
    ``last_heartbeat``, as fresh as before (at most one interval old, plus the write), so no
    reader of the registry (the scheduler's up/down, ``service list``) sees a difference.
    What a fake-hosts process's fanout consumer refuses is reported by one of its hosts per
    topic (:mod:`fabric.sim.fanout`), so such a drop costs that process one row of its own at
    the next heartbeat, not one per host.
    """

    #: The groups running, by (id of the database, interval).
    _groups: dict[tuple[int, float], Heartbeats] = {}

    def __init__(self, db: Database, interval: float) -> None:
        self.db = db
        self.interval = interval
        self.members: dict[int, Service] = {}
        #: Held while a heartbeat is written (leave(wait=True) waits for it).
        self._writing = eventlet.semaphore.Semaphore()

    @classmethod
    def join(cls, service: Service) -> Heartbeats:
        """Heartbeat ``service`` (registered already) from the next interval on; its group."""
        interval = service.settings.service.report_interval
        key = (id(service.db), interval)
        group = cls._groups.get(key)
        if group is None:
            group = cls._groups[key] = cls(service.db, interval)
            eventlet.spawn(group._run, key)
        group.members[id(service)] = service
        return group

    def leave(self, service: Service, *, wait: bool = False) -> None:
        """No heartbeat of ``service`` is started from now on; with ``wait``, none is being
        written either once this returns."""
        self.members.pop(id(service), None)
        if wait:
            with self._writing:
                pass

    def _run(self, key: tuple[int, float]) -> None:
        while True:
            eventlet.sleep(self.interval)
            if not self.members:
                # Green threads only: no service can join between this check and the removal.
                if self._groups.get(key) is self:
                    del self._groups[key]
                return
            with self._writing:
                self.beat(list(self.members.values()))

    def beat(self, services: list[Service]) -> None:
        """One heartbeat of each of ``services``: together, but alone for one whose
        capabilities or fanout drops changed (its row records them). A database hiccup is
        logged, not raised: a service shows as down only if it lasts past service_down_time."""
        together = []
        for service in services:
            if service.reports_changed():
                try:
                    service.report_state()
                except Exception:
                    LOG.exception("%s on host %s could not heartbeat; retrying in %gs",
                                  service.binary, service.host, self.interval)
            else:
                together.append((service.host, service.binary, service.topic))
        try:
            servicegroup.heartbeat_many(self.db, together)
        except Exception:
            LOG.exception("%d service(s) could not heartbeat; retrying in %gs", len(together), self.interval)


class SignalCatcher:
    """Catches some signals from construction on; :meth:`wait` blocks a green thread for one.

    The signal's C-level handler writes its number to a pipe the hub watches
    (``signal.set_wakeup_fd``), so the hub wakes at once; a Python handler
    alone would only run when the hub next woke for a timer. A signal that
    arrives before :meth:`wait` is kept, not lost. Use in the main thread,
    as a context manager (restores the previous handlers on exit).
    """

    def __init__(self, signals: tuple[signal.Signals, ...]) -> None:
        self.signals = signals
        self._read_end, self._write_end = os.pipe()
        os.set_blocking(self._read_end, False)
        os.set_blocking(self._write_end, False)
        self._previous_fd = signal.set_wakeup_fd(self._write_end)
        self._previous = {sig: signal.signal(sig, lambda signum, frame: None) for sig in signals}

    def wait(self) -> int:
        """The number of the first of ``signals`` to arrive."""
        while True:
            eventlet.hubs.trampoline(self._read_end, read=True)
            try:
                received = os.read(self._read_end, 64)
            except BlockingIOError:
                continue
            for signum in received:
                if signum in self.signals:
                    return signum

    def close(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._previous_fd)
        os.close(self._read_end)
        os.close(self._write_end)

    def __enter__(self) -> SignalCatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def serve(services: list[Service], settings: config.Settings) -> int:
    """Run services until SIGTERM or SIGINT, then stop them gracefully; returns 0.

    Once they have started, what is alive is frozen out of the garbage collector's
    reach (:func:`fabric.heap.freeze_startup_objects`).
    On the signal every service stops consuming at once, then in-flight work
    gets ``service.graceful_shutdown_timeout`` seconds in total to finish. A
    signal during start-up is not lost: the services stop once started.
    Must run in the main thread (signals are delivered there).
    """
    started: list[Service] = []
    with SignalCatcher((signal.SIGTERM, signal.SIGINT)) as catcher:
        try:
            for service in services:
                service.start()
                started.append(service)
            heap.freeze_startup_objects()
            signum = catcher.wait()
            LOG.info("Received %s: stopping %d service(s); in-flight work has %gs to finish",
                     signal.Signals(signum).name, len(started),
                     settings.service.graceful_shutdown_timeout)
        finally:
            for service in started:
                service.stop()
            deadline = time.monotonic() + settings.service.graceful_shutdown_timeout
            for service in started:
                service.wait(max(0.0, deadline - time.monotonic()))
    return 0
