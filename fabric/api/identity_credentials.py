"""Keystone's ``/v3/credentials`` (``openstack credential create|list|show|set|delete``)
over the EC2 credentials the objectstore checks (:mod:`fabric.api.ec2_credentials` is the
same rows under OS-EC2): type ``ec2`` only, its blob a JSON object with ``access`` and
``secret``; its id the SHA-256 of the access key it was made with (kept when the blob
changes). A user manages their own, for a project they hold a role on; an admin anyone's,
for any project (as Keystone).
"""

from __future__ import annotations

import json

import falcon
import sqlalchemy as sa
from marshmallow import fields, validate

from fabric import exception
from fabric.api import common
from fabric.api.ec2_credentials import credential_id, require_role_on
from fabric.api.identity import wrapped
from fabric.api.identity_catalog import Lenient
from fabric.db import constraints
from fabric.db.models import Ec2Credential

#: The only type kept: the objectstore's access keys.
EC2 = "ec2"
_KEY = 64  # the columns' length, for access and secret alike


class CredentialCreateSchema(Lenient):
    user_id = fields.String(required=True, validate=validate.Length(min=1, max=36))
    project_id = fields.String(required=True, validate=validate.Length(min=1, max=36))
    type = fields.String(required=True, validate=validate.Equal(EC2, error="only 'ec2' credentials are kept"))
    blob = fields.String(required=True, validate=validate.Length(max=4096))


class CredentialUpdateSchema(Lenient):
    blob = fields.String(validate=validate.Length(max=4096))
    type = fields.String(validate=validate.Equal(EC2, error="only 'ec2' credentials are kept"))


def _keys(blob: str) -> tuple[str, str]:
    """(access, secret) of an ec2 blob; Invalid naming what is wrong."""
    try:
        doc = json.loads(blob)
    except ValueError:
        raise exception.Invalid(reason=f"credential.blob {blob[:60]!r} is not JSON") from None
    if not isinstance(doc, dict):
        raise exception.Invalid(reason="credential.blob must be a JSON object with 'access' and 'secret'")
    for key in ("access", "secret"):
        value = doc.get(key)
        if not isinstance(value, str) or not 0 < len(value) <= _KEY:
            raise exception.Invalid(reason=f"credential.blob's {key!r} must be a string of 1 to {_KEY} "
                                           f"characters, got {value!r}")
    return doc["access"], doc["secret"]


def credential_document(row: Ec2Credential, base: str) -> dict:
    ident = row.credential_id or credential_id(row.access)
    return {"id": ident, "user_id": row.user_id, "project_id": row.project_id, "type": EC2,
            "blob": json.dumps({"access": row.access, "secret": row.secret}),
            "links": {"self": f"{base}/v3/credentials/{ident}"}}


def _may_manage(context, user_id: str) -> None:
    if not context.is_admin and context.user_id != user_id:
        raise exception.Forbidden(reason=f"credentials of user {user_id} are managed by that user or an admin")


def _find(session, context, ident: str) -> Ec2Credential:
    """The credential ``ident`` names, if the caller may see it (NotFound otherwise: another
    user's credentials are not told apart from missing ones)."""
    row = session.scalar(sa.select(Ec2Credential).where(Ec2Credential.credential_id == ident))
    if row is None:  # made by the previous release: no id stored yet
        for candidate in session.scalars(sa.select(Ec2Credential).where(Ec2Credential.credential_id.is_(None))):
            if credential_id(candidate.access) == ident:
                candidate.credential_id, row = ident, candidate
                break
    if row is None or not (context.is_admin or row.user_id == context.user_id):
        raise exception.NotFound(kind="Credential", ident=ident)
    return row


