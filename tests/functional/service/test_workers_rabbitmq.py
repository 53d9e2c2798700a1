"""Workers on the real RabbitMQ: redelivery after SIGKILL, launchers, queue ops.

Every test runs in a vhost of its own (``rabbit_vhost``); worker processes are
started by the ``spawn`` fixture and stopped by their own PID.
"""

from __future__ import annotations

import collections
import secrets
import signal
import sys

import kombu
import pytest
import sqlalchemy as sa

import fabric
from fabric import rpc, servicegroup
from fabric.cmd import manage
from fabric.context import RequestContext
from fabric.rpc import envelope, signing
from tests.fixtures.processes import REPO, python_module, wait_until
from tests.fixtures.recorder import ATTEMPTS, EFFECTS, TOPIC, create_effect_tables
from tests.fixtures.rpc import serving
from tests.fixtures.signing import keyring_at
from tests.functional.rpc.test_rpc_rabbitmq import take_dead_letters

pytestmark = pytest.mark.functional


def rows(engine, table):
    with engine.connect() as conn:
        return conn.execute(sa.select(table)).all()


@pytest.fixture
def env(rabbit_vhost, sqlite_db):
    """Environment of a worker process on this vhost and the registry database."""
    return {"FABRIC_RPC_TRANSPORT_URL": rabbit_vhost,
            "FABRIC_DATABASE_URL": sqlite_db.url.render_as_string(hide_password=False),
            "FABRIC_SERVICE_REPORT_INTERVAL": "0.2",
            "FABRIC_SERVICE_ADVERTISE_ADDRESS": "127.0.0.1",
            "FABRIC_SERVICE_GRACEFUL_SHUTDOWN_TIMEOUT": "20"}


@pytest.fixture(autouse=True)
def key_host(monkeypatch, signing_keys):
    """``fabric-manage`` here runs on the key host: it holds every role's keys (the session's)."""
    monkeypatch.setenv("FABRIC_SIGNING_KEY_DIR", str(signing_keys))


def manage_queues(capsys, monkeypatch, rabbit_vhost, *argv):
    monkeypatch.setenv("FABRIC_RPC_TRANSPORT_URL", rabbit_vhost)
    monkeypatch.delenv("FABRIC_CONFIG", raising=False)
    status = manage.main(["queues", *argv])
    out, err = capsys.readouterr()
    assert status == 0, err
    return out


def queue_table(out):
    """{queue: (worker, ready, unacked, consumers, dead)} from `fabric-manage queues`."""
    table = {}
    for line in out.splitlines()[3:]:
        worker, queue, ready, unacked, consumers, dead = line.split()
        table[queue] = (worker, int(ready), int(unacked), int(consumers), dead)
    return table


def test_sigkill_inside_a_handler_redelivers_to_another_worker_once_in_effect(
        spawn, env, tmp_path, rabbit_transport, capsys, monkeypatch, rabbit_vhost):
    effects_url = f"sqlite:///{tmp_path / 'effects.sqlite'}"
    effects = create_effect_tables(effects_url)
    release = tmp_path / "release"
    workers = {host: spawn(python_module("tests.fixtures.recorder_worker", "--effects", effects_url),
                           env=env | {"FABRIC_DEFAULT_HOST": host}, name=host)
               for host in ("wa", "wb")}
    for host, worker in workers.items():
        worker.wait_for_log(f"Started fabric-recorder on host {host}")

    # The work is applied, then the handler waits: killed there, the message is unacked.
    rpc.RPCClient(rabbit_transport, rpc.Target(topic=TOPIC)).cast(
        RequestContext(), "record", key="job-1", release=str(release), effect_first=True)
    wait_until(lambda: rows(effects, EFFECTS), what="the effect applied", workers=workers.values())
    [(_, _, victim_host, victim_pid)] = rows(effects, ATTEMPTS)
    victim = workers.pop(victim_host)
    [(survivor_host, survivor)] = workers.items()
    assert victim.pid == victim_pid
    victim.signal(signal.SIGKILL)
    assert victim.wait(10) == -signal.SIGKILL

    attempts = wait_until(lambda: len(rows(effects, ATTEMPTS)) == 2 and rows(effects, ATTEMPTS),
                          what="redelivery", workers=[survivor])
    assert [(a.host, a.pid) for a in attempts] == [(victim_host, victim.pid), (survivor_host, survivor.pid)]
    release.touch()

    # The survivor finishes and acks: nothing left in the shared queue, one consumer on it.
    def drained():
        table = queue_table(manage_queues(capsys, monkeypatch, rabbit_vhost))
        return table if table[TOPIC][1:4] == (0, 0, 1) else None

    table = wait_until(drained, what="queue drained", workers=[survivor])
    assert table[f"{TOPIC}.{survivor_host}"][3] == 1
    assert table[f"{TOPIC}.{victim_host}"][3] == 0  # the killed worker's host queue stays, unconsumed
    assert rows(effects, EFFECTS) == [("job-1", victim_host)]  # applied once, by the first delivery
    assert len(rows(effects, ATTEMPTS)) == 2

    survivor.signal(signal.SIGTERM)
    assert survivor.wait(30) == 0, survivor.log()


