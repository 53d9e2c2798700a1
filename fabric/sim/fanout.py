"""One consumer of a topic's fanout for all the simulated hosts of a process.

A fanout cast (``security_members_changed_many``, ``routers_changed``, ``host_joined`` ...)
reaches every host. Real hosts each consume it from a queue of their own; a process of
:mod:`fabric.sim.fake_hosts` running 500 hosts that way received, checked and decoded each
announcement 500 times (0.16 ms per host: at 1,000 hosts about 160 ms of CPU per server in
the boot storm, more than every other worker together). Its hosts' workers consume only
their ``<topic>`` and ``<topic>.<host>`` queues (:class:`~fabric.rpc.RPCServer`'s
``consume``), and a :class:`HostFanout` per topic consumes the fanout once for all of them:
one queue, one signature check and one decode per message, then the same call (method,
arguments, context) to each started host's manager.

What each host's manager sees is what its own fanout queue gave it:

* the message is checked as the hosts' own servers check theirs (signature, role, the
  manager's ``rpc_callers``) before any host gets it; a refused message reaches none;
* a host gets the fanouts that arrive after its worker started (it read the rest at start,
  as a real host does), in the order they arrived: each host belongs to one of
  ``lanes`` green threads, which hands it the messages one after the other, so a host
  waiting for the database delays only the other hosts of its lane, never its own order;
* a host whose handler fails does not stop the others: its call alone is tried again (at
  the end of its lane's work, as a re-published message goes to the end of the host's
  queue) up to ``rpc.max_deliveries`` times, then dropped with the reason logged and
  counted for that host (a fanout queue has no dead-letter queue: see below); arguments
  its method does not take, or Invalid, are dropped at once (and counted); a lost
  database connection is waited out as the RPC server does;
* the message is acknowledged once every host has had its first try (a retry still due
  then is lost with the process, as the host's exclusive queue would be).

What is dropped is counted for the hosts' heartbeats, as a real worker's server counts what
it drops from its fanout queue (:attr:`~fabric.rpc.RPCServer.fanout_dropped`), so that
``fabric-manage status`` names it (:mod:`fabric.status`): :meth:`HostFanout.drops_for` gives
each host's Service (:attr:`fabric.service.Service.fanout`) what was dropped *for that host*
(its handler failed ``rpc.max_deliveries`` times, raised Invalid, or lacks the method), and
to one host per process and topic, the :attr:`~HostFanout.reporter`, also what the process's
server dropped before any host got it (refused: unsigned, forged, stale ...), under codes
marked as every host's (:func:`fabric.servicegroup.process_wide`: ``process:unsigned``), so that the
problem line says the message was lost to every host of the process, not to the reporter
alone. What an operator can do about such a message (the sender's keys, this machine's
clock) concerns the process, not a host: one services row per process and topic says so,
not one per host (a 1,000-host process would show 1,000 identical problem lines and, the
heartbeat after, write 1,000 rows one by one instead of in its one batched statement). The
counts live in this object, the process's memory: a restarted process starts again from
none.

The hosts share the decoded arguments: a fanout handler keeps copies of what it keeps (the
network manager's do), as it may not change what the next host is handed.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import eventlet
import eventlet.event
from eventlet.queue import LightQueue

from fabric import context as fabric_context
from fabric.context import RequestContext
from fabric.db.retry import retry_on_disconnect
from fabric.db.types import utcnow
from fabric.exception import DatabaseUnavailable, FabricError, Invalid
from fabric.rpc.metrics import RPC as METRICS
from fabric.rpc.server import RPCServer, argument_error, public_methods
from fabric.servicegroup import process_wide

LOG = logging.getLogger(__name__)

#: Green threads handing each fanout to the hosts of a process (see the module docstring):
#: fanout handlers that wait, wait for the database, whose pool a process's hosts share, so
#: more than its connections would only queue for them.
DEFAULT_LANES = 8


class _Fanout:
    """One received fanout: what every host is handed, and how many lanes still have it."""

    __slots__ = ("method", "ctx", "args", "pending", "done")

    def __init__(self, method: str, ctx: RequestContext, args: dict[str, Any], lanes: int) -> None:
        self.method = method
        self.ctx = ctx
        self.args = args
        self.pending = lanes
        self.done = eventlet.event.Event()


class _Retry:
    """One host's next try of a fanout its handler failed on."""

    __slots__ = ("fanout", "host", "attempt")

    def __init__(self, fanout: _Fanout, host: str, attempt: int) -> None:
        self.fanout = fanout
        self.host = host
        self.attempt = attempt


