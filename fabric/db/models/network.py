"""L2/L3 networks, subnets, ports, address allocations and floating addresses."""

from __future__ import annotations

import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from fabric.db.models.base import Base, Timestamps
from fabric.db.types import Json, Timestamp, new_uuid, utcnow


class Network(Timestamps, Base):
    """A tenant network: flat, vlan, vxlan or routed (L3 tenancy)."""

    __tablename__ = "networks"
    __table_args__ = (sa.UniqueConstraint("network_type", "segmentation_id"),)

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(sa.String(255), default="")
    project_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    network_type: Mapped[str] = mapped_column(sa.String(16))
    segmentation_id: Mapped[int | None]
    physical_bridge: Mapped[str | None] = mapped_column(sa.String(15))
    shared: Mapped[bool] = mapped_column(default=False)
    external: Mapped[bool] = mapped_column(default=False)
    mtu: Mapped[int] = mapped_column(default=1450)
    status: Mapped[str] = mapped_column(sa.String(16), default="ACTIVE")
    segment_id: Mapped[int | None] = mapped_column(sa.ForeignKey("segments.id", ondelete="SET NULL"))
    description: Mapped[str] = mapped_column(sa.String(255), default="", server_default="")
    admin_state_up: Mapped[bool] = mapped_column(default=True, server_default=sa.true())


class Subnet(Timestamps, Base):
    """An address pool of a network (classic L2 IPAM)."""

    __tablename__ = "subnets"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_uuid)
    network_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("networks.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str] = mapped_column(sa.String(36))
    name: Mapped[str] = mapped_column(sa.String(255), default="")
    ip_version: Mapped[int]
    cidr: Mapped[str] = mapped_column(sa.String(64))
    gateway_ip: Mapped[str | None] = mapped_column(sa.String(64))
    allocation_pools: Mapped[list] = mapped_column(Json, default=list)
    reserved: Mapped[list] = mapped_column(Json, default=list)
    enable_dhcp: Mapped[bool] = mapped_column(default=True)
    description: Mapped[str] = mapped_column(sa.String(255), default="", server_default="")
    dns_nameservers: Mapped[list | None] = mapped_column(Json, default=list)
    #: The subnet pool its CIDR was carved from (None: given by hand).
    subnetpool_id: Mapped[str | None] = mapped_column(
        sa.String(36), sa.ForeignKey("subnet_pools.id", ondelete="RESTRICT"), index=True)
    #: IPv6 only: how guests get addresses (slaac, dhcpv6-stateful, dhcpv6-stateless) and what the
    #: router advertisements say (the same values); None: not set (see fabric.network.ipv6).
    ipv6_address_mode: Mapped[str | None] = mapped_column(sa.String(16))
    ipv6_ra_mode: Mapped[str | None] = mapped_column(sa.String(16))
    #: Routes handed to guests by DHCP (option 121): [{"destination": cidr, "nexthop": address}].
    host_routes: Mapped[list | None] = mapped_column(Json, default=list)


class Port(Timestamps, Base):
    """An endpoint on a network: a guest NIC, a DHCP server, a router leg."""

    __tablename__ = "ports"
    __table_args__ = (sa.UniqueConstraint("network_id", "mac_address"),)

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_uuid)
    network_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("networks.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str] = mapped_column(sa.String(36))
    name: Mapped[str] = mapped_column(sa.String(255), default="")
    mac_address: Mapped[str] = mapped_column(sa.String(17))
    device_id: Mapped[str | None] = mapped_column(sa.String(36), index=True)
    device_owner: Mapped[str | None] = mapped_column(sa.String(64))
    host: Mapped[str | None] = mapped_column(sa.String(255))
    status: Mapped[str] = mapped_column(sa.String(16), default="DOWN")
    binding: Mapped[dict] = mapped_column(Json, default=dict)
    description: Mapped[str] = mapped_column(sa.String(255), default="", server_default="")
    admin_state_up: Mapped[bool] = mapped_column(default=True, server_default=sa.true())


class AddressPool(Base):
    """One IPAM pool: a subnet's addresses, or one routed segment's block on one host.

    ``definition`` fixes the pool's allocatable ranges when the pool is first
    used (a pool's ordinals are positions in those ranges, so they never
    change). ``next_ordinal`` is the high-water mark: every ordinal below it
    has been handed out at least once, and each one that is free again is in
    ``free_addresses``; allocation takes the lowest free ordinal below the
    mark, else raises the mark (a compare-and-swap on this row).
    """

    __tablename__ = "address_pools"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    subnet_id: Mapped[str | None] = mapped_column(sa.String(36), sa.ForeignKey("subnets.id", ondelete="CASCADE"), index=True)
    segment_id: Mapped[int | None] = mapped_column(sa.ForeignKey("segments.id", ondelete="CASCADE"), index=True)
    host_id: Mapped[int | None] = mapped_column(sa.ForeignKey("topology_hosts.id", ondelete="CASCADE"), index=True)
    definition: Mapped[dict] = mapped_column(Json)
    size_limit: Mapped[int] = mapped_column(sa.BigInteger)
    next_ordinal: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    created_at: Mapped[datetime.datetime] = mapped_column(Timestamp, default=utcnow)


class FreeAddress(Base):
    """An ordinal released below its pool's high-water mark, free to hand out again."""

    __tablename__ = "free_addresses"

    pool_id: Mapped[str] = mapped_column(sa.String(64), sa.ForeignKey("address_pools.id", ondelete="CASCADE"),
                                         primary_key=True)
    ordinal: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)