def test_launcher_answers_describe_and_queues_shows_its_consumers(
        spawn, env, sqlite_db, rabbit_transport, capsys, monkeypatch, rabbit_vhost):
    worker = spawn([sys.executable, str(REPO / "bin/fabric-ipam")],
                   env=env | {"FABRIC_DEFAULT_HOST": "ipam1"}, name="fabric-ipam")
    worker.wait_for_log("Started fabric-ipam on host ipam1")
    client = rpc.RPCClient(rabbit_transport, rpc.Target(topic="ipam"))
    answer = client.prepare(server="ipam1").call(RequestContext(), "describe")
    assert answer["binary"] == "fabric-ipam" and answer["host"] == "ipam1"
    assert answer["address"] == "127.0.0.1"
    assert answer["version"] == fabric.__version__
    assert client.call(RequestContext(), "describe") == answer

    out = manage_queues(capsys, monkeypatch, rabbit_vhost)
    vhost = rabbit_vhost.rsplit("/", 1)[1]
    assert out.splitlines()[0] == f"Queues in vhost {vhost}:"
    table = queue_table(out)
    assert table["ipam"] == ("fabric-ipam", 0, 0, 1, "0")
    assert table["ipam.ipam1"] == ("fabric-ipam", 0, 0, 1, "0")
    fanout = [q for q in table if q.startswith("ipam_fanout")]
    assert len(fanout) == 1 and table[fanout[0]][0] == "fabric-ipam" and table[fanout[0]][3] == 1
    assert "ipam.dead" not in table  # dead-letter queues are a column, not rows

    [row] = servicegroup.list_services(sqlite_db)
    assert (row.host, row.binary, row.topic, row.up) == ("ipam1", "fabric-ipam", "ipam", True)

    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log()

    def consumers_gone():
        table = queue_table(manage_queues(capsys, monkeypatch, rabbit_vhost))
        return table["ipam"][3] == 0 and not any(q.startswith("ipam_fanout") for q in table)

    wait_until(consumers_gone, what="the stopped worker's consumers gone")


def peek(url, queue):
    """(body, headers) of the first message of ``queue``, left in the queue."""
    with kombu.Connection(url) as connection:
        channel = connection.channel()
        message = channel.basic_get(queue, no_ack=False)
        assert message is not None, f"{queue} is empty"
        channel.basic_reject(message.delivery_tag, requeue=True)
        return message.body, dict(message.properties.get("application_headers") or {})


def test_requeue_dead_moves_dead_letters_back_to_their_queue(
        spawn, env, tmp_path, rabbit_transport, capsys, monkeypatch, rabbit_vhost):
    effects_url = f"sqlite:///{tmp_path / 'effects.sqlite'}"
    effects = create_effect_tables(effects_url)
    fail = tmp_path / "fail"
    fail.touch()
    worker_argv = python_module("tests.fixtures.recorder_worker", "--effects", effects_url)
    worker_env = env | {"FABRIC_DEFAULT_HOST": "w1", "FABRIC_RPC_MAX_DELIVERIES": "2"}
    worker = spawn(worker_argv, env=worker_env, name="recorder")
    worker.wait_for_log("Started fabric-recorder on host w1")
    client = rpc.RPCClient(rabbit_transport, rpc.Target(topic=TOPIC))
    keys = [f"job-{secrets.token_hex(2)}-{i}" for i in range(3)]
    for key in keys:
        client.cast(RequestContext(), "record", key=key, fail_while=str(fail))

    def dead_letters():
        table = queue_table(manage_queues(capsys, monkeypatch, rabbit_vhost))
        return table if table[TOPIC][4] == "3" else None

    table = wait_until(dead_letters, what="three dead letters", workers=[worker])
    assert table[TOPIC][1:3] == (0, 0)
    assert rows(effects, EFFECTS) == []
    body, headers = peek(rabbit_vhost, f"{TOPIC}.dead")
    assert "record failed 2 time(s)" in headers["x-fabric-dead-reason"]
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log()

    # One first: it is back in its queue with its envelope (freshly signed), its dead past cleared.
    out = manage_queues(capsys, monkeypatch, rabbit_vhost, "requeue-dead", TOPIC, "--limit", "1")
    assert out == (f"Moved 1 dead-lettered message(s) from {TOPIC}.dead back to {TOPIC} "
                   "(1 re-signed with a fresh timestamp).\n")
    table = queue_table(manage_queues(capsys, monkeypatch, rabbit_vhost))
    assert (table[TOPIC][1], table[TOPIC][4]) == (1, "2")
    moved_body, moved_headers = peek(rabbit_vhost, TOPIC)
    assert signing.strip(moved_body) == signing.strip(body) and moved_body != body
    assert not {"x-fabric-dead-reason", "x-fabric-attempt", "x-fabric-queue"} & set(moved_headers)

    out = manage_queues(capsys, monkeypatch, rabbit_vhost, "requeue-dead", f"{TOPIC}.dead")
    assert out == (f"Moved 2 dead-lettered message(s) from {TOPIC}.dead back to {TOPIC} "
                   "(2 re-signed with a fresh timestamp).\n")

    fail.unlink()  # the cause is fixed: a worker can handle them now
    worker = spawn(worker_argv, env=worker_env, name="recorder-again")
    wait_until(lambda: len(rows(effects, EFFECTS)) == 3, what="requeued messages handled",
               workers=[worker])
    assert sorted(r.key for r in rows(effects, EFFECTS)) == sorted(keys)
    table = queue_table(manage_queues(capsys, monkeypatch, rabbit_vhost))
    assert table[TOPIC][4] == "0"
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log()