class Credentials:
    def on_get(self, req, resp):
        deps, context = common.deps(req), common.ctx(req)
        query = common.equal_filters(sa.select(Ec2Credential).order_by(Ec2Credential.created_at,
                                                                       Ec2Credential.access), req,
                                     {"user_id": Ec2Credential.user_id})
        if not context.is_admin:
            query = query.where(Ec2Credential.user_id == context.user_id)
        wanted_type = req.get_param("type")
        with deps.db.begin() as session:
            rows = [] if wanted_type not in (None, "", EC2) else session.scalars(query).all()
            docs = [credential_document(r, deps.base_url(req)) for r in rows]
        common.respond(resp, {"credentials": docs, "links": {"self": req.uri, "previous": None, "next": None}})

    def on_post(self, req, resp):
        deps, context = common.deps(req), common.ctx(req)
        data = common.body(req, wrapped("credential", CredentialCreateSchema))["credential"]
        _may_manage(context, data["user_id"])
        access, secret = _keys(data["blob"])
        try:
            with deps.db.begin() as session:
                require_role_on(session, data["user_id"], data["project_id"], role_needed=not context.is_admin)
                if session.get(Ec2Credential, access) is not None:
                    raise exception.Conflict(reason=f"a credential with access key {access!r} exists")
                row = Ec2Credential(access=access, secret=secret, user_id=data["user_id"],
                                    project_id=data["project_id"], credential_id=credential_id(access))
                session.add(row)
                session.flush()
                doc = credential_document(row, deps.base_url(req))
        except sa.exc.IntegrityError as exc:  # the same access key, made at the same moment
            if constraints.violation(exc) != constraints.UNIQUE:
                raise
            raise exception.Conflict(reason=f"a credential with access key {access!r} exists") from None
        common.respond(resp, {"credential": doc}, falcon.HTTP_201)


class CredentialItem:
    def on_get(self, req, resp, credential_id):
        deps, context = common.deps(req), common.ctx(req)
        with deps.db.begin() as session:
            doc = credential_document(_find(session, context, credential_id), deps.base_url(req))
        common.respond(resp, {"credential": doc})

    def on_patch(self, req, resp, credential_id):
        deps, context = common.deps(req), common.ctx(req)
        data = common.body(req, wrapped("credential", CredentialUpdateSchema))["credential"]
        keys = _keys(data["blob"]) if "blob" in data else None
        try:
            with deps.db.begin() as session:
                row = _find(session, context, credential_id)
                if keys is not None and keys[0] != row.access and session.get(Ec2Credential, keys[0]) is not None:
                    raise exception.Conflict(reason=f"a credential with access key {keys[0]!r} exists")
                if keys is not None:
                    row.access, row.secret = keys
                session.flush()
                doc = credential_document(row, deps.base_url(req))
        except sa.exc.IntegrityError as exc:
            if keys is None or constraints.violation(exc) != constraints.UNIQUE:
                raise
            raise exception.Conflict(reason=f"a credential with access key {keys[0]!r} exists") from None
        common.respond(resp, {"credential": doc})

    def on_delete(self, req, resp, credential_id):
        deps, context = common.deps(req), common.ctx(req)
        with deps.db.begin() as session:
            session.delete(_find(session, context, credential_id))
        resp.status = falcon.HTTP_204


def register(app: falcon.App) -> None:
    app.add_route("/v3/credentials", Credentials())
    app.add_route("/v3/credentials/{credential_id}", CredentialItem())


OPENAPI_OPERATIONS: list = [
    ("get", "/v3/credentials", "List credentials (?user_id, ?type; one's own unless admin)", None, 200),
    ("post", "/v3/credentials", "Create an ec2 credential (for oneself unless admin)",
     wrapped("credential", CredentialCreateSchema), 201),
    ("get", "/v3/credentials/{credential_id}", "Show a credential", None, 200),
    ("patch", "/v3/credentials/{credential_id}", "Change a credential's blob",
     wrapped("credential", CredentialUpdateSchema), 200),
    ("delete", "/v3/credentials/{credential_id}", "Delete a credential", None, 204),
]
