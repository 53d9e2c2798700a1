"""Identity v3 subset: tokens, users, projects, roles and role assignments."""

from __future__ import annotations

import falcon
import sqlalchemy as sa
from marshmallow import INCLUDE, Schema, fields, validate

from fabric import exception
from fabric.api import common, passwords, tokens
from fabric.api.common import ApiDeps
from fabric.db.models import Project, Role, RoleAssignment, User

# --- schemas ----------------------------------------------------------------


class _Loose(Schema):
    class Meta:
        unknown = INCLUDE


class IdentitySchema(_Loose):
    methods = fields.List(fields.String(), required=True, validate=validate.Length(min=1))
    password = fields.Dict()
    token = fields.Dict()


class AuthSchema(_Loose):
    identity = fields.Nested(IdentitySchema, required=True)
    scope = fields.Raw(allow_none=True)


class AuthRequestSchema(_Loose):
    auth = fields.Nested(AuthSchema, required=True)


class UserCreateSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=255))
    password = fields.String(required=True, validate=validate.Length(min=1, max=4096))
    domain_id = fields.String(load_default="default")
    default_project_id = fields.String(allow_none=True, load_default=None)
    enabled = fields.Boolean(load_default=True)
    description = fields.String(load_default="")
    email = fields.String()


class ProjectCreateSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=64))
    domain_id = fields.String(load_default="default")
    description = fields.String(load_default="", validate=validate.Length(max=255))
    enabled = fields.Boolean(load_default=True)
    parent_id = fields.String(allow_none=True)
    is_domain = fields.Boolean(validate=validate.Equal(False))
    tags = fields.List(fields.String())


class RoleCreateSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=64))
    domain_id = fields.String(allow_none=True)
    description = fields.String()
    options = fields.Dict()


def _wrapped(key: str, inner: type[Schema]) -> Schema:
    return Schema.from_dict({key: fields.Nested(inner, required=True)})()


# --- documents --------------------------------------------------------------


def _domain(domain_id: str | None) -> dict:
    if domain_id in (None, "default"):
        return dict(tokens.DEFAULT_DOMAIN)
    return {"id": domain_id, "name": domain_id}


def catalog(base: str, region: str, s3_url: str | None = None) -> list[dict]:
    """The service catalog: one public endpoint per service, in one region (the
    objectstore, type ``s3``, at ``s3_url`` when given)."""
    services = (("identity", "keystone", f"{base}/v3"), ("compute", "nova", f"{base}/compute/v2.1"),
                ("image", "glance", f"{base}/image"), ("network", "neutron", f"{base}/networking"))
    if s3_url:
        services += (("s3", "fabric-objectstore", s3_url),)
    return [{"id": f"{kind}-service", "type": kind, "name": name,
             "endpoints": [{"id": f"{kind}-public", "interface": "public", "region": region,
                            "region_id": region, "url": url}]}
            for kind, name, url in services]


def token_document(info: tokens.TokenInfo, deps: ApiDeps, req: falcon.Request) -> dict:
    doc = {
        "methods": list(info.methods),
        "user": {"id": info.user_id, "name": info.user_name, "domain": _domain(info.user_domain_id),
                 "password_expires_at": None},
        "audit_ids": [info.token_hash[:22]],
        "issued_at": common.isotime(info.issued_at, micro=True),
        "expires_at": common.isotime(info.expires_at, micro=True),
    }
    if info.project_id:
        doc["project"] = {"id": info.project_id, "name": info.project_name,
                          "domain": _domain(info.project_domain_id)}
        doc["is_domain"] = False
        doc["roles"] = [{"id": rid, "name": name} for rid, name in info.roles]
        doc["catalog"] = catalog(deps.base_url(req), deps.settings.api.region, deps.settings.objectstore_url)
    return {"token": doc}


def user_document(user: User, base: str) -> dict:
    return {"id": user.id, "name": user.name, "domain_id": user.domain_id, "enabled": user.enabled,
            "default_project_id": user.default_project_id, "password_expires_at": None, "options": {},
            "links": {"self": f"{base}/v3/users/{user.id}"}}


def project_document(project: Project, base: str) -> dict:
    return {"id": project.id, "name": project.name, "domain_id": project.domain_id,
            "description": project.description, "enabled": project.enabled, "is_domain": False,
            "parent_id": project.domain_id, "tags": [], "options": {},
            "links": {"self": f"{base}/v3/projects/{project.id}"}}


def role_document(role: Role, base: str) -> dict:
    return {"id": role.id, "name": role.name, "domain_id": None, "description": None, "options": {},
            "links": {"self": f"{base}/v3/roles/{role.id}"}}


# --- resources ---------------------------------------------------------------


