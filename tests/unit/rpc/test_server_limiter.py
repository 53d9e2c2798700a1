"""Servers given one ``limiter`` handle at most its count of messages at once between them,
whatever each one's ``executor_size``: the fake hosts of a process (:mod:`fabric.sim.fake_hosts`)
keep their handlers within the process's database pool so."""

from __future__ import annotations

import eventlet
from eventlet.semaphore import Semaphore

from fabric import rpc
from fabric.context import RequestContext
from tests.fixtures.rpc import wait_for
from tests.unit.rpc.conftest import settings  # noqa: F401 - fixture


class Gated:
    """Handlers that wait for the test's gate, counting how many run at once."""

    def __init__(self, gate: eventlet.event.Event, tally: dict) -> None:
        self.gate = gate
        self.tally = tally

    def work(self, ctx, token):
        self.tally["running"] += 1
        self.tally["most"] = max(self.tally["most"], self.tally["running"])
        self.gate.wait()
        self.tally["running"] -= 1
        self.tally["done"].append(token)


def _serve(transport, limiter):
    gate, tally = eventlet.event.Event(), {"running": 0, "most": 0, "done": []}
    servers = [rpc.RPCServer(transport, "widgets", host, Gated(gate, tally), consume=("host",), limiter=limiter)
               for host in ("h1", "h2")]
    for server in servers:
        server.start()
    client = rpc.RPCClient(transport, rpc.Target(topic="widgets"))
    for index in range(4):
        client.prepare(server=f"h{index % 2 + 1}").cast(RequestContext.admin(), "work", token=index)
    return servers, gate, tally


def _stop(servers):
    for server in servers:
        server.stop()
        server.wait(5)


def test_servers_sharing_a_limiter_handle_one_message_at_a_time_between_them(transport):
    limiter = Semaphore(1)
    servers, gate, tally = _serve(transport, limiter)
    try:
        # Each server started a second handler for its second message; all but one wait for the limiter.
        wait_for(lambda: limiter.balance == -3, what="three handlers waiting for the limiter")
        assert tally == {"running": 1, "most": 1, "done": []}
        gate.send(True)
        wait_for(lambda: len(tally["done"]) == 4, what="all four messages handled")
        assert sorted(tally["done"]) == [0, 1, 2, 3]
        assert tally["most"] == 1
        assert limiter.balance == 1
    finally:
        gate.ready() or gate.send(True)
        _stop(servers)


def test_without_a_limiter_each_server_runs_its_own_handlers_at_once(transport):
    servers, gate, tally = _serve(transport, None)
    try:
        wait_for(lambda: tally["running"] == 4, what="four handlers running at once")
        gate.send(True)
        wait_for(lambda: len(tally["done"]) == 4, what="all four messages handled")
    finally:
        gate.ready() or gate.send(True)
        _stop(servers)
