"""Tokens: issued for a password (or an existing token), stored only as the
sha256 of their random secret, expiring after ``[api] token_ttl``, revocable.

:func:`authenticate` turns an Identity v3 ``auth`` document into a
:class:`TokenInfo`; :func:`validate` turns a presented secret back into one.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import secrets

import sqlalchemy as sa

from fabric import exception
from fabric.api import passwords
from fabric.db import Database
from fabric.db.models import Project, Role, RoleAssignment, Token, User
from fabric.db.types import utcnow

DEFAULT_DOMAIN = {"id": "default", "name": "Default"}


@dataclasses.dataclass(frozen=True)
class TokenInfo:
    """Who a token speaks for, and until when."""

    token_hash: str
    user_id: str
    user_name: str
    user_domain_id: str
    project_id: str | None
    project_name: str | None
    project_domain_id: str | None
    roles: tuple[tuple[str, str], ...]  # (id, name)
    issued_at: datetime.datetime
    expires_at: datetime.datetime
    methods: tuple[str, ...] = ("password",)

    @property
    def role_names(self) -> tuple[str, ...]:
        return tuple(name for _, name in self.roles)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.role_names


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def domain_id_for(domain: dict | None) -> str:
    """A domain reference ({"id"} or {"name"}) as a domain id; the only named domain
    fabric knows is ``Default``; any other name is its own id."""
    if not domain:
        return DEFAULT_DOMAIN["id"]
    if not isinstance(domain, dict):
        raise exception.Invalid(reason=f"a domain must be an object with an 'id' or a 'name', got {domain!r}")
    if domain.get("id"):
        return str(domain["id"])
    name = str(domain.get("name") or "")
    return DEFAULT_DOMAIN["id"] if name in ("Default", "default", "") else name


def _find_user(session, ref: dict) -> User | None:
    if ref.get("id"):
        return session.get(User, str(ref["id"]))
    if not ref.get("name"):
        raise exception.Invalid(reason="auth.identity.password.user needs an 'id' or a 'name' (with a 'domain')")
    return session.scalar(sa.select(User).where(User.name == str(ref["name"]),
                                                User.domain_id == domain_id_for(ref.get("domain"))))


def _find_project(session, ref: dict) -> Project | None:
    if not isinstance(ref, dict):
        raise exception.Invalid(reason=f"auth.scope.project must be an object with an 'id' or a 'name', got {ref!r}")
    if ref.get("id"):
        return session.get(Project, str(ref["id"]))
    if not ref.get("name"):
        raise exception.Invalid(reason="auth.scope.project needs an 'id' or a 'name' (with a 'domain')")
    return session.scalar(sa.select(Project).where(Project.name == str(ref["name"]),
                                                   Project.domain_id == domain_id_for(ref.get("domain"))))


def roles_of(session, user_id: str, project_id: str) -> list[tuple[str, str]]:
    rows = session.execute(
        sa.select(Role.id, Role.name).join(RoleAssignment, RoleAssignment.role_id == Role.id)
        .where(RoleAssignment.user_id == user_id, RoleAssignment.project_id == project_id)
        .order_by(Role.name)).all()
    return [(r.id, r.name) for r in rows]


def authenticate(db: Database, auth: dict, ttl: int) -> tuple[str, TokenInfo]:
    """Check the credentials of an Identity v3 ``auth`` document and issue a token.

    Returns (secret, info). Raises NotAuthenticated for unknown users, wrong
    passwords, disabled users or projects and unknown or expired tokens (one
    message for user and password so names cannot be probed); Invalid for a
    malformed document; Forbidden when the user has no role on the project.
    """
    identity = auth.get("identity") if isinstance(auth, dict) else None
    if not isinstance(identity, dict):
        raise exception.Invalid(reason="auth.identity is required")
    methods = identity.get("methods") or []
    scope = auth.get("scope") or {}
    now = utcnow()
    with db.begin() as session:
        if "password" in methods:
            user_ref = (identity.get("password") or {}).get("user")
            if not isinstance(user_ref, dict) or not isinstance(user_ref.get("password"), str):
                raise exception.Invalid(reason="auth.identity.password.user needs 'password' and an 'id' or 'name'")
            user = _find_user(session, user_ref)
            if user is None or not passwords.verify_password(user_ref["password"], user.password_hash):
                raise exception.NotAuthenticated(reason="the user name, domain or password is wrong")
            used_methods: tuple[str, ...] = ("password",)
        elif "token" in methods:
            token_ref = identity.get("token") or {}
            presented = str(token_ref.get("id") or "") if isinstance(token_ref, dict) else ""
            previous = _lookup(session, presented, now)
            user = session.get(User, previous.user_id)
            used_methods = ("token",)
        else:
            raise exception.Invalid(reason=f"auth methods {methods!r} are not supported; use 'password' or 'token'")
        if not user.enabled:
            raise exception.NotAuthenticated(reason=f"user {user.id} is disabled")

        project = None
        if isinstance(scope, dict) and scope.get("project"):
            project = _find_project(session, scope["project"])
            if project is None:
                raise exception.NotAuthenticated(reason=f"no project matches the scope {scope['project']!r}")
        elif isinstance(scope, dict) and (scope.get("domain") or scope.get("system")):
            raise exception.Invalid(reason="only project scope is supported (auth.scope.project)")
        elif user.default_project_id:
            project = session.get(Project, user.default_project_id)
        roles: list[tuple[str, str]] = []
        if project is not None:
            if not project.enabled:
                raise exception.NotAuthenticated(reason=f"project {project.id} is disabled")
            roles = roles_of(session, user.id, project.id)
            if not roles:
                raise exception.NotAuthenticated(
                    reason=f"user {user.id} has no role on project {project.id}")
        secret = secrets.token_urlsafe(32)
        info = TokenInfo(
            token_hash=hash_secret(secret), user_id=user.id, user_name=user.name, user_domain_id=user.domain_id,
            project_id=project.id if project else None, project_name=project.name if project else None,
            project_domain_id=project.domain_id if project else None, roles=tuple(roles), issued_at=now,
            expires_at=now + datetime.timedelta(seconds=ttl), methods=used_methods)
        session.add(Token(token_hash=info.token_hash, user_id=user.id, project_id=info.project_id,
                          issued_at=now, expires_at=info.expires_at, revoked=False))
    return secret, info


def _lookup(session, secret: str, now: datetime.datetime) -> Token:
    if not secret:
        raise exception.NotAuthenticated(reason="no token was given (X-Auth-Token)")
    row = session.get(Token, hash_secret(secret))
    _require_live(row, now)
    return row


def _require_live(row, now: datetime.datetime) -> None:
    """Raises NotAuthenticated unless ``row`` (a token or a row with its columns) is known,
    unrevoked and unexpired at ``now``."""
    if row is None:
        raise exception.NotAuthenticated(reason="the token is not known")
    if row.revoked:
        raise exception.NotAuthenticated(reason="the token was revoked")
    if row.expires_at <= now:
        raise exception.NotAuthenticated(reason=f"the token expired at {row.expires_at.isoformat()}Z")


def validate(db: Database, secret: str) -> TokenInfo:
    """The TokenInfo of a live token. Raises NotAuthenticated (unknown, revoked,
    expired, or its user or project since disabled).

    Every authenticated request comes through here: one query (by the token's
    primary key, joined to its user, project and role grants) rather than four."""
    if not secret:
        raise exception.NotAuthenticated(reason="no token was given (X-Auth-Token)")
    grant = sa.and_(RoleAssignment.user_id == Token.user_id, RoleAssignment.project_id == Token.project_id)
    query = (sa.select(Token.token_hash, Token.user_id, Token.project_id, Token.revoked, Token.issued_at,
                       Token.expires_at, User.id.label("found_user"), User.name.label("user_name"),
                       User.domain_id.label("user_domain_id"), User.enabled.label("user_enabled"),
                       Project.id.label("found_project"), Project.name.label("project_name"),
                       Project.domain_id.label("project_domain_id"), Project.enabled.label("project_enabled"),
                       Role.id.label("role_id"), Role.name.label("role_name"))
             .select_from(Token)
             .outerjoin(User, User.id == Token.user_id)
             .outerjoin(Project, Project.id == Token.project_id)
             .outerjoin(RoleAssignment, grant)
             .outerjoin(Role, Role.id == RoleAssignment.role_id)
             .where(Token.token_hash == hash_secret(secret))
             .order_by(Role.name))
    with db.begin() as session:
        rows = session.execute(query).all()
    row = rows[0] if rows else None
    _require_live(row, utcnow())
    if row.found_user is None or not row.user_enabled:
        raise exception.NotAuthenticated(reason="the token's user is disabled or gone")
    scoped = row.project_id is not None
    if scoped and (row.found_project is None or not row.project_enabled):
        raise exception.NotAuthenticated(reason="the token's project is disabled or gone")
    roles = tuple((r.role_id, r.role_name) for r in rows if r.role_id is not None) if scoped else ()
    return TokenInfo(
        token_hash=row.token_hash, user_id=row.user_id, user_name=row.user_name, user_domain_id=row.user_domain_id,
        project_id=row.project_id, project_name=row.project_name if scoped else None,
        project_domain_id=row.project_domain_id if scoped else None, roles=roles,
        issued_at=row.issued_at, expires_at=row.expires_at)


def revoke(db: Database, secret: str) -> None:
    """Revoke a live token. Raises NotFound for one that is unknown, revoked or expired."""
    token_hash = hash_secret(secret)
    with db.begin() as session:
        changed = session.execute(
            sa.update(Token).where(Token.token_hash == token_hash, Token.revoked.is_(False),
                                   Token.expires_at > utcnow()).values(revoked=True)).rowcount
    if changed != 1:
        raise exception.NotFound(kind="Token", ident=token_hash[:12] + "...")


def purge_expired(db: Database) -> int:
    """Delete expired tokens; returns how many."""
    with db.begin() as session:
        return session.execute(sa.delete(Token).where(Token.expires_at <= utcnow())).rowcount
