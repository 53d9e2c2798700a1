"""What other services import to get ports onto hosts' data planes.

Reads the ports, networks and topology from the database, builds the specs the
network workers take, and sends them through :class:`~fabric.network.rpcapi.NetworkAPI`.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from fabric import exception
from fabric.context import RequestContext
from fabric.db import Database
from fabric.db.models import FloatingIp, Network, Port, TopologyHost
from fabric.network import dbstate
from fabric.network.model import HostSpec
from fabric.network.rpcapi import NetworkAPI


class NetworkService:
    """Port plugging, floating addresses and topology fanout, driven from database rows."""

    def __init__(self, db: Database, transport: Any, timeout: float | None = None) -> None:
        self.db = db
        self.rpcapi = NetworkAPI(transport, timeout=timeout)

    def _port(self, session: Any, port_id: str) -> Port:
        port = session.get(Port, port_id)
        if port is None:
            raise exception.NotFound(kind="port", ident=port_id)
        if not port.host:
            raise exception.Invalid(reason=f"port {port_id} is bound to no host; set its host first")
        return port

    def plug_port(self, ctx: RequestContext, port_id: str) -> dict[str, Any]:
        """Plug a port on its host (setting its network up there); returns ``{"device": name}``."""
        with self.db.begin() as session:
            port = self._port(session, port_id)
            _, layout = dbstate.datacenter_layout(session)
            network = dbstate.network_spec(session, session.get(Network, port.network_id), port.host, layout)
            address = dbstate.ipv4_addresses(session, [port.id]).get(port.id)
            endpoint = dbstate.endpoint_spec(port, address)
            host = port.host
        return self.rpcapi.plug(ctx, host, endpoint.to_dict(), network=network.to_dict())

    def unplug_port(self, ctx: RequestContext, port_id: str) -> None:
        with self.db.begin() as session:
            host = self._port(session, port_id).host
        self.rpcapi.unplug(ctx, host, port_id)

    def associate_floating(self, ctx: RequestContext, floating_id: str) -> None:
        with self.db.begin() as session:
            floating = session.get(FloatingIp, floating_id)
            if floating is None:
                raise exception.NotFound(kind="floating IP", ident=floating_id)
            if not (floating.host and floating.fixed_address):
                raise exception.Invalid(reason=f"floating IP {floating.address} has no host and fixed "
                                               "address to translate to")
            host, address, fixed = floating.host, floating.address, floating.fixed_address
        self.rpcapi.associate_floating(ctx, host, address, fixed)

    def disassociate_floating(self, ctx: RequestContext, host: str, address: str) -> None:
        self.rpcapi.disassociate_floating(ctx, host, address)

    def host_joined(self, ctx: RequestContext, name: str) -> None:
        """Tell every network worker about a host added to the topology."""
        with self.db.begin() as session:
            row = session.scalars(sa.select(TopologyHost).where(TopologyHost.name == name)).first()
            if row is None:
                raise exception.NotFound(kind="topology host", ident=name)
            _, layout = dbstate.datacenter_layout(session)
            block = str(layout.host_block(row.number)) if layout is not None else None
            if not row.tunnel_address:
                raise exception.Invalid(reason=f"host {name} has no tunnel_address in the topology")
            spec = HostSpec(name, row.tunnel_address, block)
        self.rpcapi.host_joined(ctx, spec.to_dict())

    def host_left(self, ctx: RequestContext, name: str) -> None:
        self.rpcapi.host_left(ctx, name)

    def describe_host(self, ctx: RequestContext, host: str) -> dict[str, Any]:
        return self.rpcapi.describe_host_networking(ctx, host)
