"""Identity v3 administration: domains, projects and users (groups are in
:mod:`fabric.api.identity_groups`).

Keystone's routes and shapes, so ``openstack domain|project|user|group ...`` work.
What Keystone refuses, this refuses the same way: a domain is deleted only once
disabled (and takes its projects, users and groups with it), the default domain is
never disabled or deleted, a user's or project's domain never changes. Disabling a
user or changing its password revokes every token it holds. Names are unique per
domain by the database's keys, so concurrent creates get one 201 and 409s. The LDAP
domain's users and groups (:mod:`fabric.api.identity_ldap`) are read, never written.
"""

from __future__ import annotations

import falcon
import sqlalchemy as sa
from marshmallow import INCLUDE, Schema, fields, validate
from sqlalchemy import orm

from fabric import exception
from fabric.api import common, identity_grants, identity_ldap, identity_lockout, identity_projects, passwords, tokens
from fabric.api.identity import ProjectCreateSchema, UserCreateSchema, wrapped
from fabric.api.identity_catalog import Lenient
from fabric.db.models import Domain, Group, Project, Role, User
from fabric.db.types import utcnow

DEFAULT_DOMAIN_ID = tokens.DEFAULT_DOMAIN["id"]


class DomainCreateSchema(Lenient):
    name = fields.String(required=True, validate=validate.Length(min=1, max=64))
    description = fields.String(load_default="", allow_none=True, validate=validate.Length(max=255))
    enabled = common.StrictBoolean(load_default=True)


class DomainUpdateSchema(Lenient):
    name = fields.String(validate=validate.Length(min=1, max=64))
    description = fields.String(validate=validate.Length(max=255), allow_none=True)
    enabled = common.StrictBoolean()


class ProjectUpdateSchema(Lenient):
    name = fields.String(validate=validate.Length(min=1, max=64))
    tags = fields.Raw(allow_none=True)  # checked by identity_projects.check_tags
    description = fields.String(validate=validate.Length(max=255), allow_none=True)
    enabled = common.StrictBoolean()
    domain_id = fields.String()


class UserUpdateSchema(Lenient):
    """A user's changes; attributes beyond these are merged into its extras (see
    :class:`~fabric.api.identity.UserCreateSchema`)."""

    class Meta:
        unknown = INCLUDE

    name = fields.String(validate=validate.Length(min=1, max=255))
    password = fields.String(validate=validate.Length(min=1, max=4096))
    enabled = common.StrictBoolean()
    default_project_id = fields.String(allow_none=True)
    domain_id = fields.String()
    description = fields.String(allow_none=True, validate=validate.Length(max=255))
    email = fields.String(allow_none=True, validate=validate.Length(max=255))


#: A user's attributes that have columns (or are never kept); every other one is an extra.
USER_COLUMNS = frozenset({"id", "name", "password", "domain_id", "default_project_id", "enabled", "links", "options",
                          "password_expires_at", "federated"})


def user_extras(data: dict) -> dict:
    """The attributes of a create or update body that are the user's extras."""
    return {key: value for key, value in data.items() if key not in USER_COLUMNS}


class PasswordChangeSchema(Schema):
    password = fields.String(required=True, validate=validate.Length(min=1, max=4096))
    original_password = fields.String(required=True, validate=validate.Length(min=1, max=4096))


# --- documents ---------------------------------------------------------------------------


def domain_document(domain: Domain, base: str) -> dict:
    return {"id": domain.id, "name": domain.name, "description": domain.description, "enabled": domain.enabled,
            "tags": [], "options": {}, "links": {"self": f"{base}/v3/domains/{domain.id}"}}


def user_document(user: User, base: str) -> dict:
    return {**(user.extra or {}), "id": user.id, "name": user.name, "domain_id": user.domain_id, "enabled": user.enabled,
            "default_project_id": user.default_project_id, "password_expires_at": None, "options": {},
            "links": {"self": f"{base}/v3/users/{user.id}"}}


