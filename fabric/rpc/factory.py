"""How a process gets its transport: the one module that knows every transport.

It sits above :mod:`fabric.rpc.transport` (the interface) and the transports that
implement it (:mod:`fabric.rpc.amqp`, :mod:`fabric.rpc.memory`), so the interface
never depends on what implements it.
"""

from __future__ import annotations

from typing import Any

from fabric.exception import Invalid
from fabric.rpc import envelope
from fabric.rpc.transport import Transport


def get_transport(rpc_settings: Any) -> Transport:
    """The transport for ``rpc_settings.transport_url`` (one per process):
    :class:`~fabric.rpc.amqp.AmqpTransport` for ``amqp://`` (RabbitMQ through
    py-amqp), :class:`~fabric.rpc.memory.MemoryTransport` for ``memory://`` (an
    in-process broker with RabbitMQ's semantics).

    Raises :class:`~fabric.exception.Invalid` for a URL scheme other than ``amqp://``
    or ``memory://``, or an envelope version this release does not write.
    """
    try:
        envelope.check_version(rpc_settings.envelope_version)
    except ValueError as exc:
        raise Invalid(reason=f"[rpc] envelope_version: {exc}") from None
    url = rpc_settings.transport_url
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("amqp", "pyamqp"):
        # Imported here: a process on memory:// never loads py-amqp.
        from fabric.rpc.amqp import AmqpTransport

        return AmqpTransport(rpc_settings)
    if scheme == "memory":
        from fabric.rpc.memory import MemoryTransport

        return MemoryTransport(rpc_settings)
    raise Invalid(reason=f"transport_url {url!r}: accepted schemes are amqp:// and memory://")