class AuthTokens:
    """POST issues, GET/HEAD validate, DELETE revokes (X-Subject-Token)."""

    def on_post(self, req, resp):
        deps = common.deps(req)
        data = common.body(req, AuthRequestSchema())
        secret, info = tokens.authenticate(deps.db, data["auth"], deps.settings.api.token_ttl)
        resp.set_header("X-Subject-Token", secret)
        common.respond(resp, token_document(info, deps, req), falcon.HTTP_201)

    def _subject(self, req) -> tuple[str, tokens.TokenInfo]:
        subject = req.get_header("X-Subject-Token")
        if not subject:
            raise exception.Invalid(reason="the X-Subject-Token header is required")
        caller = req.context.token
        if tokens.hash_secret(subject) != caller.token_hash and not caller.is_admin:
            raise exception.Forbidden(reason="only an admin may check or revoke another user's token")
        try:
            return subject, tokens.validate(common.deps(req).db, subject)
        except exception.NotAuthenticated as err:
            raise exception.NotFound(kind="Token", ident=f"({err.fields.get('reason')})") from None

    def on_get(self, req, resp):
        subject, info = self._subject(req)
        resp.set_header("X-Subject-Token", subject)
        common.respond(resp, token_document(info, common.deps(req), req))

    def on_head(self, req, resp):
        subject, _ = self._subject(req)
        resp.set_header("X-Subject-Token", subject)
        resp.status = falcon.HTTP_200

    def on_delete(self, req, resp):
        subject, _ = self._subject(req)
        tokens.revoke(common.deps(req).db, subject)
        resp.status = falcon.HTTP_204


class AuthProjects:
    """GET /v3/auth/projects: the projects the caller has a role on."""

    def on_get(self, req, resp):
        deps, context = common.deps(req), common.ctx(req)
        with deps.db.begin() as session:
            rows = session.scalars(sa.select(Project).join(RoleAssignment, RoleAssignment.project_id == Project.id)
                                   .where(RoleAssignment.user_id == context.user_id).distinct()).all()
            common.respond(resp, {"projects": [project_document(p, deps.base_url(req)) for p in rows]})


def _get_or_404(session, model, ident: str, kind: str):
    row = session.get(model, ident)
    if row is None:
        raise exception.NotFound(kind=kind, ident=ident)
    return row


def _require_free_name(session, model: type[User] | type[Project], kind: str, name: str, domain_id: str) -> None:
    """Raises Conflict when domain ``domain_id`` already has a ``kind`` called ``name``."""
    if session.scalar(sa.select(model.id).where(model.name == name, model.domain_id == domain_id)):
        raise exception.Conflict(reason=f"a {kind} named {name!r} already exists in domain {domain_id!r}")


class Users:
    def on_get(self, req, resp):
        common.require_admin(req, "listing users")
        deps = common.deps(req)
        query = common.equal_filters(sa.select(User).order_by(User.name), req, {"name": User.name})
        with deps.db.begin() as session:
            common.respond(resp, {"users": [user_document(u, deps.base_url(req)) for u in session.scalars(query)]})

    def on_post(self, req, resp):
        common.require_admin(req, "creating users")
        deps = common.deps(req)
        data = common.body(req, _wrapped("user", UserCreateSchema))["user"]
        with deps.db.begin() as session:
            if data["default_project_id"]:
                _get_or_404(session, Project, data["default_project_id"], "Project")
            _require_free_name(session, User, "user", data["name"], data["domain_id"])
            user = User(name=data["name"], domain_id=data["domain_id"], enabled=data["enabled"],
                        password_hash=passwords.hash_password(data["password"]),
                        default_project_id=data["default_project_id"])
            session.add(user)
            session.flush()
            common.respond(resp, {"user": user_document(user, deps.base_url(req))}, falcon.HTTP_201)


class UserItem:
    def on_get(self, req, resp, user_id):
        context = common.ctx(req)
        if not context.is_admin and context.user_id != user_id:
            raise exception.Forbidden(reason="only an admin may see another user")
        deps = common.deps(req)
        with deps.db.begin() as session:
            user = _get_or_404(session, User, user_id, "User")
            common.respond(resp, {"user": user_document(user, deps.base_url(req))})


class Projects:
    def on_get(self, req, resp):
        common.require_admin(req, "listing projects")
        deps = common.deps(req)
        query = common.equal_filters(sa.select(Project).order_by(Project.name), req, {"name": Project.name})
        with deps.db.begin() as session:
            common.respond(resp, {"projects": [project_document(p, deps.base_url(req))
                                               for p in session.scalars(query)]})

    def on_post(self, req, resp):
        common.require_admin(req, "creating projects")
        deps = common.deps(req)
        data = common.body(req, _wrapped("project", ProjectCreateSchema))["project"]
        with deps.db.begin() as session:
            _require_free_name(session, Project, "project", data["name"], data["domain_id"])
            project = Project(name=data["name"], domain_id=data["domain_id"], description=data["description"],
                              enabled=data["enabled"])
            session.add(project)
            session.flush()
            common.respond(resp, {"project": project_document(project, deps.base_url(req))}, falcon.HTTP_201)


