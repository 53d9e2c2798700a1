"""fabric.multiprocess_metrics: the RPC counts of a worker's helper processes, written as snapshots
to the shared directory, summed into the worker's own at scrape time."""

from __future__ import annotations

import os
import subprocess
import sys

from fabric import multiprocess_metrics
from fabric.multiprocess_metrics import MergedRpcCollector, RpcCountsPublisher
from fabric.rpc.metrics import RpcMetrics


def _busy(calls: int) -> RpcMetrics:
    metrics = RpcMetrics()
    for _ in range(calls):
        metrics.sent_message("call", "ipam", "allocate")
        metrics.call_answered("ipam", "allocate", 0.002)
    metrics.handled_message("cast", "api", "describe", False, 0.5)
    metrics.dead_lettered("api", "forged")
    metrics.reconnected()
    return metrics


def _families(collector) -> dict:
    return {family.name: family for family in collector.collect()}


def _value(family, suffix: str = "", **labels) -> float:
    return sum(s.value for s in family.samples
               if s.name == family.name + suffix and all(s.labels.get(k) == v for k, v in labels.items()))


def test_a_snapshot_carries_every_counter_and_histogram_and_adds_up():
    helper = _busy(3)
    total = RpcMetrics()
    multiprocess_metrics.add_snapshot(total, multiprocess_metrics.rpc_snapshot(helper))
    multiprocess_metrics.add_snapshot(total, multiprocess_metrics.rpc_snapshot(_busy(2)))
    assert total.sent[("call", "ipam", "allocate")] == 5
    assert total.call_seconds[("ipam", "allocate")].counts == [
        a + b for a, b in zip(helper.call_seconds[("ipam", "allocate")].counts,
                              _busy(2).call_seconds[("ipam", "allocate")].counts, strict=True)]
    assert round(total.call_seconds[("ipam", "allocate")].total, 6) == 0.01
    assert total.handled[("cast", "api", "describe", "error")] == 2
    assert total.dead_letters[("api", "forged")] == 2
    assert total.reconnects == 2


def test_the_scrape_sums_its_own_live_counts_and_every_helpers_snapshot(tmp_path):
    own = _busy(1)
    own.watch_in_flight("api", lambda: 4)
    for calls in (2, 3):
        RpcCountsPublisher(_busy(calls), str(tmp_path)).write()
        # (each publisher writes rpc_<this pid>.json: move it aside as another helper's would be)
        (tmp_path / f"rpc_{os.getpid()}.json").rename(tmp_path / f"rpc_{1_000_000 + calls}.json")
    families = _families(MergedRpcCollector(own, str(tmp_path)))
    assert _value(families["fabric_rpc_sent"], "_total", kind="call", method="allocate") == 6
    assert _value(families["fabric_rpc_call_duration_seconds"], "_count", topic="ipam") == 6
    assert _value(families["fabric_rpc_call_duration_seconds"], "_bucket", le="+Inf") == 6
    assert _value(families["fabric_rpc_reconnects"], "_total") == 3
    assert _value(families["fabric_rpc_messages_in_flight"], topic="api") == 4  # live: this process's own


def test_a_publisher_keeps_the_totals_of_an_earlier_helper_with_its_pid(tmp_path):
    RpcCountsPublisher(_busy(2), str(tmp_path)).write()
    successor = RpcCountsPublisher(_busy(1), str(tmp_path))
    successor.write()
    families = _families(MergedRpcCollector(RpcMetrics(), str(tmp_path)))
    # The file is this (test) process's: the scraped process skips its own PID's file...
    assert _value(families["fabric_rpc_sent"], "_total") == 0
    (tmp_path / f"rpc_{os.getpid()}.json").rename(tmp_path / "rpc_1.json")
    families = _families(MergedRpcCollector(RpcMetrics(), str(tmp_path)))
    # ... and a helper's counts never go back down when a new helper gets a dead one's PID.
    assert _value(families["fabric_rpc_sent"], "_total") == 3


def test_a_publisher_writes_only_what_changed_and_a_torn_file_is_left_out(tmp_path):
    metrics = RpcMetrics()
    publisher = RpcCountsPublisher(metrics, str(tmp_path))
    publisher.write()
    path = tmp_path / f"rpc_{os.getpid()}.json"
    assert path.exists()
    path.unlink()
    publisher.write()
    assert not path.exists()  # nothing changed: nothing written
    metrics.sent_message("cast", "scheduler", "build_instances")
    publisher.write()
    assert '"scheduler"' in path.read_text()
    (tmp_path / "rpc_2.json").write_text('{"sent": [[["cast"')
    families = _families(MergedRpcCollector(RpcMetrics(), str(tmp_path)))
    assert _value(families["fabric_rpc_sent"], "_total") == 0


def test_the_directories_of_workers_no_longer_running_are_removed(tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    dead = tmp_path / f"fabric-metrics-{finished.stdout.strip()}-abc123"
    alive = tmp_path / f"fabric-metrics-{os.getpid()}-def456"
    unnamed = tmp_path / "fabric-metrics-q1w2e3r4"  # an earlier release's name: no PID, left alone
    for directory in (dead, alive, unnamed):
        directory.mkdir()
        (directory / "counter_1.db").write_bytes(b"x")
    assert multiprocess_metrics.remove_orphans(str(tmp_path)) == [str(dead)]
    assert not dead.exists() and alive.exists() and unnamed.exists()
