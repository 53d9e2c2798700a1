"""Prometheus metrics of the workers, and the per-process ``/metrics`` endpoint.

Every metric fabric exports outside the RPC layer is defined here, once, on
``prometheus_client``'s default registry (the RPC layer's own live in
:mod:`fabric.rpc.metrics`); the workers update them where the event happens.
Names follow Prometheus conventions: a unit suffix (``_seconds``, ``_bytes``),
``_total`` on counters, and only bounded label values (a route template,
never a path; a state name, never an id).

:func:`start_exposition` serves the registry over HTTP on ``[metrics]
listen``:``port`` (``port = 0``, the default, serves nothing: several workers
on one host each need their own port, which their systemd units set through
``FABRIC_METRICS_PORT``). Updating a metric is a few hundred nanoseconds and
takes no lock that a scrape could hold for long, so metrics stay on always.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import prometheus_client
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from fabric import config, multiprocess_metrics

LOG = logging.getLogger(__name__)

#: Latency buckets for requests and operations that take milliseconds to seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

API_REQUESTS = prometheus_client.Counter(
    "fabric_api_requests_total", "HTTP API requests answered, by route template, method and status code.",
    ("route", "method", "status"))
API_REQUEST_SECONDS = prometheus_client.Histogram(
    "fabric_api_request_duration_seconds", "Time to answer an HTTP API request, by route template and method.",
    ("route", "method"), buckets=LATENCY_BUCKETS)

SCHEDULER_DECISIONS = prometheus_client.Counter(
    "fabric_scheduler_decisions_total",
    "Scheduling decisions made, by result: placed, or no_valid_host when no host fitted.", ("result",))
SCHEDULER_DECISION_SECONDS = prometheus_client.Histogram(
    "fabric_scheduler_decision_duration_seconds", "Time one scheduling decision took (filter, weigh, claim).",
    buckets=LATENCY_BUCKETS)

IPAM_ALLOCATIONS = prometheus_client.Counter(
    "fabric_ipam_allocations_total",
    "Address allocations asked of IPAM, by result: allocated, or exhausted when the pool had none left.",
    ("result",))
IPAM_RELEASES = prometheus_client.Counter(
    "fabric_ipam_releases_total", "Addresses released back to their pool.")

NETWORK_PLUG_SECONDS = prometheus_client.Histogram(
    "fabric_network_plug_duration_seconds", "Time to plug one port on a host (devices, DHCP, filtering).",
    buckets=LATENCY_BUCKETS)

COMPUTE_BUILDS = prometheus_client.Counter(
    "fabric_compute_builds_total", "Server builds finished on this host, by result: active or error.",
    ("result",))
COMPUTE_BUILD_SECONDS = prometheus_client.Histogram(
    "fabric_compute_build_duration_seconds", "Time from a build's start on the host to ACTIVE.",
    buckets=LATENCY_BUCKETS)

#: Counted in each objectstore process (the worker and its helpers), summed at scrape time
#: (multiprocess mode: fabric.multiprocess_metrics), as the API's request counts are.
OBJECTSTORE_BYTES_RECEIVED = prometheus_client.Counter(
    "fabric_objectstore_received_bytes_total", "Object bytes uploaded into the objectstore.")
OBJECTSTORE_BYTES_SENT = prometheus_client.Counter(
    "fabric_objectstore_sent_bytes_total", "Object bytes downloaded from the objectstore.")


class InstanceStates(Collector):
    """``fabric_instances{vm_state, task_state}``: servers not deleted, counted at scrape time.

    One ``GROUP BY`` on the shared database per scrape, at most every
    ``min_interval`` seconds (a scrape in between gets the previous counts), so
    Prometheus never loads the database more than the interval allows. Only the
    API process registers it: the counts are the cloud's, not a worker's.
    """

    def __init__(self, count: Callable[[], list[tuple[str, str | None, int]]], min_interval: float = 5.0) -> None:
        self._count = count
        self._min_interval = min_interval
        self._cached: list[tuple[str, str | None, int]] = []
        self._at = float("-inf")

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = time.monotonic()
        if now - self._at >= self._min_interval:
            try:
                self._cached = self._count()
                self._at = now
            except Exception:  # noqa: BLE001 - a scrape during a database outage shows the last counts
                LOG.warning("Could not count instances for metrics", exc_info=True)
        family = GaugeMetricFamily("fabric_instances", "Servers not deleted, by vm_state and task_state.",
                                   labels=("vm_state", "task_state"))
        for vm_state, task_state, number in self._cached:
            family.add_metric((vm_state, task_state or ""), number)
        yield family


def instance_counter(db: Any) -> Callable[[], list[tuple[str, str | None, int]]]:
    """Counts of not-deleted instances by (vm_state, task_state) in ``db``."""
    import sqlalchemy as sa

    from fabric.db.models import Instance

    def count() -> list[tuple[str, str | None, int]]:
        statement = (sa.select(Instance.vm_state, Instance.task_state, sa.func.count())
                     .where(Instance.deleted.is_(False))
                     .group_by(Instance.vm_state, Instance.task_state))
        with db.engine.connect() as connection:
            return [tuple(row) for row in connection.execute(statement)]

    return count


_registered_instance_states: InstanceStates | None = None


def register_instance_states(db: Any) -> None:
    """Export ``fabric_instances`` from this process (once; the API calls it)."""
    global _registered_instance_states
    if _registered_instance_states is None:
        _registered_instance_states = InstanceStates(instance_counter(db))
        prometheus_client.REGISTRY.register(_registered_instance_states)


def start_exposition(settings: config.Settings) -> Callable[[], None]:
    """Serve ``/metrics`` on ``[metrics] listen:port``; the function that stops it.

    Does nothing (and returns a no-op) when the port is 0. A port already in
    use raises OSError: a worker told to export metrics and unable to must say
    so at start, not run unobserved.
    """
    if not settings.metrics.port:
        return lambda: None
    registry = prometheus_client.REGISTRY
    if multiprocess_metrics.shared():
        # Counters live in files of every process of this worker (its helpers'); this process's
        # own collectors beside them.
        registry = multiprocess_metrics.scrape_registry(
            [collector for collector in (_registered_instance_states,) if collector is not None])
    server, thread = prometheus_client.start_http_server(settings.metrics.port, addr=settings.metrics.listen,
                                                         registry=registry)
    LOG.info("Prometheus metrics on http://%s:%d/metrics", settings.metrics.listen, server.server_port)

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return stop