def project_document(project: Project, base: str, carried: tuple[str | None, list[str]] | None = None) -> dict:
    """``carried``: its parent project and tags (:func:`identity_projects.carried`, read here
    when not given)."""
    if carried is None:
        carried = identity_projects.carried(orm.object_session(project), [project])[project.id]
    parent_id, tags = carried
    # A project acting as a domain sits in no domain and under nothing, as in Keystone.
    domain_id = None if project.is_domain else project.domain_id
    return {"id": project.id, "name": project.name, "domain_id": domain_id,
            "description": project.description, "enabled": project.enabled, "is_domain": project.is_domain,
            "parent_id": parent_id or domain_id, "tags": tags, "options": {},
            "links": {"self": f"{base}/v3/projects/{project.id}"}}


def project_documents(session, projects: list[Project], base: str) -> list[dict]:
    carried = identity_projects.carried(session, projects)
    return [project_document(p, base, carried[p.id]) for p in projects]


def listing(key: str, docs: list[dict], req: falcon.Request) -> dict:
    return {key: docs, "links": {"self": req.uri, "previous": None, "next": None}}


# --- shared checks -----------------------------------------------------------------------


def require_domain(session, domain_id: str) -> Domain:
    return common.get_or_404(session, Domain, domain_id, "Domain")


def require_free_name(session, model, kind: str, name: str, domain_id: str, but: str | None = None) -> None:
    """Conflict when domain ``domain_id`` already has a ``kind`` called ``name`` (other than ``but``).
    The unique key settles a race this check loses (answered 409 by fabric.api.errors)."""
    found = session.scalar(sa.select(model.id).where(model.name == name, model.domain_id == domain_id))
    if found is not None and found != but:
        raise exception.Conflict(reason=f"a {kind} named {name!r} already exists in domain {domain_id!r}")


def _refuse_domain_change(row, data: dict, kind: str) -> None:
    if "domain_id" in data and data["domain_id"] != row.domain_id:
        raise exception.Invalid(reason=f"a {kind}'s domain_id cannot change (from {row.domain_id!r} "
                                       f"to {data['domain_id']!r})")


def _bool_filter(query: sa.Select, req: falcon.Request, column) -> sa.Select:
    raw = req.get_param("enabled")
    if raw is None:
        return query
    lowered = raw.lower()
    if lowered not in ("true", "false", "1", "0"):
        raise exception.Invalid(reason=f"query parameter enabled={raw!r} must be true or false")
    return query.where(column.is_(lowered in ("true", "1")))


def delete_user(session, user: User) -> None:
    """Delete ``user`` and everything it holds (grants, memberships, tokens, credentials)."""
    identity_grants.delete_with_grants(session, "user", user)


def delete_project(session, project: Project) -> None:
    """Delete ``project`` and every grant on it (its tokens and credentials go by cascade)."""
    identity_grants.delete_with_grants(session, "project", project)


# --- domains -----------------------------------------------------------------------------


class Domains:
    def on_get(self, req, resp):
        deps = common.deps(req)
        query = common.equal_filters(sa.select(Domain).order_by(Domain.name), req, {"name": Domain.name})
        query = _bool_filter(query, req, Domain.enabled)
        with deps.db.begin() as session:
            docs = [domain_document(d, deps.base_url(req)) for d in session.scalars(query)]
        common.respond(resp, listing("domains", docs, req))

    def on_post(self, req, resp):
        deps = common.deps(req)
        data = common.body(req, wrapped("domain", DomainCreateSchema))["domain"]
        with deps.db.begin() as session:
            if session.scalar(sa.select(Domain.id).where(Domain.name == data["name"])):
                raise exception.Conflict(reason=f"a domain named {data['name']!r} already exists")
            domain = Domain(**data)
            session.add(domain)
            session.flush()
            doc = domain_document(domain, deps.base_url(req))
        common.respond(resp, {"domain": doc}, falcon.HTTP_201)