class _Lane:
    """Some hosts, handed each fanout one after the other by one green thread."""

    def __init__(self) -> None:
        #: The started hosts of this lane: host -> its manager's RPC methods.
        self.hosts: dict[str, dict[str, Any]] = {}
        self.work: LightQueue = LightQueue()
        self.thread: Any = None


class _Endpoint:
    """What the process's fanout server dispatches to: each of the hosts' RPC methods, as a
    call to every started host (the server checks signer and caller table before it)."""

    def __init__(self, fanout: HostFanout, methods: Iterable[str], callers: Any) -> None:
        self.rpc_callers = callers
        for name in methods:
            setattr(self, name, fanout.handler(name))


class HostFanout:
    """The fanout of ``topic`` for the hosts of this process (see the module docstring).

    ``managers`` are the hosts' managers of ``topic`` (one per host, ``manager.host`` its
    name); a host is handed fanouts from :meth:`admit` on (once its worker has started).
    ``name`` names the process's fanout queue (``<topic>_fanout_<name>_...``). Start, stop
    and wait like a :class:`~fabric.service.Service` (what :func:`fabric.service.serve` runs).
    What it drops is counted by host (:meth:`drops_for`), what its server refuses for all of
    them given to the first manager's host (:attr:`reporter`), marked as every host's.
    """

    def __init__(self, transport: Any, topic: str, name: str, managers: list[Any], *,
                 lanes: int = DEFAULT_LANES) -> None:
        if not managers:
            raise ValueError(f"a fanout of {topic} for no host: give at least one manager")
        if lanes < 1:
            raise ValueError(f"lanes {lanes}: accepted at least 1")
        self.topic = topic
        self.max_deliveries = transport.settings.max_deliveries
        self._methods = {manager.host: public_methods(manager) for manager in managers}
        if len(self._methods) != len(managers):
            raise ValueError(f"{topic}: host names repeat among the managers")
        self._lanes = [_Lane() for _ in range(min(lanes, len(managers)))]
        self._lane_of = {host: self._lanes[index % len(self._lanes)] for index, host in enumerate(self._methods)}
        self._stopping = eventlet.event.Event()
        #: The host whose heartbeat also reports what the server dropped for every host
        #: (marked so: :meth:`drops_for`).
        self.reporter: str = managers[0].host
        #: By host, the fanouts dropped for it alone, by reason code, and when the last was.
        self._dropped: dict[str, Counter[str]] = {}
        self._dropped_at: dict[str, datetime.datetime] = {}
        self.server = RPCServer(transport, topic=topic, host=name,
                                endpoint=_Endpoint(self, self._methods[managers[0].host],
                                                   getattr(managers[0], "rpc_callers", None)),
                                consume=("fanout",))

    def __repr__(self) -> str:
        return f"<HostFanout {self.topic} for {len(self._methods)} hosts>"

    @property
    def admitted(self) -> list[str]:
        """The hosts fanouts are handed to."""
        return [host for lane in self._lanes for host in lane.hosts]

    def admit(self, host: str) -> None:
        """Hand ``host`` the fanouts that arrive from now on; KeyError for a host not given."""
        self._lane_of[host].hosts[host] = self._methods[host]

    def drops_for(self, host: str) -> tuple[dict[str, int], datetime.datetime | None]:
        """The fanout messages dropped for ``host`` since this consumer was built, by reason
        code, and when the last was (None: none); for the :attr:`reporter` also those the
        server dropped for all the hosts (refused, or of a method the hosts lack), their codes
        marked so (:func:`fabric.servicegroup.process_wide`)."""
        counts = Counter(self._dropped.get(host, ()))
        times = [self._dropped_at[host]] if host in self._dropped_at else []
        if host == self.reporter and self.server.fanout_dropped:
            counts.update({process_wide(code): count for code, count in self.server.fanout_dropped.items()})
            times.append(self.server.fanout_dropped_at)
        return dict(counts), max((t for t in times if t is not None), default=None)

    def _drop(self, host: str, code: str) -> None:
        self._dropped.setdefault(host, Counter())[code] += 1
        self._dropped_at[host] = utcnow()

    # --- life cycle (a Service's) -----------------------------------------------------------

    def start(self) -> None:
        """Start the lanes and consume the fanout queue."""
        for lane in self._lanes:
            if lane.thread is None:
                lane.thread = eventlet.spawn(self._run_lane, lane)
        self.server.start()

    def stop(self) -> None:
        """Stop consuming; fanouts being handed out go on."""
        if not self._stopping.ready():
            self._stopping.send(True)
        self.server.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for the fanouts being handed out; False if some were
        still being handed out then (those not acknowledged come back to no one: the queue
        goes with its consumer)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        finished = self.server.wait(timeout) is not False
        for lane in self._lanes:
            if lane.thread is not None:
                lane.work.put(None)
        for lane in self._lanes:
            if lane.thread is None:
                continue
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            with eventlet.Timeout(left, False):
                lane.thread.wait()
                lane.thread = None
            if lane.thread is not None:
                lane.thread.kill()
                lane.thread = None
                finished = False
        return finished

    # --- handing out ------------------------------------------------------------------------

    def handler(self, method: str) -> Any:
        """What the fanout server runs for a ``method`` message: hands it to every lane and
        returns once each lane has handed it to each of its hosts (then it is acknowledged)."""

        def hand_out(ctx: RequestContext, **args: Any) -> None:
            lanes = [lane for lane in self._lanes if lane.hosts]
            if not lanes:
                return
            fanout = _Fanout(method, ctx, args, len(lanes))
            for lane in lanes:
                lane.work.put(fanout)
            fanout.done.wait()

        hand_out.__name__ = method
        return hand_out

    def _run_lane(self, lane: _Lane) -> None:
        while True:
            work = lane.work.get()
            if work is None:
                return
            if isinstance(work, _Retry):
                methods = lane.hosts.get(work.host)
                if methods is not None:
                    token = work.fanout.ctx.activate()
                    try:
                        self._hand(lane, work.fanout, work.host, methods, work.attempt)
                    finally:
                        fabric_context.reset(token)
                continue
            token = work.ctx.activate()
            try:
                for host, methods in list(lane.hosts.items()):
                    self._hand(lane, work, host, methods, 1)
            finally:
                fabric_context.reset(token)
                work.pending -= 1
                if work.pending == 0:
                    work.done.send(True)

    def _hand(self, lane: _Lane, fanout: _Fanout, host: str, methods: dict[str, Any], attempt: int) -> None:
        """Run ``host``'s handler of ``fanout``; a failure is logged and tried again later."""
        method = methods.get(fanout.method)
        if method is None:
            LOG.error("Dropped fanout %s for %s: its %s worker has no such method", fanout.method, host, self.topic)
            self._drop(host, "unknown-method")
            return
        started = time.perf_counter()
        try:
            retry_on_disconnect(lambda: method(fanout.ctx, **fanout.args), pause=self._pause,
                                what=lambda: f"fanout cast {fanout.method} on {host}")
        except Exception as exc:  # noqa: BLE001 - one host's failure is that host's alone
            METRICS.handled_message("cast", self.topic, fanout.method, False, time.perf_counter() - started)
            self._failed(lane, fanout, host, method, attempt, exc)
            return
        METRICS.handled_message("cast", self.topic, fanout.method, True, time.perf_counter() - started)

    def _pause(self, seconds: float) -> bool:
        return self._stopping.wait(seconds) is True

    def _failed(self, lane: _Lane, fanout: _Fanout, host: str, method: Any, attempt: int, exc: Exception) -> None:
        if isinstance(exc, DatabaseUnavailable) and self._stopping.ready():
            LOG.info("Left fanout %s for %s unhandled: stopping while the database was unreachable",
                     fanout.method, host)
            return
        if isinstance(exc, TypeError):
            exc = argument_error(method, fanout.method, fanout.args, exc, fanout.ctx)
        description = f"{fanout.method} failed {attempt} time(s) on {host}, last with {type(exc).__name__}: {exc}"
        if isinstance(exc, Invalid) or attempt >= self.max_deliveries:
            code = "invalid" if isinstance(exc, Invalid) else "failed"
            METRICS.dead_lettered(self.topic, code)
            LOG.error("Dropped fanout %s for %s: %s", fanout.method, host, description)
            self._drop(host, code)
            return
        LOG.warning("Fanout %s for %s will be retried: %s", fanout.method, host, description,
                    exc_info=not isinstance(exc, FabricError))
        lane.work.put(_Retry(fanout, host, attempt + 1))
