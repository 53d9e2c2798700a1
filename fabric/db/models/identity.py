"""Identity: domains, projects (tenants), users, groups, roles and their grants, tokens,
the service catalog and application credentials."""

from __future__ import annotations

import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from fabric.db.models.base import Base, Timestamps
from fabric.db.types import Json, Timestamp, new_uuid


class Project(Timestamps, Base):
    """A tenant. ``tenant_number`` is its number in the L3 address layout."""

    __tablename__ = "projects"
    __table_args__ = (sa.UniqueConstraint("domain_id", "name"),)

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(sa.String(64))
    domain_id: Mapped[str] = mapped_column(sa.String(64), default="default")
    description: Mapped[str] = mapped_column(sa.String(255), default="")
    enabled: Mapped[bool] = mapped_column(default=True)
    #: A project acting as a domain (Keystone's ``is_domain``): its id is also a domain's.
    is_domain: Mapped[bool] = mapped_column(default=False, server_default=sa.false())


class ProjectParent(Base):
    """The project a project nests in (same domain); a project without a row sits directly
    in its domain. A parent with children cannot be deleted (RESTRICT)."""

    __tablename__ = "project_parents"

    project_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("projects.id", ondelete="CASCADE"),
                                            primary_key=True)
    parent_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("projects.id", ondelete="RESTRICT"),
                                           index=True)


class ProjectTag(Base):
    """A tag on a project (Keystone's project tags: ``?tags=`` filters projects by them)."""

    __tablename__ = "project_tags"

    project_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("projects.id", ondelete="CASCADE"),
                                            primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(255), primary_key=True)


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
    #: Wrong passwords since the last right one (reset by a right one, or once the lock-out
    #: has passed); changed only by atomic updates so concurrent failures all count.
    failed_auth_count: Mapped[int] = mapped_column(default=0, server_default="0")
    failed_auth_at: Mapped[datetime.datetime | None] = mapped_column(Timestamp)
    #: Attributes Keystone keeps without a column of their own (``email``, ``description``, any
    #: other a client sets), shown at the top level of the user's document. NULL on rows the
    #: previous release made.
    extra: Mapped[dict | None] = mapped_column(Json, default=dict)


class Domain(Timestamps, Base):
    """A namespace of users, groups and projects; ``default`` always exists (seeded)."""

    __tablename__ = "domains"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    description: Mapped[str] = mapped_column(sa.String(255), default="")
    enabled: Mapped[bool] = mapped_column(default=True)


class DomainConfig(Base):
    """One option of a domain's identity configuration (``/v3/domains/{id}/config``), stored
    and answered as given; fabric's drivers do not read it."""

    __tablename__ = "domain_configs"

    domain_id: Mapped[str] = mapped_column(sa.String(64), sa.ForeignKey("domains.id", ondelete="CASCADE"),
                                           primary_key=True)
    group: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    option: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(Json, nullable=True)


class Group(Timestamps, Base):
    """A set of users that can be granted roles as one."""

    __tablename__ = "identity_groups"
    __table_args__ = (sa.UniqueConstraint("domain_id", "name"),)

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(sa.String(64))
    domain_id: Mapped[str] = mapped_column(sa.String(64), default="default")
    description: Mapped[str] = mapped_column(sa.String(255), default="")


class GroupMembership(Base):
    """User is a member of SQL group."""

    __tablename__ = "group_memberships"

    user_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"),
                                         primary_key=True)
    group_id: Mapped[str] = mapped_column(sa.String(64), sa.ForeignKey("identity_groups.id", ondelete="CASCADE"),
                                          primary_key=True, index=True)


