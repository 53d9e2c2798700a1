"""fabric's RPC layer: casts, calls and deferred replies over RabbitMQ (or in-process).

::

    transport = rpc.get_transport(settings.rpc)
    client = rpc.RPCClient(transport, rpc.Target(topic="ipam"))
    client.cast(ctx, "release", token=...)          # persistent, confirmed
    client.call(ctx, "describe")                    # deadline, remote errors as themselves
    server = rpc.RPCServer(transport, topic="ipam", host="host1", endpoint=manager)
    server.start(); server.stop(); server.wait(10)

See :mod:`fabric.rpc.client`, :mod:`fabric.rpc.server`, :mod:`fabric.rpc.transport`,
:mod:`fabric.rpc.factory`.
"""

from fabric.rpc.client import RPCClient, confirmed, idempotent, new_message_id
from fabric.rpc.deferred import Deferred
from fabric.rpc.factory import get_transport
from fabric.rpc.server import RPCServer
from fabric.rpc.target import Target
from fabric.rpc.transport import Transport

__all__ = ["Deferred", "RPCClient", "confirmed", "RPCServer", "Target", "Transport", "get_transport",
           "idempotent", "new_message_id"]
