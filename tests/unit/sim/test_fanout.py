"""One fanout consumer for all the fake hosts of a process (:mod:`fabric.sim.fanout`): every
started host's manager gets each fanout once, with the method, arguments and context sent,
in the order sent; a host that fails is tried again alone; a message its servers would refuse
reaches none. One memory:// broker; stand-in managers record what they were handed, and the
real network workers of two hosts (fake driver) take a ``host_joined``.
"""

from __future__ import annotations

import eventlet
import pytest
from eventlet.event import Event

from fabric import context as fabric_context
from fabric import rpc, servicegroup
from fabric.context import RequestContext
from fabric.db.types import utcnow
from fabric.exception import DatabaseUnavailable
from fabric.network.drivers.fake import FakeDriver
from fabric.network.manager import NetworkManager
from fabric.network.model import HostSpec
from fabric.rpc import signing
from fabric.rpc.metrics import RPC as METRICS
from fabric.sim.fanout import HostFanout
from tests.fixtures.rpc import wait_for
from tests.unit.rpc.conftest import settings  # noqa: F401 - fixture


class Host:
    """A host's manager of topic ``widgets``: records what it is handed."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.handled: list[tuple[str, object, str]] = []
        self.failures_left = 0
        self.gate: Event | None = None
        self.current: RequestContext | None = None

    def record(self, ctx, token):
        # The request's context is the current one while the handler runs (log lines carry its id).
        self.handled.append(("record", token, ctx.request_id))
        self.current = fabric_context.current()

    def flaky(self, ctx, token):
        if self.failures_left:
            self.failures_left -= 1
            raise RuntimeError(f"{self.host} is on fire")
        self.handled.append(("flaky", token, ctx.request_id))

    def unreachable(self, ctx, token):
        if self.failures_left:
            self.failures_left -= 1
            raise DatabaseUnavailable("The database is unreachable: gone", url="", reason="gone")
        self.handled.append(("unreachable", token, ctx.request_id))

    def held(self, ctx, token):
        if self.gate is not None:
            self.gate.wait()
        self.handled.append(("held", token, ctx.request_id))


@pytest.fixture
def hosts():
    return [Host(f"h{n}") for n in range(1, 6)]


@pytest.fixture
def fanout(transport, hosts):
    fanout = HostFanout(transport, "widgets", "proc-1", hosts, lanes=2)
    fanout.start()
    yield fanout
    fanout.stop()
    fanout.wait(5)


@pytest.fixture
def client(transport):
    return rpc.RPCClient(transport, rpc.Target(topic="widgets"))


def tokens(host: Host, method: str = "record") -> list[object]:
    return [token for name, token, _ in host.handled if name == method]


def test_each_admitted_host_gets_the_fanout_once_with_its_arguments_and_context(fanout, hosts, client):
    for host in hosts[:4]:
        fanout.admit(host.host)
    ctx = RequestContext(user_id="alice", project_id="p1")

    client.fanout_cast(ctx, "record", token={"nested": [1, "two"]})

    wait_for(lambda: all(host.handled for host in hosts[:4]), what="every admitted host to get the fanout")
    eventlet.sleep(0.05)
    assert [host.handled for host in hosts[:4]] == [[("record", {"nested": [1, "two"]}, ctx.request_id)]] * 4
    assert all(host.current == ctx for host in hosts[:4])
    assert hosts[4].handled == []  # not started yet: it reads what it needs when it starts
    assert sorted(fanout.admitted) == ["h1", "h2", "h3", "h4"]


def test_a_host_gets_the_fanouts_in_the_order_sent_while_another_waits(fanout, hosts, client):
    for host in hosts:
        fanout.admit(host.host)
    slow = hosts[0]  # lane 0 with h3 and h5; h2 and h4 are lane 1's
    slow.gate = Event()
    ctx = RequestContext.admin()
    for token in range(3):
        client.fanout_cast(ctx, "held", token=token)

    # The other lane's hosts are not held up by h1.
    wait_for(lambda: tokens(hosts[1], "held") == [0, 1, 2] and tokens(hosts[3], "held") == [0, 1, 2],
             what="the other lane's hosts to get all three")
    assert tokens(slow, "held") == []
    slow.gate.send(True)
    wait_for(lambda: all(tokens(host, "held") == [0, 1, 2] for host in hosts), what="every host, in order")


def test_a_failing_host_is_retried_alone_and_does_not_stop_the_others(fanout, hosts, client, settings):  # noqa: F811
    for host in hosts:
        fanout.admit(host.host)
    hosts[1].failures_left = 2  # fails twice, then takes it (max_deliveries is 3)
    hosts[2].failures_left = 10  # never takes it
    dropped = METRICS.dead_letters[("widgets", "failed")]

    client.fanout_cast(RequestContext.admin(), "flaky", token="t")

    wait_for(lambda: tokens(hosts[1], "flaky") == ["t"], what="h2's third try")
    wait_for(lambda: METRICS.dead_letters[("widgets", "failed")] == dropped + 1, what="h3's copy dropped")
    assert [tokens(host, "flaky") for host in hosts] == [["t"], ["t"], [], ["t"], ["t"]]
    assert hosts[2].failures_left == 10 - settings.rpc.max_deliveries
    # Counted for h3's heartbeat alone (h2 took it in the end).
    counts, last = fanout.drops_for("h3")
    assert counts == {"failed": 1} and abs((utcnow() - last).total_seconds()) < 5
    assert [fanout.drops_for(host.host) for host in hosts if host.host != "h3"] == [({}, None)] * 4


def test_a_host_that_cannot_reach_the_database_gets_the_fanout_once_it_can(fanout, hosts, client, monkeypatch):
    monkeypatch.setattr("fabric.db.retry.FIRST_PAUSE", 0.01)
    for host in hosts:
        fanout.admit(host.host)
    hosts[0].failures_left = 5  # more than max_deliveries: not failures, waits
    failed = METRICS.handled[("cast", "widgets", "unreachable", "error")]

    client.fanout_cast(RequestContext.admin(), "unreachable", token="t")

    wait_for(lambda: all(tokens(host, "unreachable") == ["t"] for host in hosts), what="every host, h1 too")
    assert hosts[0].failures_left == 0
    assert METRICS.handled[("cast", "widgets", "unreachable", "error")] == failed


def test_arguments_a_method_does_not_take_are_dropped_at_once_for_every_host(fanout, hosts, client):
    for host in hosts:
        fanout.admit(host.host)
    invalid = METRICS.dead_letters[("widgets", "invalid")]

    client.fanout_cast(RequestContext.admin(), "record", wrong="x")
    client.fanout_cast(RequestContext.admin(), "record", token="after")

    wait_for(lambda: all(tokens(host) == ["after"] for host in hosts), what="the next fanout everywhere")
    assert METRICS.dead_letters[("widgets", "invalid")] == invalid + len(hosts)
    assert [fanout.drops_for(host.host)[0] for host in hosts] == [{"invalid": 1}] * len(hosts)


def test_what_the_server_refuses_for_every_host_is_the_reporters_to_report(fanout, hosts, client, transport):
    """A refused fanout reaches no host: it is counted once, for the process's first host (its
    heartbeat reports it: tests/unit/sim/test_fake_hosts_fanout.py), not once per host, under a
    code that says it was every host's (fabric.servicegroup.process_wide)."""
    for host in hosts:
        fanout.admit(host.host)
    assert fanout.reporter == "h1"
    transport.publish("widgets_fanout", "widgets", b'{"v": 1}', message_id=rpc.new_message_id())
    transport.publish("widgets_fanout", "widgets", b'{"v": 1}', message_id=rpc.new_message_id())
    client.fanout_cast(RequestContext.admin(), "record", token="after")

    wait_for(lambda: all(tokens(host) == ["after"] for host in hosts), what="the next fanout everywhere")
    wait_for(lambda: fanout.drops_for("h1")[0] == {servicegroup.process_wide("unsigned"): 2}, what="both refusals counted")
    counts, last = fanout.drops_for("h1")
    assert counts == {servicegroup.process_wide("unsigned"): 2} and last == fanout.server.fanout_dropped_at is not None
    assert [fanout.drops_for(host.host) for host in hosts[1:]] == [({}, None)] * 4


