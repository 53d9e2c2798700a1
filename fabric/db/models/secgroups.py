"""Security groups, their rules, and which ports are in which group.

A project's ``default`` group is the row whose ``default_for`` is the project's
id: the unique constraint on that column makes "create it on first use" safe
when two requests race (the loser reads the winner's row).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from fabric.db.models.base import Base, Timestamps
from fabric.db.types import new_uuid


class SecurityGroup(Timestamps, Base):
    __tablename__ = "security_groups"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_uuid)
    project_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    name: Mapped[str] = mapped_column(sa.String(255), default="")
    description: Mapped[str] = mapped_column(sa.String(255), default="")
    #: The project's id on its ``default`` group, NULL on every other group.
    default_for: Mapped[str | None] = mapped_column(sa.String(36), unique=True)


class SecurityGroupRule(Timestamps, Base):
    """One allow rule (values checked by :func:`fabric.network.secgroups.RuleSpec`)."""

    __tablename__ = "security_group_rules"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_uuid)
    security_group_id: Mapped[str] = mapped_column(
        sa.String(36), sa.ForeignKey("security_groups.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str] = mapped_column(sa.String(36))
    direction: Mapped[str] = mapped_column(sa.String(8))
    ethertype: Mapped[str] = mapped_column(sa.String(8))
    protocol: Mapped[str | None] = mapped_column(sa.String(16))
    port_range_min: Mapped[int | None]
    port_range_max: Mapped[int | None]
    remote_ip_prefix: Mapped[str | None] = mapped_column(sa.String(64))
    remote_group_id: Mapped[str | None] = mapped_column(
        sa.String(36), sa.ForeignKey("security_groups.id", ondelete="CASCADE"), index=True)
    description: Mapped[str] = mapped_column(sa.String(255), default="")


class PortSecurityGroup(Base):
    """Port ``port_id`` is a member of group ``security_group_id``."""

    __tablename__ = "port_security_groups"

    port_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("ports.id", ondelete="CASCADE"),
                                         primary_key=True)
    security_group_id: Mapped[str] = mapped_column(
        sa.String(36), sa.ForeignKey("security_groups.id", ondelete="CASCADE"), primary_key=True, index=True)
