"""The services registry and the compute hosts' resources."""

from __future__ import annotations

import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from fabric.db.models.base import Base, Timestamps
from fabric.db.types import Json, Timestamp


class Service(Timestamps, Base):
    """One running worker: who it is, where, and when it last reported."""

    __tablename__ = "services"
    __table_args__ = (sa.UniqueConstraint("host", "binary"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    host: Mapped[str] = mapped_column(sa.String(255))
    binary: Mapped[str] = mapped_column(sa.String(64))
    topic: Mapped[str] = mapped_column(sa.String(64))
    version: Mapped[str] = mapped_column(sa.String(32), default="")
    address: Mapped[str] = mapped_column(sa.String(255), default="")
    capabilities: Mapped[dict] = mapped_column(Json, default=dict)
    disabled: Mapped[bool] = mapped_column(default=False)
    disabled_reason: Mapped[str | None] = mapped_column(sa.String(255))
    last_heartbeat: Mapped[datetime.datetime | None] = mapped_column(Timestamp)
    report_count: Mapped[int] = mapped_column(default=0)
    #: Fanout messages the running process dropped (a fanout queue has no dead-letter queue),
    #: by reason code, since it registered; written with a heartbeat, reset at registration.
    fanout_drops: Mapped[dict | None] = mapped_column(Json)
    #: When the last of them was dropped (the worker's clock); None: none since it registered.
    fanout_dropped_at: Mapped[datetime.datetime | None] = mapped_column(Timestamp)


class ComputeNode(Timestamps, Base):
    """A hypervisor host's capacity (reported) and usage (claimed).

    ``generation`` grows with every change to usage so claims can be
    compare-and-swap updates that never over-commit.
    """

    __tablename__ = "compute_nodes"

    id: Mapped[int] = mapped_column(primary_key=True)
    host: Mapped[str] = mapped_column(sa.String(255), unique=True)
    availability_zone: Mapped[str] = mapped_column(sa.String(255), default="nova")
    hypervisor_type: Mapped[str] = mapped_column(sa.String(32), default="fake")
    vcpus: Mapped[int] = mapped_column(default=0)
    memory_mb: Mapped[int] = mapped_column(default=0)
    disk_gb: Mapped[int] = mapped_column(default=0)
    vcpus_used: Mapped[int] = mapped_column(default=0)
    memory_mb_used: Mapped[int] = mapped_column(default=0)
    disk_gb_used: Mapped[int] = mapped_column(default=0)
    running_vms: Mapped[int] = mapped_column(default=0)
    generation: Mapped[int] = mapped_column(default=0)
    stats: Mapped[dict] = mapped_column(Json, default=dict)
    last_report: Mapped[datetime.datetime | None] = mapped_column(Timestamp)
    # Builds that failed here and when the last one did: the scheduler weighs
    # such hosts down for a while instead of sending them more work.
    failed_builds: Mapped[int] = mapped_column(default=0)
    last_build_failure_at: Mapped[datetime.datetime | None] = mapped_column(Timestamp)

    __mapper_args__ = {"eager_defaults": True}


class ServerGroupHost(Base):
    """A server group's claim on a host, made in the same transaction as the resource claim.

    ``slot`` is unique per group: for anti-affinity it is the host name (one
    member per host), for affinity the constant ``"affinity"`` (the first
    placement pins the group's one host, and ``members`` counts the members
    placed there so the pin is dropped only when the last one leaves).
    Concurrent schedulers therefore cannot break either policy: the loser of
    a race gets a unique violation or a compare-and-swap that matched no row.
    """

    __tablename__ = "server_group_hosts"
    __table_args__ = (sa.UniqueConstraint("group_id", "slot"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    group_id: Mapped[str] = mapped_column(
        sa.String(36), sa.ForeignKey("server_groups.id", ondelete="CASCADE"))
    slot: Mapped[str] = mapped_column(sa.String(255))
    host: Mapped[str] = mapped_column(sa.String(255))
    # The member holding an anti-affinity slot; None for an affinity pin (shared by members).
    instance_id: Mapped[str | None] = mapped_column(
        sa.String(36), sa.ForeignKey("instances.id", ondelete="CASCADE"), index=True)
    members: Mapped[int] = mapped_column(default=1)

