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
from marshmallow import Schema, fields, validate

from fabric import exception
from fabric.api import common, identity_grants, identity_ldap, passwords, tokens
from fabric.api.identity import ProjectCreateSchema, UserCreateSchema, wrapped
from fabric.api.identity_catalog import Lenient
from fabric.db.models import Domain, Group, Project, User

DEFAULT_DOMAIN_ID = tokens.DEFAULT_DOMAIN["id"]


class DomainCreateSchema(Lenient):
    name = fields.String(required=True, validate=validate.Length(min=1, max=64))
    description = fields.String(load_default="", allow_none=True, validate=validate.Length(max=255))
    enabled = fields.Boolean(load_default=True)


class DomainUpdateSchema(Lenient):
    name = fields.String(validate=validate.Length(min=1, max=64))
    description = fields.String(validate=validate.Length(max=255), allow_none=True)
    enabled = fields.Boolean()


class ProjectUpdateSchema(Lenient):
    name = fields.String(validate=validate.Length(min=1, max=64))
    description = fields.String(validate=validate.Length(max=255), allow_none=True)
    enabled = fields.Boolean()
    domain_id = fields.String()


class UserUpdateSchema(Lenient):
    name = fields.String(validate=validate.Length(min=1, max=255))
    password = fields.String(validate=validate.Length(min=1, max=4096))
    enabled = fields.Boolean()
    default_project_id = fields.String(allow_none=True)
    domain_id = fields.String()
    description = fields.String(allow_none=True)
    email = fields.String(allow_none=True)


class PasswordChangeSchema(Schema):
    password = fields.String(required=True, validate=validate.Length(min=1, max=4096))
    original_password = fields.String(required=True, validate=validate.Length(min=1, max=4096))


# --- documents ---------------------------------------------------------------------------


def domain_document(domain: Domain, base: str) -> dict:
    return {"id": domain.id, "name": domain.name, "description": domain.description, "enabled": domain.enabled,
            "tags": [], "options": {}, "links": {"self": f"{base}/v3/domains/{domain.id}"}}


def user_document(user: User, base: str) -> dict:
    return {"id": user.id, "name": user.name, "domain_id": user.domain_id, "enabled": user.enabled,
            "default_project_id": user.default_project_id, "password_expires_at": None, "options": {},
            "links": {"self": f"{base}/v3/users/{user.id}"}}


def project_document(project: Project, base: str) -> dict:
    return {"id": project.id, "name": project.name, "domain_id": project.domain_id,
            "description": project.description, "enabled": project.enabled, "is_domain": False,
            "parent_id": project.domain_id, "tags": [], "options": {},
            "links": {"self": f"{base}/v3/projects/{project.id}"}}


def listing(key: str, docs: list[dict], req: falcon.Request) -> dict:
    return {key: docs, "links": {"self": req.uri, "previous": None, "next": None}}


# --- shared checks -----------------------------------------------------------------------


def get_or_404(session, model, ident: str, kind: str):
    row = session.get(model, ident)
    if row is None:
        raise exception.NotFound(kind=kind, ident=ident)
    return row


def require_domain(session, domain_id: str) -> Domain:
    return get_or_404(session, Domain, domain_id, "Domain")


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


def self_or_admin(req: falcon.Request, user_id: str, action: str) -> None:
    context = common.ctx(req)
    if not context.is_admin and context.user_id != user_id:
        raise exception.Forbidden(reason=f"only an admin may {action} of another user")


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
        common.require_admin(req, "creating domains")
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
        common.require_admin(req, "updating domains")
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
            session.flush()
            doc = domain_document(domain, deps.base_url(req))
        common.respond(resp, {"domain": doc})

    def on_delete(self, req, resp, domain_id):
        common.require_admin(req, "deleting domains")
        with common.deps(req).db.begin() as session:
            domain = require_domain(session, domain_id)
            if domain.id == DEFAULT_DOMAIN_ID:
                raise exception.Forbidden(reason="the default domain cannot be deleted")
            if domain.enabled:
                raise exception.Forbidden(reason=f"domain {domain_id} is enabled; disable it before deleting it")
            # As Keystone: a domain takes its projects, users and groups with it.
            for kind, model in (("project", Project), ("user", User), ("group", Group)):
                for row in session.scalars(sa.select(model).where(model.domain_id == domain_id)).all():
                    identity_grants.delete_with_grants(session, kind, row)
            identity_grants.delete_with_grants(session, "domain", domain)
        resp.status = falcon.HTTP_204


# --- projects ----------------------------------------------------------------------------


