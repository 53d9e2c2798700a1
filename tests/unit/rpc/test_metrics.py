"""The RPC metrics: what was sent, handled, refused, and how long it took, as Prometheus sees it."""

from __future__ import annotations

import prometheus_client
import pytest

from fabric import rpc
from fabric.context import RequestContext
from fabric.exception import NotFound
from fabric.rpc import metrics
from fabric.rpc.metrics import BUCKETS, Latencies
from tests.fixtures.rpc import serving, wait_for

CTX = RequestContext(user_id="u", project_id="p")


class Widgets:
    def __init__(self) -> None:
        self.recorded = 0

    def echo(self, ctx, value):
        return value

    def record(self, ctx):
        self.recorded += 1

    def missing(self, ctx):
        raise NotFound(kind="widget", ident="w-1")


def _sample(name: str, **labels: str) -> float:
    return prometheus_client.REGISTRY.get_sample_value(name, labels) or 0.0


def test_latencies_fall_in_the_first_bucket_that_holds_them_and_export_cumulatively():
    latencies = Latencies()
    for seconds in (0.00005, 0.0001, 0.0003, 99.0):
        latencies.observe(seconds)
    cumulative = dict(latencies.cumulative())
    assert cumulative[str(BUCKETS[0])] == 2  # le is inclusive: 0.0001 counts in the 0.0001 bucket
    assert cumulative[str(BUCKETS[2])] == 3
    assert cumulative["+Inf"] == 4 and latencies.total == pytest.approx(99.00045)


def test_calls_casts_errors_and_refusals_are_counted_by_topic_and_method(transport):
    topic = "metered"
    before = {
        "sent": _sample("fabric_rpc_sent_total", kind="call", topic=topic, method="echo"),
        "ok": _sample("fabric_rpc_handled_total", kind="call", topic=topic, method="echo", outcome="ok"),
        "error": _sample("fabric_rpc_handled_total", kind="call", topic=topic, method="missing", outcome="error"),
        "cast": _sample("fabric_rpc_handled_total", kind="cast", topic=topic, method="record", outcome="ok"),
        "calls": _sample("fabric_rpc_call_duration_seconds_count", topic=topic, method="echo"),
        "unknown": _sample("fabric_rpc_dead_letters_total", topic=topic, reason="unknown-method"),
        "unsigned": _sample("fabric_rpc_dead_letters_total", topic=topic, reason="unsigned"),
    }
    widgets = Widgets()
    with serving(transport, widgets, topic=topic) as server:
        client = rpc.RPCClient(transport, rpc.Target(topic=topic))
        assert [client.call(CTX, "echo", value=n) for n in range(3)] == [0, 1, 2]
        with pytest.raises(NotFound):
            client.call(CTX, "missing")
        client.cast(CTX, "record")
        client.cast(CTX, "no_such_method")
        transport.publish("fabric", topic, b'{"v": 1}', message_id="forged-1", persistent=True)
        wait_for(lambda: widgets.recorded == 1 and sum(server.refused.values()) == 1
                 and _sample("fabric_rpc_dead_letters_total", topic=topic, reason="unknown-method") > before["unknown"],
                 what="the cast handled, the forgery refused")
    assert _sample("fabric_rpc_sent_total", kind="call", topic=topic, method="echo") - before["sent"] == 3
    assert _sample("fabric_rpc_handled_total", kind="call", topic=topic, method="echo", outcome="ok") - before["ok"] == 3
    assert _sample("fabric_rpc_handled_total", kind="call", topic=topic, method="missing",
                   outcome="error") - before["error"] == 1
    assert _sample("fabric_rpc_handled_total", kind="cast", topic=topic, method="record", outcome="ok") - before["cast"] == 1
    assert _sample("fabric_rpc_call_duration_seconds_count", topic=topic, method="echo") - before["calls"] == 3
    assert 0 < _sample("fabric_rpc_call_duration_seconds_sum", topic=topic, method="echo") < 5
    assert _sample("fabric_rpc_dead_letters_total", topic=topic, reason="unsigned") - before["unsigned"] == 1
    # A method the server does not have is never one of its labels (a sender could make up any
    # number): it is counted by reason only.
    handled = [line for line in prometheus_client.generate_latest().decode().splitlines()
               if line.startswith(("fabric_rpc_handled_total", "fabric_rpc_handler_duration"))]
    assert handled and not any("no_such_method" in line for line in handled)


def test_in_flight_counts_what_a_server_holds_and_stops_with_it(transport):
    with serving(transport, Widgets(), topic="flight"):
        assert _sample("fabric_rpc_messages_in_flight", topic="flight") == 0
        assert "flight" in metrics.RPC.in_flight and metrics.RPC.in_flight["flight"]
    assert not metrics.RPC.in_flight["flight"]