class DomainItem:
    def on_get(self, req, resp, domain_id):
        deps = common.deps(req)
        with deps.db.begin() as session:
            common.respond(resp, {"domain": domain_document(require_domain(session, domain_id),
                                                            deps.base_url(req))})

    def on_patch(self, req, resp, domain_id):
        deps = common.deps(req)
        data = common.body(req, wrapped("domain", DomainUpdateSchema))["domain"]
        with deps.db.begin() as session:
            domain = require_domain(session, domain_id)
            if domain.id == DEFAULT_DOMAIN_ID and data.get("enabled") is False:
                raise exception.Forbidden(reason="the default domain cannot be disabled")
            if "name" in data and data["name"] != domain.name and session.scalar(
                    sa.select(Domain.id).where(Domain.name == data["name"])):
                raise exception.Conflict(reason=f"a domain named {data['name']!r} already exists")
            for key, value in data.items():
                setattr(domain, key, value if value is not None else "")
            twin = _project_acting_as(session, domain.id)
            if twin is not None:
                _mirror(twin, data)
            session.flush()
            doc = domain_document(domain, deps.base_url(req))
        common.respond(resp, {"domain": doc})

    def on_delete(self, req, resp, domain_id):
        with common.deps(req).db.begin() as session:
            delete_domain(session, require_domain(session, domain_id))
        resp.status = falcon.HTTP_204


def delete_domain(session, domain: Domain) -> None:
    """Delete a disabled ``domain`` with its projects (the one acting as it included), users,
    groups, roles and grants, as Keystone does; Forbidden for ``default`` or an enabled one."""
    if domain.id == DEFAULT_DOMAIN_ID:
        raise exception.Forbidden(reason="the default domain cannot be deleted")
    if domain.enabled:
        raise exception.Forbidden(reason=f"domain {domain.id} is enabled; disable it before deleting it")
    identity_projects.unnest_domain(session, domain.id)
    for kind, model in (("project", Project), ("user", User), ("group", Group)):
        for row in session.scalars(sa.select(model).where(model.domain_id == domain.id)).all():
            identity_grants.delete_with_grants(session, kind, row)
    session.execute(sa.delete(Role).where(Role.domain_id == domain.id))  # its grants by cascade
    identity_grants.delete_with_grants(session, "domain", domain)


def _project_acting_as(session, domain_id: str) -> Project | None:
    project = session.get(Project, domain_id)
    return project if project is not None and project.is_domain else None


def _mirror(target, data: dict) -> None:
    """Copy a domain's (or a domain project's) name, description and enabled to its twin."""
    for key in ("name", "description", "enabled"):
        if key in data:
            setattr(target, key, data[key] if data[key] is not None else "")


# --- projects ----------------------------------------------------------------------------


class Projects:
    def on_get(self, req, resp):
        deps = common.deps(req)
        query = common.equal_filters(sa.select(Project).order_by(Project.name), req,
                                     {"name": Project.name, "domain_id": Project.domain_id})
        query = identity_projects.filtered(_bool_filter(query, req, Project.enabled), req)
        # As Keystone: projects acting as domains only when asked for (?is_domain=true).
        query = query.where(Project.is_domain == identity_grants.flag(req, "is_domain"))
        with deps.db.begin() as session:
            docs = project_documents(session, session.scalars(query).all(), deps.base_url(req))
        common.respond(resp, listing("projects", docs, req))

    def on_post(self, req, resp):
        deps = common.deps(req)
        data = common.body(req, wrapped("project", ProjectCreateSchema))["project"]
        tags = identity_projects.check_tags(data["tags"]) if data.get("tags") is not None else []
        if data["is_domain"]:
            common.respond(resp, {"project": _create_domain_project(deps, data, tags, req)}, falcon.HTTP_201)
            return
        with deps.db.begin() as session:
            # As Keystone: a nested project is in its parent's domain unless told otherwise.
            domain_id = (data["domain_id"] or identity_projects.domain_of_parent(session, data.get("parent_id"))
                         or DEFAULT_DOMAIN_ID)
            require_domain(session, domain_id)
            require_free_name(session, Project, "project", data["name"], domain_id)
            project = Project(name=data["name"], domain_id=domain_id, description=data["description"] or "",
                              enabled=data["enabled"])
            session.add(project)
            session.flush()
            identity_projects.set_parent(session, project, data.get("parent_id"))
            identity_projects.set_tags(session, project.id, tags)
            doc = project_document(project, deps.base_url(req))
        common.respond(resp, {"project": doc}, falcon.HTTP_201)


