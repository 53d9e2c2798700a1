"""L2/L3 networks, subnets, ports, address allocations and floating addresses."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from fabric.db.models.base import Base, Timestamps
from fabric.db.types import Json, new_uuid


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


class AddressAllocation(Base):
    """One handed-out address. The unique constraints are what make IPAM safe:
    an address is held at most once per pool, a request token at most once.
    """

    __tablename__ = "address_allocations"
    __table_args__ = (
        sa.UniqueConstraint("pool_id", "address"),
        sa.UniqueConstraint("pool_id", "request_token"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    pool_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    address: Mapped[str] = mapped_column(sa.String(64))
    request_token: Mapped[str] = mapped_column(sa.String(128))
    port_id: Mapped[str | None] = mapped_column(sa.String(36), sa.ForeignKey("ports.id", ondelete="CASCADE"))


class FloatingIp(Timestamps, Base):
    __tablename__ = "floating_ips"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_uuid)
    address: Mapped[str] = mapped_column(sa.String(64), unique=True)
    project_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    floating_network_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("networks.id", ondelete="CASCADE"))
    port_id: Mapped[str | None] = mapped_column(sa.String(36), sa.ForeignKey("ports.id", ondelete="SET NULL"))
    fixed_address: Mapped[str | None] = mapped_column(sa.String(64))
    host: Mapped[str | None] = mapped_column(sa.String(255))
