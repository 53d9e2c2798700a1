"""Application credentials (``openstack application credential create|list|show|delete``):
a secret a user makes so an application can get tokens for the user's current project,
with some of the user's roles there, until an optional expiry.

Only a scrypt hash of the secret is kept (the secret is shown once, at creation).
Its roles must be among those the creator holds on the project, and a token issued
for it carries only those the user still holds (:func:`fabric.api.tokens.validate`).
Deleting it ends its tokens (foreign key cascade). A token issued for a
restricted application credential cannot make another one (as Keystone).
"""

from __future__ import annotations

import datetime
import secrets

import falcon
import sqlalchemy as sa
from marshmallow import EXCLUDE, Schema, fields, validate

from fabric import exception
from fabric.api import common, identity_grants, passwords
from fabric.api.identity import wrapped
from fabric.db.models import ApplicationCredential, Role
from fabric.db.types import utcnow


class RoleRefSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    id = fields.String()
    name = fields.String()


class AppCredCreateSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    name = fields.String(required=True, validate=validate.Length(min=1, max=255))
    description = fields.String(load_default="", allow_none=True, validate=validate.Length(max=255))
    secret = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=4096))
    expires_at = fields.String(load_default=None, allow_none=True)
    roles = fields.List(fields.Nested(RoleRefSchema), load_default=None, allow_none=True)
    unrestricted = common.StrictBoolean(load_default=False)


def _keystone_time(value: datetime.datetime | None) -> str | None:
    """An expiry as Keystone shows an application credential's: naive UTC, ISO 8601, no zone
    (clients compare it with the ``isoformat()`` they sent)."""
    return None if value is None else value.isoformat(timespec="microseconds")


def _parse_expiry(raw: str | None) -> datetime.datetime | None:
    if raw is None:
        return None
    try:
        value = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise exception.Invalid(reason=f"expires_at {raw!r} is not an ISO 8601 time") from None
    if value.tzinfo is not None:
        value = value.astimezone(datetime.UTC).replace(tzinfo=None)
    if value <= utcnow():
        raise exception.Invalid(reason=f"expires_at {raw!r} is in the past")
    return value


def app_cred_document(row: ApplicationCredential, names: dict[str, str], base: str,
                      secret: str | None = None) -> dict:
    doc = {"id": row.id, "name": row.name, "description": row.description, "user_id": row.user_id,
           "project_id": row.project_id, "expires_at": _keystone_time(row.expires_at),
           "unrestricted": row.unrestricted, "access_rules": [],
           "roles": [{"id": rid, "name": names.get(rid, rid), "domain_id": None} for rid in row.roles],
           "links": {"self": f"{base}/v3/users/{row.user_id}/application_credentials/{row.id}"}}
    if secret is not None:
        doc["secret"] = secret
    return doc


def _role_names(session) -> dict[str, str]:
    return dict(session.execute(sa.select(Role.id, Role.name)).all())


class AppCreds:
    def on_post(self, req, resp, user_id):
        context = common.ctx(req)
        project_id = common.require_project(context)
        token = req.context.token
        if token.app_cred_id:
            raise exception.Forbidden(reason="a token issued for an application credential cannot make another")
        data = common.body(req, wrapped("application_credential", AppCredCreateSchema))["application_credential"]
        expires_at = _parse_expiry(data["expires_at"])
        deps = common.deps(req)
        secret = data["secret"] or secrets.token_urlsafe(48)
        with deps.db.begin() as session:
            held = identity_grants.project_roles(session, user_id, project_id)
            by_id, by_name = {rid: rid for rid, _ in held}, {name: rid for rid, name in held}
            wanted = data["roles"] or [{"id": rid} for rid, _ in held]
            role_ids: list[str] = []
            for ref in wanted:
                rid = by_id.get(ref.get("id", "")) or by_name.get(ref.get("name", ""))
                if rid is None:
                    raise exception.Invalid(reason=f"role {ref.get('id') or ref.get('name')!r} is not one the "
                                                   f"user holds on project {project_id}")
                if rid not in role_ids:
                    role_ids.append(rid)
            if session.scalar(sa.select(ApplicationCredential.id).where(
                    ApplicationCredential.user_id == user_id, ApplicationCredential.name == data["name"])):
                raise exception.Conflict(reason=f"an application credential named {data['name']!r} already exists")
            row = ApplicationCredential(name=data["name"], description=data["description"] or "", user_id=user_id,
                                        project_id=project_id, secret_hash=passwords.hash_password(secret),
                                        expires_at=expires_at, unrestricted=data["unrestricted"], roles=role_ids)
            session.add(row)
            session.flush()
            doc = app_cred_document(row, _role_names(session), deps.base_url(req), secret)
        common.respond(resp, {"application_credential": doc}, falcon.HTTP_201)

    def on_get(self, req, resp, user_id):
        deps = common.deps(req)
        query = common.equal_filters(sa.select(ApplicationCredential).where(ApplicationCredential.user_id == user_id)
                                     .order_by(ApplicationCredential.name), req, {"name": ApplicationCredential.name})
        with deps.db.begin() as session:
            names = _role_names(session)
            docs = [app_cred_document(r, names, deps.base_url(req)) for r in session.scalars(query)]
        common.respond(resp, {"application_credentials": docs,
                              "links": {"self": req.uri, "previous": None, "next": None}})


class AppCredItem:
    def _row(self, session, user_id: str, cred_id: str) -> ApplicationCredential:
        row = session.get(ApplicationCredential, cred_id)
        if row is None or row.user_id != user_id:
            raise exception.NotFound(kind="Application credential", ident=cred_id)
        return row

    def on_get(self, req, resp, user_id, cred_id):
        deps = common.deps(req)
        with deps.db.begin() as session:
            doc = app_cred_document(self._row(session, user_id, cred_id), _role_names(session), deps.base_url(req))
        common.respond(resp, {"application_credential": doc})

    def on_delete(self, req, resp, user_id, cred_id):
        with common.deps(req).db.begin() as session:
            session.delete(self._row(session, user_id, cred_id))
        resp.status = falcon.HTTP_204


def register(app: falcon.App) -> None:
    app.add_route("/v3/users/{user_id}/application_credentials", AppCreds())
    app.add_route("/v3/users/{user_id}/application_credentials/{cred_id}", AppCredItem())


OPENAPI_OPERATIONS: list = [
    ("post", "/v3/users/{user_id}/application_credentials",
     "Create an application credential for the token's project (the secret is shown once)",
     wrapped("application_credential", AppCredCreateSchema), 201),
    ("get", "/v3/users/{user_id}/application_credentials", "List a user's application credentials (?name)", None,
     200),
    ("get", "/v3/users/{user_id}/application_credentials/{cred_id}", "Show an application credential", None, 200),
    ("delete", "/v3/users/{user_id}/application_credentials/{cred_id}",
     "Delete an application credential (its tokens end)", None, 204),
]