def _create_domain_project(deps, data: dict, tags: list[str], req: falcon.Request) -> dict:
    """A project acting as a domain: a domain and its twin project, with one id."""
    if data.get("parent_id") or data.get("domain_id"):
        raise exception.Invalid(reason="a project acting as a domain (is_domain true) has no parent_id or domain_id")
    with deps.db.begin() as session:
        if session.scalar(sa.select(Domain.id).where(Domain.name == data["name"])):
            raise exception.Conflict(reason=f"a domain named {data['name']!r} already exists")
        domain = Domain(name=data["name"], description=data["description"] or "", enabled=data["enabled"])
        session.add(domain)
        session.flush()
        project = Project(id=domain.id, name=data["name"], domain_id=domain.id, is_domain=True,
                          description=data["description"] or "", enabled=data["enabled"])
        session.add(project)
        session.flush()
        identity_projects.set_tags(session, project.id, tags)
        return project_document(project, deps.base_url(req))


class ProjectItem:
    def on_get(self, req, resp, project_id):
        deps = common.deps(req)
        with deps.db.begin() as session:
            project = common.get_or_404(session, Project, project_id, "Project")
            common.respond(resp, {"project": project_document(project, deps.base_url(req))})

    def on_patch(self, req, resp, project_id):
        deps = common.deps(req)
        data = common.body(req, wrapped("project", ProjectUpdateSchema))["project"]
        with deps.db.begin() as session:
            project = common.get_or_404(session, Project, project_id, "Project")
            _refuse_domain_change(project, data, "project")
            if "name" in data:
                require_free_name(session, Project, "project", data["name"], project.domain_id, but=project.id)
            _mirror(project, data)
            if project.is_domain:
                _mirror(require_domain(session, project.id), data)
            if data.get("tags") is not None:
                identity_projects.set_tags(session, project.id, identity_projects.check_tags(data["tags"]))
            session.flush()
            doc = project_document(project, deps.base_url(req))
        common.respond(resp, {"project": doc})

    def on_delete(self, req, resp, project_id):
        with common.deps(req).db.begin() as session:
            project = common.get_or_404(session, Project, project_id, "Project")
            if project.is_domain:
                delete_domain(session, require_domain(session, project.id))
            else:
                identity_projects.refuse_delete_with_children(session, project.id)
                delete_project(session, project)
        resp.status = falcon.HTTP_204


# --- users -------------------------------------------------------------------------------


class Users:
    def on_get(self, req, resp):
        deps = common.deps(req)
        identity_ldap.sync_quietly(deps.db, deps.settings)
        query = common.equal_filters(sa.select(User).order_by(User.name), req,
                                     {"name": User.name, "domain_id": User.domain_id})
        query = _bool_filter(query, req, User.enabled)
        with deps.db.begin() as session:
            docs = [user_document(u, deps.base_url(req)) for u in session.scalars(query)]
        common.respond(resp, listing("users", docs, req))

    def on_post(self, req, resp):
        deps = common.deps(req)
        data = common.body(req, wrapped("user", UserCreateSchema))["user"]
        identity_ldap.refuse_writes(deps.settings, data["domain_id"], "creating users")
        with deps.db.begin() as session:
            require_domain(session, data["domain_id"])
            if data["default_project_id"]:
                common.get_or_404(session, Project, data["default_project_id"], "Project")
            require_free_name(session, User, "user", data["name"], data["domain_id"])
            user = User(name=data["name"], domain_id=data["domain_id"], enabled=data["enabled"],
                        password_hash=passwords.hash_password(data["password"]) if data.get("password") else "",
                        default_project_id=data["default_project_id"], extra=user_extras(data))
            session.add(user)
            session.flush()
            doc = user_document(user, deps.base_url(req))
        common.respond(resp, {"user": doc}, falcon.HTTP_201)