class RoleGrant(Base):
    """Every role grant but a user's on a project (those are :class:`RoleAssignment`): a
    user or group (``actor_type``) holds a role on a project, a domain or the system
    (``target_type``; ``target_id`` is ``all`` for the system). Actors and targets are not
    foreign keys because LDAP users and groups live outside the database; deleting one
    deletes its grants in code (:mod:`fabric.api.identity_grants`)."""

    __tablename__ = "role_grants"
    __table_args__ = (sa.UniqueConstraint("actor_type", "actor_id", "target_type", "target_id", "role_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    actor_type: Mapped[str] = mapped_column(sa.String(8))
    actor_id: Mapped[str] = mapped_column(sa.String(255), index=True)
    target_type: Mapped[str] = mapped_column(sa.String(8))
    target_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    role_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("roles.id", ondelete="CASCADE"))


#: ``roles.domain_id`` of a global role.
GLOBAL_ROLE = ""


class Role(Base):
    __tablename__ = "roles"
    __table_args__ = (sa.UniqueConstraint("domain_id", "name"),)

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(sa.String(64))
    #: The domain a domain-specific role belongs to; '' for a global role (a key, so names are
    #: unique per domain on every backend: NULLs would never collide).
    domain_id: Mapped[str] = mapped_column(sa.String(64), default=GLOBAL_ROLE, server_default=GLOBAL_ROLE)


class ImpliedRole(Base):
    """A role inference rule: whoever holds ``prior_role_id`` also holds ``implied_role_id``
    (transitively), in tokens and in effective role assignments."""

    __tablename__ = "implied_roles"

    prior_role_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("roles.id", ondelete="CASCADE"),
                                               primary_key=True)
    implied_role_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("roles.id", ondelete="CASCADE"),
                                                 primary_key=True)


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
    #: The application credential it was issued for: its roles are limited to the credential's.
    app_cred_id: Mapped[str | None] = mapped_column(
        sa.String(36), sa.ForeignKey("application_credentials.id", ondelete="CASCADE"))
    #: A domain-scoped token's domain; a system-scoped token has ``system`` set instead.
    domain_id: Mapped[str | None] = mapped_column(sa.String(64))
    system: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    #: How its holder proved who they are, comma-separated (``password,token`` once rescoped);
    #: NULL on tokens the previous release issued (read as ``password``).
    methods: Mapped[str | None] = mapped_column(sa.String(255))


class CatalogService(Timestamps, Base):
    """A service of the catalog (``openstack service create``)."""

    __tablename__ = "catalog_services"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True, default=new_uuid)
    type: Mapped[str] = mapped_column(sa.String(255))
    name: Mapped[str] = mapped_column(sa.String(255), default="")
    description: Mapped[str] = mapped_column(sa.String(255), default="")
    enabled: Mapped[bool] = mapped_column(default=True)


class PolicyBlob(Timestamps, Base):
    """A policy document stored for clients (Keystone's ``/v3/policies``): kept and served,
    never enforced (fabric's own policy is :mod:`fabric.api.policy`)."""

    __tablename__ = "policy_blobs"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True, default=new_uuid)
    type: Mapped[str] = mapped_column(sa.String(255))
    blob: Mapped[str] = mapped_column(sa.Text)


class Region(Timestamps, Base):
    """A region an operator made (``openstack region create``); the regions endpoints name
    and ``[api] region`` are listed too, without a row."""

    __tablename__ = "regions"

    id: Mapped[str] = mapped_column(sa.String(255), primary_key=True, default=new_uuid)
    description: Mapped[str] = mapped_column(sa.String(255), default="")
    parent_region_id: Mapped[str | None] = mapped_column(
        sa.String(255), sa.ForeignKey("regions.id", ondelete="RESTRICT"), index=True)


class EndpointGroup(Timestamps, Base):
    """A set of endpoints named by ``filters`` (any of ``service_id``, ``interface``,
    ``region_id``: every endpoint matching them all), for Keystone's OS-EP-FILTER."""

    __tablename__ = "endpoint_groups"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(sa.String(255))
    description: Mapped[str] = mapped_column(sa.String(255), default="")
    filters: Mapped[dict] = mapped_column(Json, default=dict)


class ProjectEndpointGroup(Base):
    """A project whose token catalog holds only the endpoints of the groups it is associated
    with (a project without any sees the whole catalog)."""

    __tablename__ = "project_endpoint_groups"

    endpoint_group_id: Mapped[str] = mapped_column(sa.String(64), sa.ForeignKey("endpoint_groups.id",
                                                                                ondelete="CASCADE"),
                                                   primary_key=True)
    project_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("projects.id", ondelete="CASCADE"),
                                            primary_key=True, index=True)


