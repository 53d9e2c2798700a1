"""The RPC layer's Prometheus metrics, kept cheap enough to stay on in the hot path.

Every message sent or handled updates plain counters and bucket arrays in
:data:`RPC` (a dict increment and a bisect: a fraction of a microsecond, no
lock: green threads switch only on I/O, never inside an update); the
``prometheus_client`` objects are built only when Prometheus scrapes
(:class:`RpcCollector`, on the default registry). A ``prometheus_client``
Counter or Histogram per message would take a lock and a label lookup each
time, several microseconds on a call that costs about forty.

Series (labels are bounded: topics and method names of the endpoints; a
message naming an unknown method is counted as a dead letter, never by its
method):

- ``fabric_rpc_sent_total{kind, topic, method}``: casts and calls sent;
- ``fabric_rpc_call_duration_seconds{topic, method}``: from sending a call to its reply;
- ``fabric_rpc_handled_total{kind, topic, method, outcome}``: handlers finished, ``ok`` or ``error``;
- ``fabric_rpc_handler_duration_seconds{topic, method}``: time in the handler;
- ``fabric_rpc_queue_wait_seconds{topic}``: from a request's sending to its handling began (the
  sender's clock against this host's: exact on one host, as good as NTP across hosts);
- ``fabric_rpc_dead_letters_total{topic, reason}``: messages dead-lettered (or refused), by reason code;
- ``fabric_rpc_reconnects_total``: broker connections set up again after a loss;
- ``fabric_rpc_messages_in_flight{topic}``: messages this process's servers hold, received and not yet acknowledged.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import prometheus_client
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

#: Upper bounds (seconds) of the latency buckets: RPC takes tens of microseconds to seconds.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
           10.0, 30.0, 60.0)


class Latencies:
    """A histogram's state: a count per bucket (the last one is +Inf) and the sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        running, out = 0, []
        for bound, count in zip((*map(str, BUCKETS), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


class RpcMetrics:
    """The counts; see the module docstring. One per process (:data:`RPC`)."""

    def __init__(self) -> None:
        self.sent: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        self.handled: defaultdict[tuple[str, str, str, str], int] = defaultdict(int)
        self.dead_letters: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.call_seconds: defaultdict[tuple[str, str], Latencies] = defaultdict(Latencies)
        self.handler_seconds: defaultdict[tuple[str, str], Latencies] = defaultdict(Latencies)
        self.queue_wait: defaultdict[tuple[str], Latencies] = defaultdict(Latencies)
        self.reconnects = 0
        #: Topic -> a function returning how many messages its servers hold now.
        self.in_flight: dict[str, list[Callable[[], int]]] = defaultdict(list)

    def sent_message(self, kind: str, topic: str, method: str) -> None:
        self.sent[(kind, topic, method)] += 1

    def call_answered(self, topic: str, method: str, seconds: float) -> None:
        self.call_seconds[(topic, method)].observe(seconds)

    def handled_message(self, kind: str, topic: str, method: str, ok: bool, seconds: float) -> None:
        self.handled[(kind, topic, method, "ok" if ok else "error")] += 1
        self.handler_seconds[(topic, method)].observe(seconds)

    def waited(self, topic: str, seconds: float) -> None:
        self.queue_wait[(topic,)].observe(max(seconds, 0.0))

    def dead_lettered(self, topic: str, reason: str) -> None:
        self.dead_letters[(topic, reason)] += 1

    def reconnected(self) -> None:
        self.reconnects += 1

    def watch_in_flight(self, topic: str, count: Callable[[], int]) -> Callable[[], None]:
        """Report ``count()`` under ``topic`` until the returned function is called."""
        self.in_flight[topic].append(count)
        return lambda: self.in_flight[topic].remove(count)


class RpcCollector(Collector):
    """Builds the ``fabric_rpc_*`` families from :data:`RPC` at scrape time."""

    def __init__(self, metrics: RpcMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        m = self.metrics
        sent = CounterMetricFamily("fabric_rpc_sent", "Casts and calls sent.", labels=("kind", "topic", "method"))
        for labels, value in list(m.sent.items()):
            sent.add_metric(labels, value)
        yield sent
        handled = CounterMetricFamily("fabric_rpc_handled", "Messages handled, by outcome (ok or error).",
                                      labels=("kind", "topic", "method", "outcome"))
        for labels, value in list(m.handled.items()):
            handled.add_metric(labels, value)
        yield handled
        dead = CounterMetricFamily("fabric_rpc_dead_letters", "Messages dead-lettered or refused, by reason code.",
                                   labels=("topic", "reason"))
        for labels, value in list(m.dead_letters.items()):
            dead.add_metric(labels, value)
        yield dead
        yield CounterMetricFamily("fabric_rpc_reconnects", "Broker connections set up again after a loss.",
                                  value=m.reconnects)
        for name, help_text, table in (
                ("fabric_rpc_call_duration_seconds", "From sending a call to its reply.", m.call_seconds),
                ("fabric_rpc_handler_duration_seconds", "Time a handler ran.", m.handler_seconds)):
            family = HistogramMetricFamily(name, help_text, labels=("topic", "method"))
            for labels, latencies in list(table.items()):
                family.add_metric(labels, latencies.cumulative(), latencies.total)
            yield family
        wait = HistogramMetricFamily("fabric_rpc_queue_wait_seconds",
                                     "From a request's sending to the start of its handling.", labels=("topic",))
        for labels, latencies in list(m.queue_wait.items()):
            wait.add_metric(labels, latencies.cumulative(), latencies.total)
        yield wait
        flight = GaugeMetricFamily("fabric_rpc_messages_in_flight",
                                   "Messages this process's servers received and have not acknowledged yet.",
                                   labels=("topic",))
        for topic, counts in list(m.in_flight.items()):
            if counts:
                flight.add_metric((topic,), sum(count() for count in counts))
        yield flight


#: This process's RPC metrics.
RPC = RpcMetrics()
prometheus_client.REGISTRY.register(RpcCollector(RPC))
