"""Projects (tenants), users, roles and tokens."""

from __future__ import annotations

import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from fabric.db.models.base import Base, Timestamps
from fabric.db.types import Timestamp, new_uuid


class Project(Timestamps, Base):
    """A tenant. ``tenant_number`` is its number in the L3 address layout."""

    __tablename__ = "projects"
    __table_args__ = (sa.UniqueConstraint("domain_id", "name"),)

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(sa.String(64))
    domain_id: Mapped[str] = mapped_column(sa.String(64), default="default")
    description: Mapped[str] = mapped_column(sa.String(255), default="")
    enabled: Mapped[bool] = mapped_column(default=True)


class User(Timestamps, Base):
    __tablename__ = "users"
    __table_args__ = (sa.UniqueConstraint("domain_id", "name"),)

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(sa.String(255))
    domain_id: Mapped[str] = mapped_column(sa.String(64), default="default")
    password_hash: Mapped[str] = mapped_column(sa.String(255), default="")
    default_project_id: Mapped[str | None] = mapped_column(
        sa.String(36), sa.ForeignKey("projects.id", ondelete="SET NULL"))
    enabled: Mapped[bool] = mapped_column(default=True)


class Role(Base):
    __tablename__ = "roles"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)


class RoleAssignment(Base):
    """User has role on project."""

    __tablename__ = "role_assignments"
    __table_args__ = (sa.UniqueConstraint("user_id", "project_id", "role_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"))
    project_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("projects.id", ondelete="CASCADE"))
    role_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("roles.id", ondelete="CASCADE"))


class Token(Base):
    """An issued token, stored only as a hash of its secret."""

    __tablename__ = "tokens"

    token_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str | None] = mapped_column(sa.String(36), sa.ForeignKey("projects.id", ondelete="CASCADE"))
    issued_at: Mapped[datetime.datetime] = mapped_column(Timestamp)
    expires_at: Mapped[datetime.datetime] = mapped_column(Timestamp, index=True)
    revoked: Mapped[bool] = mapped_column(default=False)


class Quota(Base):
    """A project's limit for one resource (absent: the default applies)."""

    __tablename__ = "quotas"
    __table_args__ = (sa.UniqueConstraint("project_id", "resource"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("projects.id", ondelete="CASCADE"))
    resource: Mapped[str] = mapped_column(sa.String(64))
    hard_limit: Mapped[int]


class QuotaUsage(Base):
    """What a project uses of one resource; changed only by compare-and-swap."""

    __tablename__ = "quota_usages"
    __table_args__ = (sa.UniqueConstraint("project_id", "resource"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("projects.id", ondelete="CASCADE"))
    resource: Mapped[str] = mapped_column(sa.String(64))
    in_use: Mapped[int] = mapped_column(default=0)
