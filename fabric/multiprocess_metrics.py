"""Metrics of a worker that serves from several processes (the API, the objectstore, and their
helpers: :mod:`fabric.wsgi_processes`).

prometheus_client's multiprocess mode keeps each process's counters in a file of a
directory named by ``PROMETHEUS_MULTIPROC_DIR`` and sums them when the worker is
scraped. The variable must be set before prometheus_client is first imported, so
the launchers of workers with helpers (``fabric-api``, ``fabric-objectstore``, ``fabric-all``)
call :func:`share_with_helpers` before they import the rest; the helpers they start inherit
the variable and write into the same directory. Counters of a helper that exited stay counted
(they are totals). The worker that created the directory removes it when it exits; one
that could not (killed, out of memory) leaves it to the next worker that starts on the machine,
which removes the directories of owners no longer running (their PID is in the name).

The RPC layer counts in plain dictionaries (:mod:`fabric.rpc.metrics`), not in those files: a
helper writes a snapshot of its counts to ``rpc_<pid>.json`` in the directory every
:data:`RPC_SNAPSHOT_INTERVAL` seconds (when they changed) and as it stops, and the scraped
process adds every snapshot to its own live counts (:class:`MergedRpcCollector`). A helper's
RPC counts therefore reach ``/metrics`` up to that interval late; in-flight gauges are the
scraped process's own (helpers consume no queue).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
#: Seconds between a helper's RPC snapshots.
RPC_SNAPSHOT_INTERVAL = 1.0
_COUNTS = ("sent", "handled", "dead_letters")
_LATENCIES = ("call_seconds", "handler_seconds", "queue_wait")


def share_with_helpers() -> str:
    """Make this process (and what it starts) count metrics in a shared directory; its path.

    A helper inherits the directory of its parent; a worker creates its own.
    """
    if os.environ.get(VARIABLE):
        return os.environ[VARIABLE]
    if "prometheus_client" in sys.modules:
        raise RuntimeError("share_with_helpers() must run before prometheus_client is imported")
    owner = os.getpid()
    remove_orphans()
    directory = tempfile.mkdtemp(prefix=f"{_PREFIX}{owner}-")
    os.environ[VARIABLE] = directory
    atexit.register(lambda: os.getpid() == owner and shutil.rmtree(directory, ignore_errors=True))
    return directory


#: A shared directory's name: this, its owner's PID, a dash and a random part.
_PREFIX = "fabric-metrics-"


def remove_orphans(parent: str | None = None) -> list[str]:
    """Remove the shared directories (under ``parent``, the temporary directory by default) of
    workers no longer running: a worker killed with SIGKILL never ran its own clean-up. A
    directory whose PID was taken by another process since stays (a later start removes it)."""
    removed = []
    for path in Path(parent or tempfile.gettempdir()).glob(f"{_PREFIX}*-*"):
        pid = path.name[len(_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def shared() -> bool:
    """Whether this process counts in a shared directory."""
    return bool(os.environ.get(VARIABLE))


# --------------------------------------------------------------------------- RPC counts across processes

def rpc_snapshot(metrics: Any) -> dict[str, Any]:
    """``metrics`` (a :class:`fabric.rpc.metrics.RpcMetrics`) as JSON-ready data: its counters and
    latency histograms (not the in-flight gauges, which are live values of their process)."""
    snapshot: dict[str, Any] = {"reconnects": metrics.reconnects}
    for name in _COUNTS:
        snapshot[name] = [[list(labels), value] for labels, value in list(getattr(metrics, name).items())]
    for name in _LATENCIES:
        snapshot[name] = [[list(labels), list(latencies.counts), latencies.total]
                          for labels, latencies in list(getattr(metrics, name).items())]
    return snapshot


def add_snapshot(into: Any, snapshot: dict[str, Any]) -> None:
    """Add the counts of ``snapshot`` (from :func:`rpc_snapshot`) to the RpcMetrics ``into``."""
    into.reconnects += snapshot.get("reconnects", 0)
    for name in _COUNTS:
        table = getattr(into, name)
        for labels, value in snapshot.get(name, ()):
            table[tuple(labels)] += value
    for name in _LATENCIES:
        table = getattr(into, name)
        for labels, counts, total in snapshot.get(name, ()):
            latencies = table[tuple(labels)]
            if len(counts) != len(latencies.counts):
                continue  # written by a release with other buckets: its histogram cannot be added
            latencies.counts = [mine + theirs for mine, theirs in zip(latencies.counts, counts, strict=True)]
            latencies.total += total


def _snapshot_path(directory: str, pid: int) -> Path:
    return Path(directory) / f"rpc_{pid}.json"


def _read_snapshot(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        LOG.warning("Unreadable RPC metrics snapshot %s; its counts are left out", path, exc_info=True)
        return None


class RpcCountsPublisher:
    """A helper's side: writes this process's RPC counts to the shared directory (see the module
    docstring) from :meth:`start` until :meth:`stop`, which writes them a last time."""

    def __init__(self, metrics: Any = None, directory: str | None = None,
                 interval: float = RPC_SNAPSHOT_INTERVAL) -> None:
        from fabric.rpc.metrics import RPC, RpcMetrics

        self.metrics = RPC if metrics is None else metrics
        self.path = _snapshot_path(directory or os.environ[VARIABLE], os.getpid())
        self.interval = interval
        # A file of an earlier helper that had this PID holds totals that must not go back down.
        self._base = RpcMetrics()
        earlier = _read_snapshot(self.path)
        if earlier is not None:
            add_snapshot(self._base, earlier)
        self._written: dict[str, Any] | None = None
        self._thread = None

    def start(self) -> RpcCountsPublisher:
        import eventlet

        self._thread = eventlet.spawn(self._loop)
        return self

    def _loop(self) -> None:
        import eventlet

        while True:
            eventlet.sleep(self.interval)
            try:
                self.write()
            except OSError:
                LOG.warning("Could not write the RPC metrics snapshot %s", self.path, exc_info=True)

    def write(self) -> None:
        """Write the snapshot now if it changed since the last write (atomically: a scrape reads
        the previous one or this one, never half of one)."""
        from fabric.rpc.metrics import RpcMetrics

        total = RpcMetrics()
        add_snapshot(total, rpc_snapshot(self._base))
        add_snapshot(total, rpc_snapshot(self.metrics))
        snapshot = rpc_snapshot(total)
        if snapshot == self._written:
            return
        partial = self.path.with_suffix(".tmp")
        partial.write_text(json.dumps(snapshot, separators=(",", ":")))
        os.replace(partial, self.path)
        self._written = snapshot

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.kill()
            self._thread = None
        self.write()


class MergedRpcCollector:
    """The scraped process's side: the ``fabric_rpc_*`` families of its own live counts plus every
    helper's snapshot in the shared directory."""

    def __init__(self, metrics: Any = None, directory: str | None = None) -> None:
        from fabric.rpc.metrics import RPC

        self.metrics = RPC if metrics is None else metrics
        self.directory = directory or os.environ[VARIABLE]

    def collect(self) -> Iterator[Any]:
        from fabric.rpc.metrics import RpcCollector, RpcMetrics

        merged = RpcMetrics()
        add_snapshot(merged, rpc_snapshot(self.metrics))
        own = _snapshot_path(self.directory, os.getpid())
        for path in sorted(Path(self.directory).glob("rpc_*.json")):
            snapshot = None if path == own else _read_snapshot(path)
            if snapshot is not None:
                add_snapshot(merged, snapshot)
        merged.in_flight = self.metrics.in_flight
        yield from RpcCollector(merged).collect()


def scrape_registry(extra: Iterable[Any] = ()) -> Any:
    """The registry a worker with helpers serves on ``/metrics``: every process's counters from
    the shared directory, the RPC counts of all of them, and the ``extra`` collectors (this
    process's own, such as the API's ``fabric_instances``)."""
    import prometheus_client
    from prometheus_client import multiprocess

    registry = prometheus_client.CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(MergedRpcCollector())
    for collector in extra:
        registry.register(collector)
    return registry