@pytest.fixture
def networks(transport, settings):  # noqa: F811
    managers = [NetworkManager(settings.replace(default={"host": host}), host=host, transport=transport,
                               driver=FakeDriver(settings)) for host in ("n1", "n2", "n3")]
    fanout = HostFanout(transport, "network", "proc-1", managers)
    fanout.start()
    for manager in managers:
        fanout.admit(manager.host)
    yield managers
    fanout.stop()
    fanout.wait(5)


def test_the_network_workers_of_the_process_each_take_host_joined(transport, networks):
    api = rpc.RPCClient(transport, rpc.Target(topic="network"))
    spec = HostSpec("n9", "192.168.0.9", "10.64.0.0/20")

    with signing.acting_as("ipam"):
        api.fanout_cast(RequestContext.admin(), "host_joined", host=spec.to_dict())

    wait_for(lambda: all(m.driver.state.remote_hosts.get("n9") == spec for m in networks),
             what="n9 in every network worker's remote hosts")


def test_a_fanout_its_callers_table_refuses_reaches_no_host(transport, networks):
    api = rpc.RPCClient(transport, rpc.Target(topic="network"))
    spec = HostSpec("n8", "192.168.0.8", "10.64.16.0/20")

    with signing.acting_as("compute"):  # host_joined is IPAM's
        api.fanout_cast(RequestContext.admin(), "host_joined", host=spec.to_dict())
    with signing.acting_as("ipam"):
        api.fanout_cast(RequestContext.admin(), "host_joined", host=HostSpec("n9", "192.168.0.9",
                                                                             "10.64.0.0/20").to_dict())

    wait_for(lambda: all("n9" in m.driver.state.remote_hosts for m in networks), what="the next fanout")
    assert not any("n8" in m.driver.state.remote_hosts for m in networks)


def test_a_fanout_needs_hosts_with_distinct_names(transport):
    with pytest.raises(ValueError, match="repeat"):
        HostFanout(transport, "widgets", "proc-1", [Host("h1"), Host("h1")])
    with pytest.raises(ValueError, match="no host"):
        HostFanout(transport, "widgets", "proc-1", [])