class ProjectItem:
    def on_get(self, req, resp, project_id):
        context = common.ctx(req)
        if not common.visible(context, project_id):
            raise exception.NotFound(kind="Project", ident=project_id)
        deps = common.deps(req)
        with deps.db.begin() as session:
            project = _get_or_404(session, Project, project_id, "Project")
            common.respond(resp, {"project": project_document(project, deps.base_url(req))})


class Roles:
    def on_get(self, req, resp):
        deps = common.deps(req)
        query = common.equal_filters(sa.select(Role).order_by(Role.name), req, {"name": Role.name})
        with deps.db.begin() as session:
            common.respond(resp, {"roles": [role_document(r, deps.base_url(req)) for r in session.scalars(query)]})

    def on_post(self, req, resp):
        common.require_admin(req, "creating roles")
        deps = common.deps(req)
        data = common.body(req, _wrapped("role", RoleCreateSchema))["role"]
        with deps.db.begin() as session:
            if session.scalar(sa.select(Role.id).where(Role.name == data["name"])):
                raise exception.Conflict(reason=f"a role named {data['name']!r} already exists")
            role = Role(name=data["name"])
            session.add(role)
            session.flush()
            common.respond(resp, {"role": role_document(role, deps.base_url(req))}, falcon.HTTP_201)


class RoleItem:
    def on_get(self, req, resp, role_id):
        deps = common.deps(req)
        with deps.db.begin() as session:
            common.respond(resp, {"role": role_document(_get_or_404(session, Role, role_id, "Role"),
                                                        deps.base_url(req))})


def _assignment(project_id: str, user_id: str, role_id: str) -> tuple:
    """The WHERE clauses selecting one role assignment."""
    return (RoleAssignment.project_id == project_id, RoleAssignment.user_id == user_id,
            RoleAssignment.role_id == role_id)


class ProjectUserRole:
    """PUT/HEAD/DELETE /v3/projects/{p}/users/{u}/roles/{r}: grant, check, revoke."""

    def _check(self, session, project_id, user_id, role_id):
        _get_or_404(session, Project, project_id, "Project")
        _get_or_404(session, User, user_id, "User")
        _get_or_404(session, Role, role_id, "Role")

    def on_put(self, req, resp, project_id, user_id, role_id):
        common.require_admin(req, "granting roles")
        with common.deps(req).db.begin() as session:
            self._check(session, project_id, user_id, role_id)
            exists = session.scalar(sa.select(RoleAssignment.id).where(*_assignment(project_id, user_id, role_id)))
            if not exists:
                session.add(RoleAssignment(project_id=project_id, user_id=user_id, role_id=role_id))
        resp.status = falcon.HTTP_204

    def on_head(self, req, resp, project_id, user_id, role_id):
        common.require_admin(req, "checking role grants")
        with common.deps(req).db.begin() as session:
            found = session.scalar(sa.select(RoleAssignment.id).where(*_assignment(project_id, user_id, role_id)))
        if not found:
            raise exception.NotFound(kind="Role assignment", ident=f"{user_id}/{project_id}/{role_id}")
        resp.status = falcon.HTTP_204

    def on_delete(self, req, resp, project_id, user_id, role_id):
        common.require_admin(req, "revoking roles")
        with common.deps(req).db.begin() as session:
            gone = session.execute(sa.delete(RoleAssignment).where(*_assignment(project_id, user_id, role_id))).rowcount
        if not gone:
            raise exception.NotFound(kind="Role assignment", ident=f"{user_id}/{project_id}/{role_id}")
        resp.status = falcon.HTTP_204


class Domains:
    def on_get(self, req, resp):
        common.respond(resp, {"domains": [dict(_domain("default"), enabled=True, description="")]})


class DomainItem:
    def on_get(self, req, resp, domain_id):
        if domain_id not in ("default", "Default"):
            raise exception.NotFound(kind="Domain", ident=domain_id)
        common.respond(resp, {"domain": dict(_domain("default"), enabled=True, description="")})


def register(app: falcon.App) -> None:
    app.add_route("/v3/auth/tokens", AuthTokens())
    app.add_route("/v3/auth/projects", AuthProjects())
    app.add_route("/v3/users", Users())
    app.add_route("/v3/users/{user_id}", UserItem())
    app.add_route("/v3/projects", Projects())
    app.add_route("/v3/projects/{project_id}", ProjectItem())
    app.add_route("/v3/roles", Roles())
    app.add_route("/v3/roles/{role_id}", RoleItem())
    app.add_route("/v3/projects/{project_id}/users/{user_id}/roles/{role_id}", ProjectUserRole())
    app.add_route("/v3/domains", Domains())
    app.add_route("/v3/domains/{domain_id}", DomainItem())
