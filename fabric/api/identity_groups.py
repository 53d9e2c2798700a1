"""Identity v3 groups and group membership (``openstack group create|list|show|set|delete``,
``group add user``, ``group contains user``, ``group remove user``), in Keystone's shapes.
Names are unique per domain (concurrent creates: one 201, the rest 409); the LDAP
domain's groups and memberships (:mod:`fabric.api.identity_ldap`) are read, never written.
"""

from __future__ import annotations

import falcon
import sqlalchemy as sa
from marshmallow import fields, validate

from fabric import exception
from fabric.api import common, identity_grants, identity_ldap
from fabric.api.identity import wrapped
from fabric.api.identity_admin import (
    DEFAULT_DOMAIN_ID,
    listing,
    require_domain,
    require_free_name,
    user_document,
)
from fabric.api.identity_catalog import Lenient
from fabric.db import constraints
from fabric.db.models import Group, GroupMembership, User


class GroupCreateSchema(Lenient):
    name = fields.String(required=True, validate=validate.Length(min=1, max=64))
    domain_id = fields.String(load_default=DEFAULT_DOMAIN_ID)
    description = fields.String(load_default="", allow_none=True, validate=validate.Length(max=255))


class GroupUpdateSchema(Lenient):
    name = fields.String(validate=validate.Length(min=1, max=64))
    description = fields.String(validate=validate.Length(max=255), allow_none=True)



def group_document(group: Group, base: str) -> dict:
    return {"id": group.id, "name": group.name, "domain_id": group.domain_id, "description": group.description,
            "links": {"self": f"{base}/v3/groups/{group.id}"}}


def delete_group(session, group: Group) -> None:
    identity_grants.delete_with_grants(session, "group", group)


class UserGroups:
    def on_get(self, req, resp, user_id):
        deps = common.deps(req)
        with deps.db.begin() as session:
            common.get_or_404(session, User, user_id, "User")
            rows = session.scalars(sa.select(Group).join(GroupMembership, GroupMembership.group_id == Group.id)
                                   .where(GroupMembership.user_id == user_id).order_by(Group.name)).all()
            docs = [group_document(g, deps.base_url(req)) for g in rows]
        common.respond(resp, listing("groups", docs, req))


class Groups:
    def on_get(self, req, resp):
        deps = common.deps(req)
        identity_ldap.sync_quietly(deps.db, deps.settings)
        query = common.equal_filters(sa.select(Group).order_by(Group.name), req,
                                     {"name": Group.name, "domain_id": Group.domain_id})
        with deps.db.begin() as session:
            docs = [group_document(g, deps.base_url(req)) for g in session.scalars(query)]
        common.respond(resp, listing("groups", docs, req))

    def on_post(self, req, resp):
        deps = common.deps(req)
        data = common.body(req, wrapped("group", GroupCreateSchema))["group"]
        identity_ldap.refuse_writes(deps.settings, data["domain_id"], "creating groups")
        with deps.db.begin() as session:
            require_domain(session, data["domain_id"])
            require_free_name(session, Group, "group", data["name"], data["domain_id"])
            group = Group(**data)
            session.add(group)
            session.flush()
            doc = group_document(group, deps.base_url(req))
        common.respond(resp, {"group": doc}, falcon.HTTP_201)


class GroupItem:
    def on_get(self, req, resp, group_id):
        deps = common.deps(req)
        with deps.db.begin() as session:
            common.respond(resp, {"group": group_document(common.get_or_404(session, Group, group_id, "Group"),
                                                          deps.base_url(req))})

    def on_patch(self, req, resp, group_id):
        deps = common.deps(req)
        data = common.body(req, wrapped("group", GroupUpdateSchema))["group"]
        with deps.db.begin() as session:
            group = common.get_or_404(session, Group, group_id, "Group")
            identity_ldap.refuse_writes(deps.settings, group.domain_id, "changing groups")
            if "name" in data:
                require_free_name(session, Group, "group", data["name"], group.domain_id, but=group.id)
            for key, value in data.items():
                setattr(group, key, value if value is not None else "")
            session.flush()
            doc = group_document(group, deps.base_url(req))
        common.respond(resp, {"group": doc})

    def on_delete(self, req, resp, group_id):
        deps = common.deps(req)
        with deps.db.begin() as session:
            group = common.get_or_404(session, Group, group_id, "Group")
            identity_ldap.refuse_writes(deps.settings, group.domain_id, "deleting groups")
            delete_group(session, group)
        resp.status = falcon.HTTP_204