class Projects:
    def on_get(self, req, resp):
        common.require_admin(req, "listing projects")
        deps = common.deps(req)
        query = common.equal_filters(sa.select(Project).order_by(Project.name), req,
                                     {"name": Project.name, "domain_id": Project.domain_id})
        query = _bool_filter(query, req, Project.enabled)
        with deps.db.begin() as session:
            docs = [project_document(p, deps.base_url(req)) for p in session.scalars(query)]
        common.respond(resp, listing("projects", docs, req))

    def on_post(self, req, resp):
        common.require_admin(req, "creating projects")
        deps = common.deps(req)
        data = common.body(req, wrapped("project", ProjectCreateSchema))["project"]
        with deps.db.begin() as session:
            require_domain(session, data["domain_id"])
            if data.get("parent_id") not in (None, data["domain_id"]):
                raise exception.Invalid(reason=f"parent_id {data['parent_id']!r}: projects nest only in their "
                                               f"domain ({data['domain_id']!r})")
            require_free_name(session, Project, "project", data["name"], data["domain_id"])
            project = Project(name=data["name"], domain_id=data["domain_id"], description=data["description"] or "",
                              enabled=data["enabled"])
            session.add(project)
            session.flush()
            doc = project_document(project, deps.base_url(req))
        common.respond(resp, {"project": doc}, falcon.HTTP_201)


class ProjectItem:
    def on_get(self, req, resp, project_id):
        if not common.visible(common.ctx(req), project_id):
            raise exception.NotFound(kind="Project", ident=project_id)
        deps = common.deps(req)
        with deps.db.begin() as session:
            project = get_or_404(session, Project, project_id, "Project")
            common.respond(resp, {"project": project_document(project, deps.base_url(req))})

    def on_patch(self, req, resp, project_id):
        common.require_admin(req, "updating projects")
        deps = common.deps(req)
        data = common.body(req, wrapped("project", ProjectUpdateSchema))["project"]
        with deps.db.begin() as session:
            project = get_or_404(session, Project, project_id, "Project")
            _refuse_domain_change(project, data, "project")
            if "name" in data:
                require_free_name(session, Project, "project", data["name"], project.domain_id, but=project.id)
            for key in ("name", "description", "enabled"):
                if key in data:
                    setattr(project, key, data[key] if data[key] is not None else "")
            session.flush()
            doc = project_document(project, deps.base_url(req))
        common.respond(resp, {"project": doc})

    def on_delete(self, req, resp, project_id):
        common.require_admin(req, "deleting projects")
        with common.deps(req).db.begin() as session:
            delete_project(session, get_or_404(session, Project, project_id, "Project"))
        resp.status = falcon.HTTP_204


# --- users -------------------------------------------------------------------------------


class Users:
    def on_get(self, req, resp):
        common.require_admin(req, "listing users")
        deps = common.deps(req)
        identity_ldap.sync_quietly(deps.db, deps.settings)
        query = common.equal_filters(sa.select(User).order_by(User.name), req,
                                     {"name": User.name, "domain_id": User.domain_id})
        query = _bool_filter(query, req, User.enabled)
        with deps.db.begin() as session:
            docs = [user_document(u, deps.base_url(req)) for u in session.scalars(query)]
        common.respond(resp, listing("users", docs, req))

    def on_post(self, req, resp):
        common.require_admin(req, "creating users")
        deps = common.deps(req)
        data = common.body(req, wrapped("user", UserCreateSchema))["user"]
        identity_ldap.refuse_writes(deps.settings, data["domain_id"], "creating users")
        with deps.db.begin() as session:
            require_domain(session, data["domain_id"])
            if data["default_project_id"]:
                get_or_404(session, Project, data["default_project_id"], "Project")
            require_free_name(session, User, "user", data["name"], data["domain_id"])
            user = User(name=data["name"], domain_id=data["domain_id"], enabled=data["enabled"],
                        password_hash=passwords.hash_password(data["password"]) if data.get("password") else "",
                        default_project_id=data["default_project_id"])
            session.add(user)
            session.flush()
            doc = user_document(user, deps.base_url(req))
        common.respond(resp, {"user": doc}, falcon.HTTP_201)


