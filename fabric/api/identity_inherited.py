"""Role grants inherited to projects (Keystone's OS-INHERIT):
``/v3/OS-INHERIT/{domains,projects}/{id}/{users,groups}/{id}/roles/{role_id}/inherited_to_projects``
grants, checks and revokes one; ``.../roles/inherited_to_projects`` (on a domain) lists them.

A grant inherited from a domain gives its role on every project of the domain, one from a
project on every project beneath it, not on the domain or project itself; tokens and
``role_assignments?effective`` show the roles where they reach (:mod:`fabric.api.identity_grants`).
"""

from __future__ import annotations

import dataclasses

import falcon
import sqlalchemy as sa

from fabric.api import common
from fabric.api.identity_grants import (
    ACTORS,
    INHERITED,
    Grant,
    GrantItem,
    grant_from,
    require_parties,
)
from fabric.db.models import Role, RoleGrant

_PREFIX = "/v3/OS-INHERIT"


class InheritedGrantItem(GrantItem):
    """PUT, HEAD/GET and DELETE of one inherited grant (as :class:`GrantItem`)."""

    def _grant(self, params: dict) -> Grant:
        grant = grant_from(self.actor_type, self.target_type, params)
        return dataclasses.replace(grant, target_type=INHERITED[self.target_type])


class InheritedGrantList:
    """GET the roles one actor holds inherited to the projects of a domain."""

    def __init__(self, actor_type: str) -> None:
        self.actor_type = actor_type

    def on_get(self, req, resp, **params):
        deps = common.deps(req)
        grant = dataclasses.replace(grant_from(self.actor_type, "domain", params), target_type=INHERITED["domain"])
        base = deps.base_url(req)
        with deps.db.begin() as session:
            require_parties(session, grant, need_role=False)
            roles = session.scalars(sa.select(Role).join(RoleGrant, RoleGrant.role_id == Role.id).where(
                RoleGrant.actor_type == grant.actor_type, RoleGrant.actor_id == grant.actor_id,
                RoleGrant.target_type == grant.target_type, RoleGrant.target_id == grant.target_id)
                .order_by(Role.name)).all()
            docs = [{"id": r.id, "name": r.name, "domain_id": None, "links": {"self": f"{base}/v3/roles/{r.id}"}}
                    for r in roles]
        common.respond(resp, {"roles": docs, "links": {"self": req.uri, "previous": None, "next": None}})


def _paths():
    for target in INHERITED:
        for actor in ACTORS:
            yield target, actor, f"{_PREFIX}/{target}s/{{{target}_id}}/{actor}s/{{{actor}_id}}/roles"


def register(app: falcon.App) -> None:
    for target, actor, path in _paths():
        app.add_route(f"{path}/{{role_id}}/inherited_to_projects", InheritedGrantItem(actor, target))
        if target == "domain":
            app.add_route(f"{path}/inherited_to_projects", InheritedGrantList(actor))


OPENAPI_OPERATIONS: list = [
    (method, f"{path}/{{role_id}}/inherited_to_projects", f"{summary} inherited to projects ({actor} on {target}, "
     "admin)", None, status)
    for target, actor, path in _paths()
    for method, summary, status in (("put", "Grant a role", 204), ("get", "Check a role grant", 204),
                                    ("head", "Check a role grant", 204), ("delete", "Revoke a role", 204))
] + [(("get", f"{path}/inherited_to_projects", f"List roles inherited to projects ({actor} on domain, admin)",
       None, 200)) for target, actor, path in _paths() if target == "domain"]