class UserItem:
    def on_get(self, req, resp, user_id):
        deps = common.deps(req)
        with deps.db.begin() as session:
            user = common.get_or_404(session, User, user_id, "User")
            common.respond(resp, {"user": user_document(user, deps.base_url(req))})

    def on_patch(self, req, resp, user_id):
        deps = common.deps(req)
        data = common.body(req, wrapped("user", UserUpdateSchema))["user"]
        with deps.db.begin() as session:
            user = common.get_or_404(session, User, user_id, "User")
            identity_ldap.refuse_writes(deps.settings, user.domain_id, "changing users")
            _refuse_domain_change(user, data, "user")
            if "name" in data:
                require_free_name(session, User, "user", data["name"], user.domain_id, but=user.id)
                user.name = data["name"]
            if data.get("default_project_id"):
                common.get_or_404(session, Project, data["default_project_id"], "Project")
            if "default_project_id" in data:
                user.default_project_id = data["default_project_id"]
            revoke = False
            if "password" in data:
                user.password_hash = passwords.hash_password(data["password"])
                user.failed_auth_count, user.failed_auth_at = 0, None
                revoke = True
            if "enabled" in data:
                revoke = revoke or (user.enabled and not data["enabled"])
                user.enabled = data["enabled"]
            if revoke:
                tokens.revoke_all_of(session, user.id)
            extras = user_extras(data)
            if extras:
                user.extra = {**(user.extra or {}), **extras}
            session.flush()
            doc = user_document(user, deps.base_url(req))
        common.respond(resp, {"user": doc})

    def on_delete(self, req, resp, user_id):
        deps = common.deps(req)
        with deps.db.begin() as session:
            user = common.get_or_404(session, User, user_id, "User")
            identity_ldap.refuse_writes(deps.settings, user.domain_id, "deleting users")
            delete_user(session, user)
        resp.status = falcon.HTTP_204


class UserPassword:
    """POST /v3/users/{id}/password: a user changes their own password, giving the old one;
    every token the user holds is revoked (as Keystone)."""

    def on_post(self, req, resp, user_id):
        data = common.body(req, wrapped("user", PasswordChangeSchema))["user"]
        deps = common.deps(req)
        policy = identity_lockout.Policy.from_settings(deps.settings)
        with deps.db.begin() as session:
            # No token is needed (a user whose password expired has none): the original
            # password is the proof, so it counts towards the lock-out like a sign-in, and
            # an unknown user reads like a wrong password.
            user = session.get(User, user_id)
            if user is None:
                raise exception.NotAuthenticated(reason="the user or the original password is wrong")
            identity_ldap.refuse_writes(deps.settings, user.domain_id, "changing passwords")
            identity_lockout.require_unlocked(user, policy, utcnow())
            right = passwords.verify_password(data["original_password"], user.password_hash)
            if right:
                user.password_hash = passwords.hash_password(data["password"])
                user.failed_auth_count, user.failed_auth_at = 0, None
                tokens.revoke_all_of(session, user.id)
        if not right:
            identity_lockout.record_failure(deps.db, user_id, policy)
            raise exception.NotAuthenticated(reason="the user or the original password is wrong")
        resp.status = falcon.HTTP_204