class AddressAllocation(Base):
    """One handed-out address. The unique constraints are what make IPAM safe:
    an address (and its ordinal) is held at most once per pool, a request
    token at most once per pool. ``ordinal`` is NULL for an explicitly
    requested address outside the pool's allocation ranges.
    """

    __tablename__ = "address_allocations"
    __table_args__ = (
        sa.UniqueConstraint("pool_id", "address"),
        sa.UniqueConstraint("pool_id", "request_token"),
        sa.UniqueConstraint("pool_id", "ordinal"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # No index of its own: the unique constraints lead with pool_id. One on pool_id alone
    # tempted PostgreSQL (statistics lagging a fast-growing table) to read a whole pool
    # instead of looking a token up in (pool_id, request_token).
    pool_id: Mapped[str] = mapped_column(sa.String(64), sa.ForeignKey("address_pools.id", ondelete="CASCADE"))
    address: Mapped[str] = mapped_column(sa.String(64))
    ordinal: Mapped[int | None] = mapped_column(sa.BigInteger)
    request_token: Mapped[str] = mapped_column(sa.String(128))
    # SET NULL, not CASCADE: deleting a port must not free an address behind IPAM's back.
    port_id: Mapped[str | None] = mapped_column(sa.String(36), sa.ForeignKey("ports.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime.datetime] = mapped_column(Timestamp, default=utcnow)


class FloatingIp(Timestamps, Base):
    __tablename__ = "floating_ips"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_uuid)
    address: Mapped[str] = mapped_column(sa.String(64), unique=True)
    project_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    floating_network_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("networks.id", ondelete="CASCADE"))
    port_id: Mapped[str | None] = mapped_column(sa.String(36), sa.ForeignKey("ports.id", ondelete="SET NULL"))
    fixed_address: Mapped[str | None] = mapped_column(sa.String(64))
    host: Mapped[str | None] = mapped_column(sa.String(255))


class Router(Timestamps, Base):
    """A project's router: subnets attached through ``router_interfaces`` ports, and an
    optional gateway port on an external network (``gateway_port_id``)."""

    __tablename__ = "routers"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_uuid)
    project_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    name: Mapped[str] = mapped_column(sa.String(255), default="")
    description: Mapped[str] = mapped_column(sa.String(255), default="")
    admin_state_up: Mapped[bool] = mapped_column(default=True)
    status: Mapped[str] = mapped_column(sa.String(16), default="ACTIVE")
    external_network_id: Mapped[str | None] = mapped_column(
        sa.String(36), sa.ForeignKey("networks.id", ondelete="RESTRICT"), index=True)
    gateway_port_id: Mapped[str | None] = mapped_column(
        sa.String(36), sa.ForeignKey("ports.id", ondelete="SET NULL"))
    enable_snat: Mapped[bool] = mapped_column(default=True)
    #: Extra routes: [{"destination": cidr, "nexthop": address}], each next hop inside one of
    #: the router's subnets (fabric.api.routers checks it).
    routes: Mapped[list | None] = mapped_column(Json, default=list)


class RouterInterface(Base):
    """One subnet attached to a router: the port (``network:router_interface``) holding
    the subnet's gateway address. A subnet is attached to at most one router (the unique
    constraint settles concurrent attachments)."""

    __tablename__ = "router_interfaces"

    port_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("ports.id", ondelete="CASCADE"),
                                         primary_key=True)
    router_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("routers.id", ondelete="CASCADE"),
                                           index=True)
    subnet_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("subnets.id", ondelete="RESTRICT"),
                                           unique=True)
    ip_address: Mapped[str] = mapped_column(sa.String(64))


class SubnetPool(Timestamps, Base):
    """Prefixes a project carves subnets from (``subnet create --subnet-pool``).

    ``revision`` is bumped by compare-and-swap with every subnet carved, so two carvings
    from one pool never both commit from the same view of what is taken.
    """

    __tablename__ = "subnet_pools"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_uuid)
    project_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    name: Mapped[str] = mapped_column(sa.String(255), default="")
    description: Mapped[str] = mapped_column(sa.String(255), default="")
    ip_version: Mapped[int]
    prefixes: Mapped[list] = mapped_column(Json, default=list)
    default_prefixlen: Mapped[int]
    min_prefixlen: Mapped[int]
    max_prefixlen: Mapped[int]
    shared: Mapped[bool] = mapped_column(default=False)
    is_default: Mapped[bool] = mapped_column(default=False)
    revision: Mapped[int] = mapped_column(default=0)
