"""``fabric-manage queues`` pieces that need no broker: grouping, folding, errors."""

from __future__ import annotations

import pytest

from fabric.cmd import manage, manage_queues


@pytest.mark.parametrize(("queue", "worker"), [
    ("compute", "fabric-compute"),
    ("compute.host-1.example", "fabric-compute"),
    ("compute_fanout_host1_1a2b3c4d", "fabric-compute"),
    ("ipam.dead", "fabric-ipam"),
    ("scheduler", "fabric-scheduler"),
    ("reply_9f8e", "other"),
    ("amq.gen-abc", "other"),
])
def test_worker_type(queue, worker):
    assert manage_queues.worker_type(queue) == worker


def test_rows_fold_dead_letter_queues_into_their_live_queue():
    listed = [
        {"name": "ipam", "messages_ready": 2, "messages_unacknowledged": 1, "consumers": 3, "messages": 3},
        {"name": "ipam.dead", "messages_ready": 4, "messages_unacknowledged": 0, "consumers": 0, "messages": 4},
        {"name": "compute.h1", "messages_ready": 0, "messages_unacknowledged": 0, "consumers": 1, "messages": 0},
        {"name": "compute_fanout_h1_0a0b", "messages_ready": 0, "messages_unacknowledged": 0, "consumers": 1, "messages": 0},
        {"name": "orphan.dead", "messages_ready": 1, "messages_unacknowledged": 0, "consumers": 0, "messages": 1},
        {"name": "reply_x", "messages_ready": 0, "messages_unacknowledged": 0, "consumers": 1, "messages": 0},
    ]
    assert manage_queues.queue_rows(listed) == [
        ("fabric-compute", "compute.h1", 0, 0, 1, "-"),
        ("fabric-compute", "compute_fanout_h1_0a0b", 0, 0, 1, "-"),
        ("fabric-ipam", "ipam", 2, 1, 3, 4),
        ("other", "orphan.dead", 1, 0, 0, "-"),   # a dead queue whose live queue is gone stays visible
        ("other", "reply_x", 0, 0, 1, "-"),
    ]


def test_death_headers_are_cleared_on_requeue():
    kept = {k for k in ("x-fabric-dead-reason", "x-fabric-attempt", "x-fabric-queue", "x-death",
                        "x-first-death-queue", "x-delivery-count", "x-fabric-context", "trace")
            if not manage_queues._is_death_header(k)}
    assert kept == {"x-fabric-context", "trace"}


def test_queues_need_a_broker_transport(monkeypatch, capsys):
    monkeypatch.setenv("FABRIC_RPC_TRANSPORT_URL", "memory://")
    monkeypatch.delenv("FABRIC_CONFIG", raising=False)
    assert manage.main(["queues"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("[rpc] transport_url is 'memory://': queue commands need a RabbitMQ "
                        "transport (amqp://user:pass@host:5672/vhost)")


def test_a_missing_rabbitmqctl_is_one_clear_line(monkeypatch, capsys):
    monkeypatch.setenv("FABRIC_RPC_TRANSPORT_URL", "amqp://guest:guest@127.0.0.1:5672/x")
    assert manage.main(["queues", "--rabbitmqctl", "/nonexistent/rabbitmqctl"]) == 2
    assert "/nonexistent/rabbitmqctl is not installed or not on PATH" in capsys.readouterr().err


def test_negative_limit_is_refused(monkeypatch, capsys):
    monkeypatch.setenv("FABRIC_RPC_TRANSPORT_URL", "amqp://guest:guest@127.0.0.1:5672/x")
    assert manage.main(["queues", "requeue-dead", "ipam", "--limit", "-1"]) == 2
    assert "--limit is -1; use a number of messages, 0 or more" in capsys.readouterr().err