class GroupUsers:
    def on_get(self, req, resp, group_id):
        deps = common.deps(req)
        with deps.db.begin() as session:
            common.get_or_404(session, Group, group_id, "Group")
            rows = session.scalars(sa.select(User).join(GroupMembership, GroupMembership.user_id == User.id)
                                   .where(GroupMembership.group_id == group_id).order_by(User.name)).all()
            docs = [user_document(u, deps.base_url(req)) for u in rows]
        common.respond(resp, listing("users", docs, req))


class GroupMember:
    """PUT adds (idempotent), HEAD/GET checks (204 or 404), DELETE removes a user from a group."""

    def _membership(self, session, group_id: str, user_id: str) -> GroupMembership | None:
        common.get_or_404(session, Group, group_id, "Group")
        common.get_or_404(session, User, user_id, "User")
        return session.get(GroupMembership, (user_id, group_id))

    def _refuse_ldap(self, req, session, group_id: str) -> None:
        group = common.get_or_404(session, Group, group_id, "Group")
        identity_ldap.refuse_writes(common.deps(req).settings, group.domain_id, "changing group membership")

    def on_put(self, req, resp, group_id, user_id):
        try:
            with common.deps(req).db.begin() as session:
                self._refuse_ldap(req, session, group_id)
                if self._membership(session, group_id, user_id) is None:
                    session.add(GroupMembership(user_id=user_id, group_id=group_id))
        except sa.exc.IntegrityError as exc:
            # The same user added at once by another request: the membership is there.
            if constraints.violation(exc) != constraints.UNIQUE:
                raise
        resp.status = falcon.HTTP_204

    def on_head(self, req, resp, group_id, user_id):
        with common.deps(req).db.begin() as session:
            if self._membership(session, group_id, user_id) is None:
                raise exception.NotFound(kind="Group membership", ident=f"of user {user_id} in group {group_id}")
        resp.status = falcon.HTTP_204

    on_get = on_head

    def on_delete(self, req, resp, group_id, user_id):
        with common.deps(req).db.begin() as session:
            self._refuse_ldap(req, session, group_id)
            membership = self._membership(session, group_id, user_id)
            if membership is None:
                raise exception.NotFound(kind="Group membership", ident=f"of user {user_id} in group {group_id}")
            session.delete(membership)
        resp.status = falcon.HTTP_204


def register(app: falcon.App) -> None:
    app.add_route("/v3/users/{user_id}/groups", UserGroups())
    app.add_route("/v3/groups", Groups())
    app.add_route("/v3/groups/{group_id}", GroupItem())
    app.add_route("/v3/groups/{group_id}/users", GroupUsers())
    app.add_route("/v3/groups/{group_id}/users/{user_id}", GroupMember())


OPENAPI_OPERATIONS: list = [
    ("get", "/v3/users/{user_id}/groups", "List a user's groups", None, 200),
    ("get", "/v3/groups", "List groups (admin)", None, 200),
    ("post", "/v3/groups", "Create a group (admin)", wrapped("group", GroupCreateSchema), 201),
    ("get", "/v3/groups/{group_id}", "Show a group (admin)", None, 200),
    ("patch", "/v3/groups/{group_id}", "Update a group (admin)", wrapped("group", GroupUpdateSchema), 200),
    ("delete", "/v3/groups/{group_id}", "Delete a group (admin)", None, 204),
    ("get", "/v3/groups/{group_id}/users", "List a group's users (admin)", None, 200),
    ("put", "/v3/groups/{group_id}/users/{user_id}", "Add a user to a group (admin)", None, 204),
    ("head", "/v3/groups/{group_id}/users/{user_id}", "Check a user is in a group (admin)", None, 204),
    ("get", "/v3/groups/{group_id}/users/{user_id}", "Check a user is in a group (admin; 204, else 404)", None, 204),
    ("delete", "/v3/groups/{group_id}/users/{user_id}", "Remove a user from a group (admin)", None, 204),
]