class CatalogEndpoint(Timestamps, Base):
    """Where one interface of a service is reached in one region. ``url`` may hold
    ``$(api_url)s`` / ``$(objectstore_url)s``, filled in when the catalog is served."""

    __tablename__ = "catalog_endpoints"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True, default=new_uuid)
    service_id: Mapped[str] = mapped_column(sa.String(64), sa.ForeignKey("catalog_services.id", ondelete="CASCADE"),
                                            index=True)
    interface: Mapped[str] = mapped_column(sa.String(8))
    region_id: Mapped[str | None] = mapped_column(sa.String(255))
    url: Mapped[str] = mapped_column(sa.String(2048))
    enabled: Mapped[bool] = mapped_column(default=True)


class ApplicationCredential(Timestamps, Base):
    """A secret a user made to let an application act on one project with some of the
    user's roles there; only a hash of the secret is kept."""

    __tablename__ = "application_credentials"
    __table_args__ = (sa.UniqueConstraint("user_id", "name"),)

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(sa.String(255))
    description: Mapped[str] = mapped_column(sa.String(255), default="")
    user_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("projects.id", ondelete="CASCADE"))
    secret_hash: Mapped[str] = mapped_column(sa.String(255))
    expires_at: Mapped[datetime.datetime | None] = mapped_column(Timestamp)
    unrestricted: Mapped[bool] = mapped_column(default=False)
    #: The role ids it carries, each one the user held on the project when it was made.
    roles: Mapped[list] = mapped_column(Json)


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


class IdentityGeneration(Base):
    """One row (``id`` 1) whose ``generation`` grows, in the same transaction, with every
    write that can change what a token check answers (:data:`TOKEN_CHECK_TABLES`): an API
    process keeps the tokens it validated while the generation it read stays the same
    (:class:`fabric.api.tokens.ValidatedTokens`)."""

    __tablename__ = "identity_generation"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    generation: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")


#: Every table a token check reads. A write to any of them bumps the identity generation
#: (issuing a token, and counting wrong passwords, change no token already issued: those two
#: do not). tests/unit/api/test_token_cache.py checks that this covers what the check reads.
TOKEN_CHECK_TABLES = frozenset({
    "tokens", "users", "domains", "projects", "project_parents", "application_credentials", "roles",
    "implied_roles", "role_assignments", "role_grants", "group_memberships", "identity_groups"})
_LOCKOUT_COLUMNS = frozenset({"failed_auth_count", "failed_auth_at", "updated_at"})
_BUMP = (sa.update(IdentityGeneration.__table__).where(IdentityGeneration.__table__.c.id == 1)
         .values(generation=IdentityGeneration.__table__.c.generation + 1))


def _changes_no_issued_token(statement, multiparams, params) -> bool:
    """A new token, or a wrong password counted: writes that leave every issued token as it was."""
    if isinstance(statement, sa.Insert):
        return statement.table.name == "tokens"
    if not isinstance(statement, sa.Update) or statement.table.name != "users":
        return False
    written = {getattr(key, "key", key) for key in getattr(statement, "_values", None) or {}}
    for row in ([params] if params else []) + list(multiparams or []):
        written |= {key for key in row if key != "users_id"}  # the ORM's primary-key parameter
    return bool(written) and written <= _LOCKOUT_COLUMNS


@sa.event.listens_for(sa.engine.Engine, "before_execute")
def _bump_generation(conn, statement, multiparams, params, execution_options) -> None:
    """Bump the generation before any INSERT, UPDATE or DELETE of a token-check table, on the
    same connection (so in the same transaction, and taken first, so two such transactions
    queue on this row rather than deadlock on each other's). Bumping on every statement
    rather than once per transaction keeps no state that a savepoint could make wrong; identity
    writes are rare (issuing a token is not one), so the table's presence is looked up each time."""
    if not isinstance(statement, (sa.Insert, sa.Update, sa.Delete)):
        return
    if statement.table.name not in TOKEN_CHECK_TABLES or _changes_no_issued_token(statement, multiparams, params):
        return
    if sa.inspect(conn).has_table(IdentityGeneration.__tablename__):  # absent below schema 0019 (migrations)
        conn.execute(_BUMP)


@sa.event.listens_for(IdentityGeneration.__table__, "after_create")
def _first_generation(table, connection, **_kw) -> None:
    """A schema made from the models (tests, ``create_all``) gets the row the migration makes."""
    connection.execute(table.insert().values(id=1, generation=0))
