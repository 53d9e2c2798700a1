"""Identity v3: tokens (issue, validate, revoke) and roles, and the request schemas the
identity modules share. Domains, projects, users and groups are in
:mod:`fabric.api.identity_admin`, grants in :mod:`fabric.api.identity_grants`, the catalog
in :mod:`fabric.api.identity_catalog`, application credentials in
:mod:`fabric.api.identity_app_creds`."""

from __future__ import annotations

import falcon
import sqlalchemy as sa
from marshmallow import INCLUDE, Schema, fields, validate

from fabric import exception
from fabric.api import common, identity_catalog, identity_ldap, identity_lockout, policy, tokens
from fabric.api.common import ApiDeps
from fabric.db.models import Domain, Role
from fabric.db.models.identity import GLOBAL_ROLE

# --- schemas ----------------------------------------------------------------


class _Loose(Schema):
    class Meta:
        unknown = INCLUDE


class IdentitySchema(_Loose):
    methods = fields.List(fields.String(), required=True, validate=validate.Length(min=1))
    password = fields.Dict()
    token = fields.Dict()
    application_credential = fields.Dict()


class AuthSchema(_Loose):
    identity = fields.Nested(IdentitySchema, required=True)
    scope = fields.Raw(allow_none=True)


class AuthRequestSchema(_Loose):
    auth = fields.Nested(AuthSchema, required=True)


class UserCreateSchema(Schema):
    """A user to create; attributes beyond these (``email``, ``description``, any other) are
    kept as the user's extras, as Keystone does."""

    class Meta:
        unknown = INCLUDE

    name = fields.String(required=True, validate=validate.Length(min=1, max=255))
    password = fields.String(load_default=None, validate=validate.Length(min=1, max=4096))
    domain_id = fields.String(load_default="default")
    default_project_id = fields.String(allow_none=True, load_default=None)
    enabled = common.StrictBoolean(load_default=True)
    description = fields.String(allow_none=True, validate=validate.Length(max=255))
    email = fields.String(allow_none=True, validate=validate.Length(max=255))


class ProjectCreateSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=64))
    domain_id = fields.String(load_default=None)  # None: the parent's domain, else ``default``
    description = fields.String(load_default="", allow_none=True, validate=validate.Length(max=255))
    enabled = common.StrictBoolean(load_default=True)
    parent_id = fields.String(allow_none=True)
    is_domain = common.StrictBoolean(load_default=False)  # True: a project acting as a domain
    tags = fields.Raw(allow_none=True)  # checked by identity_projects.check_tags


class RoleCreateSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=64))
    domain_id = fields.String(allow_none=True)
    description = fields.String()
    options = fields.Dict()


class RoleUpdateSchema(identity_catalog.Lenient):
    name = fields.String(validate=validate.Length(min=1, max=64))


def wrapped(key: str, inner: type[Schema]) -> Schema:
    """A schema for ``{key: <inner>}``, Keystone's envelope."""
    return Schema.from_dict({key: fields.Nested(inner, required=True)})()


_wrapped = wrapped


# --- documents --------------------------------------------------------------


def _domains(session, *ids: str | None) -> dict[str, dict]:
    """{id: {"id", "name"}} of the domains ``ids`` (a missing one is named by its id)."""
    wanted = {i for i in ids if i}
    names = dict(session.execute(sa.select(Domain.id, Domain.name).where(Domain.id.in_(wanted))).all())
    return {i: {"id": i, "name": names.get(i, i)} for i in wanted}


def token_document(info: tokens.TokenInfo, deps: ApiDeps, req: falcon.Request) -> dict:
    doc = {
        "methods": list(info.methods),
        "user": {"id": info.user_id, "name": info.user_name, "password_expires_at": None},
        "audit_ids": [info.token_hash[:22]],
        "issued_at": common.isotime(info.issued_at, micro=True),
        "expires_at": common.isotime(info.expires_at, micro=True),
    }
    with deps.db.begin() as session:
        domains = _domains(session, info.user_domain_id, info.project_domain_id, info.domain_id)
        doc["user"]["domain"] = domains[info.user_domain_id]
        if info.project_id:
            doc["project"] = {"id": info.project_id, "name": info.project_name,
                              "domain": domains[info.project_domain_id]}
            doc["is_domain"] = False
        elif info.domain_id:
            doc["domain"] = domains[info.domain_id]
        elif info.system:
            doc["system"] = {"all": True}
        if info.scope is not None:
            doc["roles"] = [{"id": rid, "name": name} for rid, name in info.roles]
            doc["catalog"] = identity_catalog.catalog(session, deps.base_url(req), deps.settings.objectstore_url,
                                                      info.project_id)
    if info.app_cred_id:
        doc["application_credential"] = {"id": info.app_cred_id, "restricted": True}
    return {"token": doc}