class UserProjects:
    """GET /v3/users/{id}/projects: the projects the user holds a role on (directly or by group)."""

    def on_get(self, req, resp, user_id):
        deps = common.deps(req)
        with deps.db.begin() as session:
            common.get_or_404(session, User, user_id, "User")
            ids = identity_grants.project_ids_of(session, user_id)
            rows = session.scalars(sa.select(Project).where(Project.id.in_(ids)).order_by(Project.name)).all()
            docs = project_documents(session, rows, deps.base_url(req))
        common.respond(resp, listing("projects", docs, req))


class AuthProjects:
    """GET /v3/auth/projects: the enabled projects the caller holds a role on."""

    def on_get(self, req, resp):
        deps, context = common.deps(req), common.ctx(req)
        with deps.db.begin() as session:
            ids = identity_grants.project_ids_of(session, context.user_id)
            rows = session.scalars(sa.select(Project).where(Project.id.in_(ids), Project.enabled.is_(True))
                                   .order_by(Project.name)).all()
            docs = project_documents(session, rows, deps.base_url(req))
        common.respond(resp, listing("projects", docs, req))


class AuthDomains:
    """GET /v3/auth/domains: the enabled domains the caller holds a role on."""

    def on_get(self, req, resp):
        deps, context = common.deps(req), common.ctx(req)
        with deps.db.begin() as session:
            ids = identity_grants.domain_ids_of(session, context.user_id)
            rows = session.scalars(sa.select(Domain).where(Domain.id.in_(ids), Domain.enabled.is_(True))
                                   .order_by(Domain.name)).all()
            docs = [domain_document(d, deps.base_url(req)) for d in rows]
        common.respond(resp, listing("domains", docs, req))


def register(app: falcon.App) -> None:
    app.add_route("/v3/auth/projects", AuthProjects())
    app.add_route("/v3/auth/domains", AuthDomains())
    app.add_route("/v3/domains", Domains())
    app.add_route("/v3/domains/{domain_id}", DomainItem())
    app.add_route("/v3/projects", Projects())
    app.add_route("/v3/projects/{project_id}", ProjectItem())
    app.add_route("/v3/users", Users())
    app.add_route("/v3/users/{user_id}", UserItem())
    app.add_route("/v3/users/{user_id}/password", UserPassword())
    app.add_route("/v3/users/{user_id}/projects", UserProjects())


#: This module's operations for the OpenAPI document (those already there are not repeated).
OPENAPI_OPERATIONS: list = [
    ("get", "/v3/auth/projects", "List the projects the caller holds a role on", None, 200),
    ("get", "/v3/auth/domains", "List the domains the caller holds a role on", None, 200),
    ("get", "/v3/domains", "List domains (?name, ?enabled)", None, 200),
    ("post", "/v3/domains", "Create a domain (admin)", wrapped("domain", DomainCreateSchema), 201),
    ("get", "/v3/domains/{domain_id}", "Show a domain", None, 200),
    ("patch", "/v3/domains/{domain_id}", "Update a domain (admin)", wrapped("domain", DomainUpdateSchema), 200),
    ("delete", "/v3/domains/{domain_id}", "Delete a disabled domain and its projects, users and groups (admin)",
     None, 204),
    ("patch", "/v3/projects/{project_id}", "Update a project (admin)", wrapped("project", ProjectUpdateSchema), 200),
    ("delete", "/v3/projects/{project_id}", "Delete a project and its grants (admin)", None, 204),
    ("patch", "/v3/users/{user_id}", "Update a user (admin; disabling or a new password revokes its tokens)",
     wrapped("user", UserUpdateSchema), 200),
    ("delete", "/v3/users/{user_id}", "Delete a user (admin)", None, 204),
    ("post", "/v3/users/{user_id}/password", "Change one's own password (revokes one's tokens)",
     wrapped("user", PasswordChangeSchema), 204),
    ("get", "/v3/users/{user_id}/projects", "List a user's projects", None, 200),
]
