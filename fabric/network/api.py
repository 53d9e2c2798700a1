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
from fabric.db.models import AddressAllocation, FloatingIp, Network, Port
from fabric.network import dbstate
from fabric.network.rpcapi import NetworkAPI

#: A port with its network (always there: a port goes with its network) and each address it
#: holds, oldest first (or one row, None: it holds none): one statement where three were.
_PORT_NETWORK_ADDRESSES = (sa.select(Port, Network, AddressAllocation.address)
                           .join(Network, Network.id == Port.network_id)
                           .outerjoin(AddressAllocation, AddressAllocation.port_id == Port.id)
                           .where(Port.id == sa.bindparam("port"))
                           .order_by(AddressAllocation.id))


class NetworkService:
    """Port plugging and floating addresses, driven from database rows.

    Topology changes are not sent from here: IPAM, which owns the topology,
    announces hosts joining and leaving (:meth:`fabric.ipam.manager.IpamManager.add_host`).
    """

    def __init__(self, db: Database, transport: Any, timeout: float | None = None) -> None:
        self.db = db
        self.rpcapi = NetworkAPI(transport, timeout=timeout)

    @staticmethod
    def _bound(port: Port | None, port_id: str) -> Port:
        if port is None:
            raise exception.NotFound(kind="port", ident=port_id)
        if not port.host:
            raise exception.Invalid(reason=f"port {port_id} is bound to no host; set its host first")
        return port

    def _port(self, session: Any, port_id: str) -> Port:
        return self._bound(session.get(Port, port_id), port_id)

    def plug_port(self, ctx: RequestContext, port_id: str) -> dict[str, Any]:
        """Plug a port on its host (setting its network up there); returns ``{"device": name}``."""
        with self.db.read() as session:  # reads only: no BEGIN and COMMIT around them
            rows = session.execute(_PORT_NETWORK_ADDRESSES, {"port": port_id}).all()
            port = self._bound(rows[0][0] if rows else None, port_id)
            row = rows[0][1]
            # Only a routed network's spec needs the layout: one read fewer on every other plug.
            layout = dbstate.datacenter_layout(session)[1] if row.network_type == "routed" else None
            subnets = dbstate.network_subnets(session, [port.network_id])  # once for both below
            network = dbstate.network_spec(session, row, port.host, layout, subnets[port.network_id])
            addresses, addresses6 = dbstate.port_addresses(
                session, [port], subnets, held=[(port.id, address) for _, _, address in rows if address is not None])
            endpoint = dbstate.endpoint_spec(port, addresses.get(port.id), addresses6.get(port.id))
            host = port.host
        return self.rpcapi.plug(ctx, host, endpoint.to_dict(), network=network.to_dict())

    def unplug_port(self, ctx: RequestContext, port_id: str) -> None:
        with self.db.read() as session:
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

    def describe_host(self, ctx: RequestContext, host: str) -> dict[str, Any]:
        return self.rpcapi.describe_host_networking(ctx, host)
