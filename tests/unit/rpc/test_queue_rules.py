"""Every queue fabric declares on RabbitMQ keeps to what RabbitMQ 4.x permits by default.

The rules, from RabbitMQ's deprecated-features list and the 4.3.0 release notes (4.3
moved these from "permitted" to "denied by default"):

* ``transient_nonexcl_queues``: a queue that is neither durable nor exclusive is refused;
* ``queue_master_locator``: the ``x-queue-master-locator`` argument is refused;
* classic queue storage v1 is gone: ``x-queue-mode`` (any value) and ``x-queue-version``
  1 are refused;
* a quorum queue is durable, never exclusive, never auto-deleted (every version).
"""

from __future__ import annotations

import pytest

from fabric import rpc
from fabric.rpc.amqp import QueueDeclaration, queue_declarations, reply_queue_declaration
from fabric.rpc.transport import DEAD_LETTER_EXCHANGE

REFUSED_ARGUMENTS = {"x-queue-master-locator", "x-queue-mode"}


def broken_rules(declaration: QueueDeclaration) -> list[str]:
    """What in one declaration RabbitMQ 4.3 would refuse by default."""
    broken = []
    if not declaration.durable and not declaration.exclusive:
        broken.append("transient and not exclusive (transient_nonexcl_queues)")
    for name in REFUSED_ARGUMENTS & declaration.arguments.keys():
        broken.append(f"argument {name}")
    if declaration.arguments.get("x-queue-version") == 1:
        broken.append("x-queue-version 1 (classic queue storage v1)")
    if declaration.arguments.get("x-queue-type") == "quorum" and (
            not declaration.durable or declaration.exclusive or declaration.auto_delete):
        broken.append("a quorum queue that is transient, exclusive or auto-deleted")
    return broken


@pytest.fixture(params=[False, True], ids=["classic", "quorum"])
def declared(request, settings, transport):
    """(settings, every queue a worker and a caller with a reply queue declare)."""
    settings = settings.replace(rpc={"quorum_queues": request.param})
    server = rpc.RPCServer(transport, topic="compute", host="host1", endpoint=object())
    declarations = queue_declarations(settings.rpc, server.queues)
    return settings, server, [*declarations, reply_queue_declaration("reply_0123abcd")]


def test_every_declared_queue_keeps_the_rabbitmq_4_rules(declared):
    settings, server, declarations = declared
    problems = {d.name: broken_rules(d) for d in declarations if broken_rules(d)}
    assert problems == {}
    # Every queue the worker consumes is among them, with a dead-letter queue where durable.
    names = [d.name for d in declarations]
    for spec in server.queues:
        assert spec.name in names
        assert (spec.dead_letter_queue in names) == spec.durable


def test_transient_queues_are_exclusive_and_durable_ones_replicated_when_asked(declared):
    settings, server, declarations = declared
    by_name = {d.name: d for d in declarations}
    fanout = next(spec for spec in server.queues if not spec.durable)
    assert by_name[fanout.name].exclusive and by_name[fanout.name].auto_delete
    assert by_name[fanout.name].exchange == "compute_fanout"
    assert by_name["reply_0123abcd"].exclusive
    for name in ("compute", "compute.host1"):
        queue = by_name[name]
        assert queue.durable and not queue.exclusive and not queue.auto_delete
        assert queue.arguments["x-dead-letter-exchange"] == DEAD_LETTER_EXCHANGE
        assert by_name[f"{name}.dead"].routing_key == name
    durable = [d for d in declarations if d.durable]
    quorum = [d for d in durable if d.arguments.get("x-queue-type") == "quorum"]
    # With quorum_queues every durable queue is replicated (a dead-letter queue on one
    # node would lose dead letters with that node), and redelivery is bounded.
    assert len(quorum) == (len(durable) if settings.rpc.quorum_queues else 0)
    for name in ("compute", "compute.host1"):
        assert ("x-delivery-limit" in by_name[name].arguments) == settings.rpc.quorum_queues


def test_the_rules_catch_what_4_3_refuses():
    """The checker itself: each refused shape is reported."""
    shapes = {
        "transient shared": QueueDeclaration("a", durable=False, exclusive=False, auto_delete=True, arguments={}),
        "master locator": QueueDeclaration("b", durable=True, exclusive=False, auto_delete=False,
                                           arguments={"x-queue-master-locator": "min-masters"}),
        "lazy mode": QueueDeclaration("c", durable=True, exclusive=False, auto_delete=False,
                                      arguments={"x-queue-mode": "lazy"}),
        "exclusive quorum": QueueDeclaration("d", durable=True, exclusive=True, auto_delete=False,
                                             arguments={"x-queue-type": "quorum"}),
    }
    assert all(broken_rules(shape) for shape in shapes.values())
