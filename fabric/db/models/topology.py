"""Romana-style layer-3 tenancy: datacenter layout, hosts, tenants and segments.

Every number here is checked against its bit width when assigned; the unique
constraints keep two workers from ever assigning the same number twice.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from fabric.db.models.base import Base, Timestamps


class Datacenter(Timestamps, Base):
    """The address layout: prefix | host | tenant | segment | endpoint bits."""

    __tablename__ = "datacenters"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    prefix: Mapped[str] = mapped_column(sa.String(64))
    host_bits: Mapped[int]
    tenant_bits: Mapped[int]
    segment_bits: Mapped[int]
    endpoint_bits: Mapped[int]


class TopologyHost(Timestamps, Base):
    """A host in the layout: its number gives it one aggregatable block."""

    __tablename__ = "topology_hosts"
    __table_args__ = (
        sa.UniqueConstraint("datacenter_id", "name"),
        sa.UniqueConstraint("datacenter_id", "number"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    datacenter_id: Mapped[int] = mapped_column(sa.ForeignKey("datacenters.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(sa.String(255))
    number: Mapped[int]
    tunnel_address: Mapped[str | None] = mapped_column(sa.String(64))
    agent_address: Mapped[str | None] = mapped_column(sa.String(64))


class Tenant(Timestamps, Base):
    """A project's number in the layout."""

    __tablename__ = "tenants"
    __table_args__ = (
        sa.UniqueConstraint("datacenter_id", "project_id"),
        sa.UniqueConstraint("datacenter_id", "number"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    datacenter_id: Mapped[int] = mapped_column(sa.ForeignKey("datacenters.id", ondelete="CASCADE"))
    project_id: Mapped[str] = mapped_column(sa.String(36))
    number: Mapped[int]


class Segment(Timestamps, Base):
    """A tenant's segment (its routed network) and its number."""

    __tablename__ = "segments"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "name"),
        sa.UniqueConstraint("tenant_id", "number"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(sa.String(64))
    number: Mapped[int]