class Applier:
    def __init__(self) -> None:
        #: How many times ``apply`` ran for each token.
        self.runs: collections.Counter[str] = collections.Counter()

    def apply(self, ctx, token):
        self.runs[token] += 1

    def echo(self, ctx, value):
        return value


def test_requeue_dead_re_signs_a_stale_dead_letter_and_leaves_forged_and_unsigned_ones(
        rabbit, rabbit_transport, signing_keys, capsys, monkeypatch):
    """A cast dead-lettered as stale (signed longer ago than max_age, as a backlog would be)
    is requeued freshly signed and handled once; a forged and an unsigned one stay dead."""

    def cast(token):
        return envelope.encode_request("cast", rpc.new_message_id(), "apply", {"token": token},
                                       RequestContext().to_dict(), None, None, "widgets")

    max_age = signing.keyring_of(rabbit_transport).max_age
    stale = keyring_at(signing_keys, ["api"], seconds_ago=max_age + 60).sign(
        signing.REQUEST, cast("old"), "api", "widgets")
    genuine = keyring_at(signing_keys, ["api"]).sign(signing.REQUEST, cast("genuine"), "api", "widgets")
    forged = genuine.replace(b'"token":"genuine"', b'"token":"changed"')
    unsigned = cast("unsigned")
    assert forged != genuine
    applier = Applier()
    with serving(rabbit_transport, applier) as server:
        for body in (stale, forged, unsigned):
            rabbit_transport.publish("fabric", "widgets", body, message_id=rpc.new_message_id(),
                                     persistent=True, wait_confirm=True, timeout=10)
        wait_until(lambda: server.refused == {"stale": 1, "forged": 1, "unsigned": 1}, what="three refusals")
        wait_until(lambda: rabbit.queues("messages")["widgets.dead"]["messages"] == "3", what="three dead letters")

        out = manage_queues(capsys, monkeypatch, rabbit.url, "requeue-dead", "widgets")
        lines = out.splitlines()
        assert lines[:2] == [
            "Moved 1 dead-lettered message(s) from widgets.dead back to widgets (1 re-signed with a fresh timestamp).",
            f"Left 2 in widgets.dead (signatures checked with the keys in {signing_keys}):"]
        assert lines[2].startswith("  1 forged: the signature of api>widgets key ")
        assert lines[3] == "  1 unsigned: the message carries no signature"

        wait_until(lambda: applier.runs, what="the requeued cast handled")
        client = rpc.RPCClient(rabbit_transport, rpc.Target("widgets"))
        assert client.call(RequestContext(), "echo", value="after") == "after"  # nothing else queued before it
        assert applier.runs == {"old": 1}
        assert server.refused == {"stale": 1, "forged": 1, "unsigned": 1}  # not refused again
    queues = rabbit.queues("messages")
    assert (queues["widgets"]["messages"], queues["widgets.dead"]["messages"]) == ("0", "2")
    left = {body for body, _ in take_dead_letters(rabbit.url, "widgets")}
    assert left == {forged, unsigned}  # exactly as they were: never re-signed


def test_requeue_dead_of_an_unknown_queue_is_one_clear_line(rabbit_vhost, monkeypatch, capsys):
    monkeypatch.setenv("FABRIC_RPC_TRANSPORT_URL", rabbit_vhost)
    assert manage.main(["queues", "requeue-dead", "nosuch"]) == 2
    err = capsys.readouterr().err
    vhost = rabbit_vhost.rsplit("/", 1)[1]
    assert err.strip().endswith(f"error: Queue nosuch in vhost {vhost} could not be found.")


def test_queues_of_a_missing_vhost_is_one_clear_line(rabbit_vhost, monkeypatch, capsys):
    monkeypatch.setenv("FABRIC_RPC_TRANSPORT_URL", rabbit_vhost)
    assert manage.main(["queues", "--vhost", "no_such_vhost_here"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "error: RabbitMQ vhost 'no_such_vhost_here' could not be found.")