def role_document(role: Role, base: str) -> dict:
    return {"id": role.id, "name": role.name, "domain_id": role.domain_id or None, "description": None, "options": {},
            "links": {"self": f"{base}/v3/roles/{role.id}"}}


# --- resources ---------------------------------------------------------------


class AuthTokens:
    """POST issues, GET/HEAD validate, DELETE revokes (X-Subject-Token)."""

    def on_post(self, req, resp):
        deps = common.deps(req)
        data = common.body(req, AuthRequestSchema())
        secret, info = tokens.authenticate(deps.db, data["auth"], deps.settings.api.token_ttl,
                                           identity_lockout.Policy.from_settings(deps.settings),
                                           identity_ldap.directory(deps.settings))
        resp.set_header("X-Subject-Token", secret)
        common.respond(resp, token_document(info, deps, req), falcon.HTTP_201)

    def _subject(self, req) -> tuple[str, tokens.TokenInfo]:
        subject = req.get_header("X-Subject-Token")
        if not subject:
            raise exception.Invalid(reason="the X-Subject-Token header is required")
        caller, db = req.context.token, common.deps(req).db
        # Keystone's rule: an admin, or the token's own user (any of the user's tokens, live or
        # not: only they and admins learn that one is gone).
        mine = tokens.hash_secret(subject) == caller.token_hash
        if not (mine or caller.is_admin) and tokens.owner_of(db, subject) != caller.user_id:
            raise exception.Forbidden(reason="only an admin may check or revoke another user's token")
        try:
            return subject, tokens.validate(db, subject)
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


def _check_role_name_free(session, name: str, domain_id: str) -> None:
    """Conflict if ``name`` is taken among the global roles (``domain_id`` '') or one domain's:
    role names are unique per domain, as in Keystone (the database's constraint backs this)."""
    if session.scalar(sa.select(Role.id).where(Role.name == name, Role.domain_id == domain_id)):
        where = f" in domain {domain_id}" if domain_id else ""
        raise exception.Conflict(reason=f"a role named {name!r} already exists{where}")


class Roles:
    def on_get(self, req, resp):
        deps = common.deps(req)
        # As Keystone: the global roles, or with ?domain_id those of one domain.
        query = common.equal_filters(sa.select(Role).order_by(Role.name), req, {"name": Role.name}).where(
            Role.domain_id == (req.get_param("domain_id") or GLOBAL_ROLE))
        with deps.db.begin() as session:
            common.respond(resp, {"roles": [role_document(r, deps.base_url(req)) for r in session.scalars(query)]})

    def on_post(self, req, resp):
        deps = common.deps(req)
        data = common.body(req, wrapped("role", RoleCreateSchema))["role"]
        with deps.db.begin() as session:
            domain_id = data.get("domain_id") or GLOBAL_ROLE
            if domain_id != GLOBAL_ROLE and session.get(Domain, domain_id) is None:
                raise exception.NotFound(kind="Domain", ident=domain_id)
            _check_role_name_free(session, data["name"], domain_id)
            role = Role(name=data["name"], domain_id=domain_id)
            session.add(role)
            session.flush()
            common.respond(resp, {"role": role_document(role, deps.base_url(req))}, falcon.HTTP_201)


class RoleItem:
    def on_get(self, req, resp, role_id):
        deps = common.deps(req)
        with deps.db.begin() as session:
            common.respond(resp, {"role": role_document(common.get_or_404(session, Role, role_id, "Role"),
                                                        deps.base_url(req))})

    def on_patch(self, req, resp, role_id):
        """Rename a role; the roles the policy table names keep their names (renaming ``admin``
        would take every admin's rights away, or hand them to whatever took the name)."""
        deps = common.deps(req)
        data = common.body(req, wrapped("role", RoleUpdateSchema))["role"]
        with deps.db.begin() as session:
            role = common.get_or_404(session, Role, role_id, "Role")
            if "name" in data and data["name"] != role.name:
                if role.name in policy.ROLES and role.domain_id == GLOBAL_ROLE:
                    raise exception.Conflict(reason=f"role {role.name!r} is one the policy names: it keeps its name")
                _check_role_name_free(session, data["name"], role.domain_id)
                role.name = data["name"]
            session.flush()
            common.respond(resp, {"role": role_document(role, deps.base_url(req))})

    def on_delete(self, req, resp, role_id):
        with common.deps(req).db.begin() as session:
            session.delete(common.get_or_404(session, Role, role_id, "Role"))  # its grants by cascade
        resp.status = falcon.HTTP_204


def register(app: falcon.App) -> None:
    app.add_route("/v3/auth/tokens", AuthTokens())
    app.add_route("/v3/roles", Roles())
    app.add_route("/v3/roles/{role_id}", RoleItem())