class UserItem:
    def on_get(self, req, resp, user_id):
        self_or_admin(req, user_id, "see the details")
        deps = common.deps(req)
        with deps.db.begin() as session:
            user = get_or_404(session, User, user_id, "User")
            common.respond(resp, {"user": user_document(user, deps.base_url(req))})

    def on_patch(self, req, resp, user_id):
        common.require_admin(req, "updating users")
        deps = common.deps(req)
        data = common.body(req, wrapped("user", UserUpdateSchema))["user"]
        with deps.db.begin() as session:
            user = get_or_404(session, User, user_id, "User")
            identity_ldap.refuse_writes(deps.settings, user.domain_id, "changing users")
            _refuse_domain_change(user, data, "user")
            if "name" in data:
                require_free_name(session, User, "user", data["name"], user.domain_id, but=user.id)
                user.name = data["name"]
            if data.get("default_project_id"):
                get_or_404(session, Project, data["default_project_id"], "Project")
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
            session.flush()
            doc = user_document(user, deps.base_url(req))
        common.respond(resp, {"user": doc})

    def on_delete(self, req, resp, user_id):
        common.require_admin(req, "deleting users")
        deps = common.deps(req)
        with deps.db.begin() as session:
            user = get_or_404(session, User, user_id, "User")
            identity_ldap.refuse_writes(deps.settings, user.domain_id, "deleting users")
            delete_user(session, user)
        resp.status = falcon.HTTP_204


class UserPassword:
    """POST /v3/users/{id}/password: a user changes their own password, giving the old one;
    every token the user holds is revoked (as Keystone)."""

    def on_post(self, req, resp, user_id):
        if common.ctx(req).user_id != user_id:
            raise exception.Forbidden(reason="a user may change only their own password this way")
        data = common.body(req, wrapped("user", PasswordChangeSchema))["user"]
        deps = common.deps(req)
        with deps.db.begin() as session:
            user = get_or_404(session, User, user_id, "User")
            identity_ldap.refuse_writes(deps.settings, user.domain_id, "changing passwords")
            if not passwords.verify_password(data["original_password"], user.password_hash):
                raise exception.NotAuthenticated(reason="the original password is wrong")
            user.password_hash = passwords.hash_password(data["password"])
            user.failed_auth_count, user.failed_auth_at = 0, None
            tokens.revoke_all_of(session, user.id)
        resp.status = falcon.HTTP_204


class UserProjects:
    """GET /v3/users/{id}/projects: the projects the user holds a role on (directly or by group)."""

    def on_get(self, req, resp, user_id):
        self_or_admin(req, user_id, "list the projects")
        deps = common.deps(req)
        with deps.db.begin() as session:
            get_or_404(session, User, user_id, "User")
            ids = identity_grants.project_ids_of(session, user_id)
            rows = session.scalars(sa.select(Project).where(Project.id.in_(ids)).order_by(Project.name)).all()
            docs = [project_document(p, deps.base_url(req)) for p in rows]
        common.respond(resp, listing("projects", docs, req))


class AuthProjects:
    """GET /v3/auth/projects: the enabled projects the caller holds a role on."""

    def on_get(self, req, resp):
        deps, context = common.deps(req), common.ctx(req)
        with deps.db.begin() as session:
            ids = identity_grants.project_ids_of(session, context.user_id)
            rows = session.scalars(sa.select(Project).where(Project.id.in_(ids), Project.enabled.is_(True))
                                   .order_by(Project.name)).all()
            docs = [project_document(p, deps.base_url(req)) for p in rows]
        common.respond(resp, listing("projects", docs, req))


def register(app: falcon.App) -> None:
    app.add_route("/v3/auth/projects", AuthProjects())
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
    ("get", "/v3/auth/projects", "List the projects the caller holds a role on", None, 200, True),
    ("get", "/v3/domains", "List domains (?name, ?enabled)", None, 200, True),
    ("post", "/v3/domains", "Create a domain (admin)", wrapped("domain", DomainCreateSchema), 201, True),
    ("get", "/v3/domains/{domain_id}", "Show a domain", None, 200, True),
    ("patch", "/v3/domains/{domain_id}", "Update a domain (admin)", wrapped("domain", DomainUpdateSchema), 200,
     True),
    ("delete", "/v3/domains/{domain_id}", "Delete a disabled domain and its projects, users and groups (admin)",
     None, 204, True),
    ("patch", "/v3/projects/{project_id}", "Update a project (admin)", wrapped("project", ProjectUpdateSchema), 200,
     True),
    ("delete", "/v3/projects/{project_id}", "Delete a project and its grants (admin)", None, 204, True),
    ("patch", "/v3/users/{user_id}", "Update a user (admin; disabling or a new password revokes its tokens)",
     wrapped("user", UserUpdateSchema), 200, True),
    ("delete", "/v3/users/{user_id}", "Delete a user (admin)", None, 204, True),
    ("post", "/v3/users/{user_id}/password", "Change one's own password (revokes one's tokens)",
     wrapped("user", PasswordChangeSchema), 204, True),
    ("get", "/v3/users/{user_id}/projects", "List a user's projects", None, 200, True),
]
