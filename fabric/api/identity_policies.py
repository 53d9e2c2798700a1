"""Policy documents kept for clients (Keystone's ``/v3/policies``, ``openstack policy
create|list|show|set|delete``): stored and served as given, never enforced; who may call
what is :mod:`fabric.api.policy`'s table. Admins only, as Keystone's defaults."""

from __future__ import annotations

import falcon
import sqlalchemy as sa
from marshmallow import ValidationError, fields, validate

from fabric.api import common
from fabric.api.identity import wrapped
from fabric.api.identity_catalog import Lenient
from fabric.db.models import PolicyBlob

#: A policy document's size limit in UTF-8 bytes (what a TEXT column holds on MariaDB).
MAX_BLOB = 65535


def _fits(blob: str) -> None:
    size = len(blob.encode("utf-8", "surrogatepass"))
    if size > MAX_BLOB:
        raise ValidationError(f"is {size} bytes in UTF-8; at most {MAX_BLOB}")


class PolicyCreateSchema(Lenient):
    blob = fields.String(required=True, validate=_fits)
    type = fields.String(required=True, validate=validate.Length(min=1, max=255))


class PolicyUpdateSchema(Lenient):
    blob = fields.String(validate=_fits)
    type = fields.String(validate=validate.Length(min=1, max=255))


def policy_document(row: PolicyBlob, base: str) -> dict:
    return {"id": row.id, "blob": row.blob, "type": row.type, "links": {"self": f"{base}/v3/policies/{row.id}"}}


class Policies:
    def on_get(self, req, resp):
        deps = common.deps(req)
        query = common.equal_filters(sa.select(PolicyBlob).order_by(PolicyBlob.created_at, PolicyBlob.id), req,
                                     {"type": PolicyBlob.type})
        with deps.db.begin() as session:
            docs = [policy_document(r, deps.base_url(req)) for r in session.scalars(query)]
        common.respond(resp, {"policies": docs, "links": {"self": req.uri, "previous": None, "next": None}})

    def on_post(self, req, resp):
        deps = common.deps(req)
        data = common.body(req, wrapped("policy", PolicyCreateSchema))["policy"]
        with deps.db.begin() as session:
            row = PolicyBlob(blob=data["blob"], type=data["type"])
            session.add(row)
            session.flush()
            doc = policy_document(row, deps.base_url(req))
        common.respond(resp, {"policy": doc}, falcon.HTTP_201)


class PolicyItem:
    def on_get(self, req, resp, policy_id):
        deps = common.deps(req)
        with deps.db.begin() as session:
            doc = policy_document(common.get_or_404(session, PolicyBlob, policy_id, "Policy"), deps.base_url(req))
        common.respond(resp, {"policy": doc})

    def on_patch(self, req, resp, policy_id):
        deps = common.deps(req)
        data = common.body(req, wrapped("policy", PolicyUpdateSchema))["policy"]
        with deps.db.begin() as session:
            row = common.get_or_404(session, PolicyBlob, policy_id, "Policy")
            for key, value in data.items():
                setattr(row, key, value)
            session.flush()
            doc = policy_document(row, deps.base_url(req))
        common.respond(resp, {"policy": doc})

    def on_delete(self, req, resp, policy_id):
        with common.deps(req).db.begin() as session:
            session.delete(common.get_or_404(session, PolicyBlob, policy_id, "Policy"))
        resp.status = falcon.HTTP_204


def register(app: falcon.App) -> None:
    app.add_route("/v3/policies", Policies())
    app.add_route("/v3/policies/{policy_id}", PolicyItem())


OPENAPI_OPERATIONS: list = [
    ("get", "/v3/policies", "List stored policy documents (?type; admin)", None, 200),
    ("post", "/v3/policies", "Store a policy document (admin; never enforced)",
     wrapped("policy", PolicyCreateSchema), 201),
    ("get", "/v3/policies/{policy_id}", "Show a stored policy document (admin)", None, 200),
    ("patch", "/v3/policies/{policy_id}", "Change a stored policy document (admin)",
     wrapped("policy", PolicyUpdateSchema), 200),
    ("delete", "/v3/policies/{policy_id}", "Delete a stored policy document (admin)", None, 204),
]
