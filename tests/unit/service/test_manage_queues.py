"""``fabric-manage queues`` pieces that need no broker: grouping, folding, errors, and which
dead letters a requeue re-signs."""

from __future__ import annotations

import dataclasses

import pytest

from fabric.cmd import manage
from fabric.context import RequestContext
from fabric.rpc import envelope, queues, signing
from tests.fixtures.signing import keyring_at


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
    assert queues.worker_type(queue) == worker


def test_rows_fold_dead_letter_queues_into_their_live_queue():
    listed = [
        {"name": "ipam", "messages_ready": 2, "messages_unacknowledged": 1, "consumers": 3, "messages": 3},
        {"name": "ipam.dead", "messages_ready": 4, "messages_unacknowledged": 0, "consumers": 0, "messages": 4},
        {"name": "compute.h1", "messages_ready": 0, "messages_unacknowledged": 0, "consumers": 1, "messages": 0},
        {"name": "compute_fanout_h1_0a0b", "messages_ready": 0, "messages_unacknowledged": 0, "consumers": 1, "messages": 0},
        {"name": "orphan.dead", "messages_ready": 1, "messages_unacknowledged": 0, "consumers": 0, "messages": 1},
        {"name": "reply_x", "messages_ready": 0, "messages_unacknowledged": 0, "consumers": 1, "messages": 0},
    ]
    assert [dataclasses.astuple(row) for row in queues.queue_rows(listed)] == [
        ("fabric-compute", "compute.h1", 0, 0, 1, None),
        ("fabric-compute", "compute_fanout_h1_0a0b", 0, 0, 1, None),
        ("fabric-ipam", "ipam", 2, 1, 3, 4),
        ("other", "orphan.dead", 1, 0, 0, None),   # a dead queue whose live queue is gone stays visible
        ("other", "reply_x", 0, 0, 1, None),
    ]


def test_death_headers_are_cleared_on_requeue():
    kept = {k for k in ("x-fabric-dead-reason", "x-fabric-attempt", "x-fabric-queue", "x-death",
                        "x-first-death-queue", "x-delivery-count", "x-fabric-context", "trace")
            if not queues.is_death_header(k)}
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
    assert "limit is -1; use a number of messages, 0 or more" in capsys.readouterr().err


# ------------------------------------------------------------------ requeueing signed dead letters
@pytest.fixture
def key_dir(tmp_path):
    signing.generate(tmp_path / "keys")
    return tmp_path / "keys"


def cast_to(topic: str, token: str) -> bytes:
    return envelope.encode_request("cast", "m-1", "apply", {"token": token}, RequestContext().to_dict(),
                                   None, None, topic)


def test_a_stale_but_genuine_dead_letter_is_re_signed_as_its_signer(key_dir):
    key_host = signing.load(key_dir)
    body = cast_to("compute", "t")
    old = keyring_at(key_dir, ["scheduler"], seconds_ago=key_host.max_age + 60).sign(
        signing.REQUEST, body, "scheduler", "compute")
    with pytest.raises(signing.Refused, match="stale"):
        key_host.check(signing.REQUEST, old, "compute")
    fresh, resigned = queues.requeue_copy(key_host, "compute.host1", old)
    assert resigned
    # Accepted now by a compute host, as the same signer, with the same envelope.
    assert signing.load(key_dir, ["compute"]).check(signing.REQUEST, fresh, "compute")[::3] == ("scheduler", body)


def test_a_host_without_the_signers_key_moves_fresh_dead_letters_as_they_are(key_dir):
    compute_host = signing.load(key_dir, ["compute"])  # checks messages to compute, signs only as compute
    signed = signing.load(key_dir, ["api"]).sign(signing.REQUEST, cast_to("compute", "t"), "api", "compute")
    assert queues.requeue_copy(compute_host, "compute", signed) == (signed, False)
    old = keyring_at(key_dir, ["api"], seconds_ago=compute_host.max_age + 60).sign(
        signing.REQUEST, cast_to("compute", "t"), "api", "compute")
    with pytest.raises(signing.Refused, match="cannot re-sign as api .*api.key") as refused:
        queues.requeue_copy(compute_host, "compute", old)
    assert refused.value.code == "stale"


def test_what_does_not_check_is_never_re_signed(key_dir):
    key_host = signing.load(key_dir)
    signed = key_host.sign(signing.REQUEST, cast_to("compute", "t"), "api", "compute")
    stranger = signing.Keyring({"api": [signing.new_master()]}, {})
    cases = {
        "unsigned": cast_to("compute", "t"),
        "forged": signed.replace(b'"token":"t"', b'"token":"u"'),
        "unknown-key": stranger.sign(signing.REQUEST, cast_to("compute", "t"), "api", "compute"),
        "malformed": b"FSIG1 api>compute\n{}",
    }
    for code, body in cases.items():
        with pytest.raises(signing.Refused) as refused:
            queues.requeue_copy(key_host, "compute", body)
        assert refused.value.code == code
    # Genuine, but signed for another role than the queue's: it is not moved there.
    with pytest.raises(signing.Refused, match="signed by api for compute, dead-lettered from ipam") as refused:
        queues.requeue_copy(key_host, "ipam", signed)
    assert refused.value.code == "wrong-destination"
    with pytest.raises(signing.Refused):
        queues.requeue_copy(key_host, "computer", signed)  # a queue whose name only starts like it
