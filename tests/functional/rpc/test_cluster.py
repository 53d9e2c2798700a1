"""RPC on several brokers: failover between the URLs of transport_url, and a 3-node
RabbitMQ cluster with quorum queues (one for this module, tests/fixtures/rabbitmq_cluster.py)
losing the node that holds the queues' leaders, under casts and under a boot storm."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor

import eventlet
import pytest
from eventlet import tpool

from fabric import config, rpc
from fabric.api.bootstrap import bootstrap
from fabric.context import RequestContext
from fabric.db import Database
from fabric.exception import MessagingError
from tests.fixtures.databases import create_schema_database
from tests.fixtures.process_cloud import Api
from tests.fixtures.processes import wait_until
from tests.fixtures.rabbitmq_cluster import cluster_vhost, rabbit_cluster  # noqa: F401 - fixtures
from tests.fixtures.rpc import serving, wait_for
from tests.functional.resilience.test_database_restart import (
    PASSWORD,
    SERVERS,
    SETTLE_WITHIN,
    Storm,
    _hosts_reported,
    _in_flight,
    _prepare,
    _rows,
    _settled,
    _start_cloud,
    check_storm_outcome,
)
from tests.functional.rpc.test_rpc_rabbitmq import Manager

pytestmark = pytest.mark.functional


@pytest.fixture
def ctx():
    return RequestContext(user_id="alice", project_id="p1")


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def settings_for(url: str, **rpc_options):
    return config.load(None).replace(rpc={"transport_url": url, "call_timeout": 30.0, "heartbeat": 10,
                                          **rpc_options})


@pytest.mark.parametrize("form", ["kombu", "oslo"])
def test_a_dead_broker_listed_first_is_passed_over(rabbit, ctx, form):
    dead = closed_port()
    vhost_part = rabbit.url.rsplit("/", 1)[1]
    if form == "kombu":
        url = f"amqp://guest:guest@127.0.0.1:{dead}/{vhost_part};{rabbit.url}"
    else:  # oslo.messaging's host list: the second host takes the first one's credentials
        url = rabbit.url.replace("@127.0.0.1:", f"@127.0.0.1:{dead},127.0.0.1:", 1)
    transport = rpc.get_transport(settings_for(url).rpc)
    try:
        assert transport.urls[0].endswith(f":{dead}/{vhost_part}") and len(transport.urls) == 2
        with serving(transport, Manager()) as server:
            client = rpc.RPCClient(transport, rpc.Target("widgets"))
            assert client.call(ctx, "echo", value="through the second") == "through the second"
            live = rabbit.url.split("@", 1)[1]
            assert transport._link.url.endswith(live)
            assert server._consumer.link.url.endswith(live)
    finally:
        transport.cleanup()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["stop", "kill"])
def test_casts_and_calls_survive_losing_the_node_holding_the_leaders(cluster_vhost, ctx, how):  # noqa: F811
    """1,000 casts to quorum queues on a 3-node cluster; the node holding their leaders
    (where every connection of this test is, too) is stopped (SIGTERM, a clean shutdown)
    or killed (SIGKILL, a crash) while they are in flight: each cast is handled, its
    effect happens once, a call in progress completes or fails saying so, and the next
    call works."""
    cluster, vhost = cluster_vhost
    settings = settings_for(cluster.transport_url(vhost), quorum_queues=True, max_deliveries=5)
    server_transport = rpc.get_transport(settings.rpc)
    client_transport = rpc.get_transport(settings.rpc)
    manager = Manager()
    tokens = [f"t-{i}" for i in range(1000)]
    batch = 50
    stopped = eventlet.event.Event()
    cast_after_stop = 0
    try:
        with serving(server_transport, manager, drain=5) as server:
            client = rpc.RPCClient(client_transport, rpc.Target("widgets"))
            assert client.call(ctx, "echo", value="before") == "before"
            leaders = cluster.leaders(vhost)
            assert {"widgets", "widgets.h1", "widgets.dead"} <= set(leaders), leaders
            leader = cluster.node(leaders["widgets"])
            # Round-robin starts at the first node, which declared the queues and so holds
            # their leaders: stopping it takes the publisher and the consumer down as well.
            assert client_transport._link.url == leader.url(vhost)
            assert server._consumer.link.url == leader.url(vhost)
            publisher_generation = client_transport._link.generation

            def cast_all():
                nonlocal cast_after_stop
                for number, token in enumerate(tokens, 1):
                    client.cast(ctx, "apply", token=token)
                    cast_after_stop += stopped.ready()
                    if number % batch == 0:
                        # Bounds what a lost connection can leave unconfirmed (and re-sent).
                        client_transport.flush(timeout=60)
                    if number >= 300 and not stopped.ready():
                        eventlet.sleep(0.01)  # the stop takes seconds: let it land mid-stream

            caster = eventlet.spawn(cast_all)
            wait_for(lambda: manager.effects >= 100, timeout=30, what="100 casts handled")
            in_progress = client.call_async(ctx, "slow", seconds=1.0)
            tpool.execute(cluster.stop_node, leader, kill=how == "kill")
            stopped.send(True)
            caster.wait()
            wait_for(lambda: manager.effects == 1000, timeout=120, what="all 1,000 casts handled")
            client_transport.flush(timeout=30)
            try:
                assert in_progress.wait() == "done"
            except MessagingError as exc:
                assert "may or may not have run" in exc.message and "slow" in exc.message
            assert client.call(ctx, "echo", value="after") == "after"

            # The leaders moved to a node still running, and every connection followed.
            moved = cluster.leaders(vhost)
            assert moved["widgets"] != leader.name and moved["widgets.h1"] != leader.name
            assert client_transport._link.generation > publisher_generation
            assert client_transport._link.url != leader.url(vhost)
            assert server._consumer.link.url != leader.url(vhost)
            assert cast_after_stop > 0, "every cast was sent before the stop: nothing crossed it"
        # Nothing lost, nothing done twice in effect.
        assert manager.seen == set(tokens) and set(manager.runs) == set(tokens)
        assert manager.effects == 1000
        again = manager.deliveries - manager.effects
        # Handled again only what the stop left in flight: at most the consumer's prefetch
        # window (unacked, or acked but the settlement lost with the leader, each once) and
        # the casts the broker had not confirmed (a batch).
        assert again <= 2 * settings.rpc.prefetch + batch, (
            f"{again} deliveries beyond the 1,000: {sorted(t for t, n in manager.runs.items() if n > 1)}")
        assert max(manager.runs.values()) <= 3
    finally:
        client_transport.cleanup()
        server_transport.cleanup()


STORM_CLIENTS = 8


@pytest.mark.slow
# This test found, in about one run in three, an ACTIVE server without its port: a reschedule
# raced a redelivered build, two hosts built the server, and the loser's undo released the
# port and address (their ids are the same on every attempt) of the one that went ACTIVE. The
# regression tests: tests/unit/scheduler/test_manager.py (a reschedule leaves a build its host
# took up again), test_claims.py (nothing being built is placed) and
# tests/unit/compute/test_build_and_delete.py (an undo releases only what is still this host's).
# Then, under the parallel suite's load, not every accepted server settled within 60 s. Three
# causes, each found in the broker's and workers' logs: a cast the broker nacked while a queue
# elected its new leader was logged as lost (now published again: test_rpc_rabbitmq.py::
# test_a_message_the_broker_refuses_...); a channel that published to a quorum queue before its
# new leader was known never confirmed those casts (the connection is now replaced:
# ...::test_a_connection_that_stops_confirming_is_replaced); and calls published then vanished
# until their 60 s timeout (calls' confirms are now watched the same way).
def test_losing_the_leader_node_during_a_boot_storm_costs_only_time(cluster_vhost, database_servers,  # noqa: F811
                                                                    spawn, tmp_path):
    """A boot storm through the API on the cluster with quorum queues, losing the node
    that holds the queues' leaders in the middle of it.

    Every worker is its own process (``bin/fabric-api``, ``-scheduler``, ``-ipam``, and a
    ``fabric-compute`` and ``fabric-network`` per host, fake drivers) on PostgreSQL, with
    ``transport_url`` naming the three nodes; the storm, its clients and its checks are
    the database-restart test's. Round-robin puts every connection on the first node,
    which therefore holds the leaders; once a third of the 200 creates are accepted that
    node is stopped, and stays down. Every create is answered 202 (or 503 with
    Retry-After, sent again), every accepted server ends ACTIVE or ERROR with a fault,
    and nothing is doubled (one instance, port and address per server; claims and
    hypervisors agree)."""
    cluster, vhost = cluster_vhost
    db = Database(create_schema_database(database_servers, "postgresql"))

    def spawn_on_quorum_queues(argv, env=None, name=None):
        return spawn(argv, env={**(env or {}), "FABRIC_RPC_QUORUM_QUEUES": "true"}, name=name)

    try:
        bootstrap(db, PASSWORD)
        workers, port = _start_cloud(spawn_on_quorum_queues, tmp_path,
                                     db.url.render_as_string(hide_password=False),
                                     cluster.transport_url(vhost))
        wait_until(lambda: _hosts_reported(db), 60, "both compute hosts to report", workers=workers)
        api = Api(port)
        project, body = _prepare(api)
        leaders = cluster.leaders(vhost)
        assert leaders.get("scheduler") and leaders.get("compute.h1"), leaders
        leader = cluster.node(leaders["scheduler"])
        storm = Storm(api, body)
        with ThreadPoolExecutor(STORM_CLIENTS) as pool:
            answered = [pool.submit(storm.create, n) for n in range(SERVERS)]
            assert storm.third_accepted.wait(180), f"only {len(storm.accepted())} creates accepted in 180 s"
            building_at_stop = _in_flight(db, project)
            cluster.stop_node(leader)  # this process runs no hub: the workers are processes
            for future in answered:
                future.result()
        storm_done = time.monotonic()

        others = [a for a in storm.answers if a[0] not in (202, 503)]
        assert not others, f"creates answered other than 202/503: {others[:5]}"
        assert all(extra["retry-after"] for status, _, extra in storm.answers if status == 503)
        accepted = storm.accepted()
        assert len(accepted) == SERVERS, f"{len(accepted)} of {SERVERS} creates accepted in the end"
        assert building_at_stop > 0, "the stop came after every build had finished"

        wait_until(lambda: _settled(_rows(db, project)), SETTLE_WITHIN,
                   "every accepted server ACTIVE or ERROR", workers=workers, interval=0.5)
        settle_seconds = time.monotonic() - storm_done
        rows, active, errors, faults = check_storm_outcome(db, project, accepted, workers)
        # Every worker really lost its connection and came back on another node.
        moved = cluster.leaders(vhost)
        assert leader.name not in (moved["scheduler"], moved["compute.h1"]), moved
        lost = sum(w.log().count("lost the broker connection") for w in workers)
        assert lost >= len(workers), f"only {lost} lost connections logged by {len(workers)} workers"
        print(f"{leader.name} stopped mid-storm with {building_at_stop} servers building: "
              f"{sum(1 for a in storm.answers if a[0] == 503)} creates answered 503 and sent again; "
              f"{len(active)} ACTIVE, {len(errors)} ERROR "
              f"{sorted(set(m for f in faults.values() for m in f))[:3]}; "
              f"settled {settle_seconds:.1f}s after the storm")
    finally:
        db.dispose()
