"""An RPC server consumes the queues its ``consume`` names: a process of many simulated hosts
(:mod:`fabric.sim.fanout`) has its hosts' servers leave the fanout to one server of its own."""

from __future__ import annotations

import pytest

from fabric import rpc
from fabric.context import RequestContext
from fabric.exception import Unroutable
from tests.fixtures.rpc import wait_for
from tests.unit.rpc.conftest import settings  # noqa: F401 - fixture


class Recorder:
    def __init__(self) -> None:
        self.handled: list[str] = []

    def record(self, ctx, token):
        self.handled.append(token)
        return token


def test_a_server_without_the_fanout_queue_takes_its_own_queues_only(transport):
    host, fanout_only = Recorder(), Recorder()
    servers = [rpc.RPCServer(transport, "widgets", "h1", host, consume=("shared", "host")),
               rpc.RPCServer(transport, "widgets", "proc", fanout_only, consume=("fanout",))]
    assert [q.name for q in servers[0].queues] == ["widgets", "widgets.h1"]
    assert [q.exchange for q in servers[1].queues] == ["widgets_fanout"]
    for server in servers:
        server.start()
    try:
        client = rpc.RPCClient(transport, rpc.Target(topic="widgets"))
        ctx = RequestContext.admin()
        assert client.call(ctx, "record", token="any") == "any"
        assert client.prepare(server="h1").call(ctx, "record", token="h1") == "h1"
        client.fanout_cast(ctx, "record", token="all")
        wait_for(lambda: fanout_only.handled == ["all"], what="the fanout at the fanout-only server")
        assert host.handled == ["any", "h1"]
        with pytest.raises(Unroutable):  # nobody consumes proc's host queue
            client.prepare(server="proc").cast(ctx, "record", token="x")
    finally:
        for server in servers:
            server.stop()
            server.wait(5)


@pytest.mark.parametrize("consume", [(), ("fanout", "everything")])
def test_consume_names_some_of_the_three_queues(transport, consume):
    with pytest.raises(ValueError, match="shared, host, fanout"):
        rpc.RPCServer(transport, "widgets", "h1", Recorder(), consume=consume)
