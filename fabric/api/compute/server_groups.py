"""os-server-groups: create (affinity or anti-affinity), list, show, delete.

A group is a ``server_groups`` row; a server joins one at create time through
the ``group`` scheduler hint (:mod:`fabric.api.compute.servers`, the one path
that sets ``instances.server_group_id``), and the scheduler enforces the
policy when it claims a host (``server_group_hosts``). The members listed are
the group's live servers.

Compute 2.1 clients send ``policies`` (a list of exactly one policy); 2.64 and
later send ``policy``: both are accepted, and the answer carries both forms. The soft
policies (best effort: weighed, never refused) need microversion 2.15, as in Nova.
"""

from __future__ import annotations

import falcon
import sqlalchemy as sa
from marshmallow import INCLUDE, Schema, fields, validate

from fabric import exception
from fabric.api import common, in_doubt
from fabric.api.compute import microversion
from fabric.api.compute.quotas import FIXED_LIMITS
from fabric.db.models import Instance, ServerGroup
from fabric.scheduler.request import GROUP_POLICIES, SOFT_POLICIES

_POLICY = validate.OneOf(GROUP_POLICIES, error="{input!r} is not a server group policy fabric supports; "
                                               "accepted: {choices}")


class ServerGroupCreateSchema(Schema):
    class Meta:
        unknown = INCLUDE  # nova ignores fields of microversions it does not have; so do we

    name = fields.String(required=True, validate=validate.Length(min=1, max=255))
    policies = fields.List(fields.String(validate=_POLICY), load_default=None,
                           validate=validate.Length(equal=1, error="name exactly one policy"))
    policy = fields.String(load_default=None, validate=_POLICY)


SERVER_GROUP_CREATE = Schema.from_dict({"server_group": fields.Nested(ServerGroupCreateSchema, required=True)})()


def _policy_of(req, data: dict) -> str:
    """The one policy a create body asks for; Invalid when it names none or two different ones,
    or a soft policy below microversion 2.15."""
    listed = data["policies"][0] if data["policies"] else None
    if data["policy"] and listed and data["policy"] != listed:
        raise exception.Invalid(reason=f"server_group.policy {data['policy']!r} and server_group.policies "
                                       f"{data['policies']!r} disagree; give one of them")
    chosen = data["policy"] or listed
    if chosen is None:
        raise exception.Invalid(reason=f"server_group needs a 'policies' list (or a 'policy'); accepted: "
                                       f"{', '.join(GROUP_POLICIES)}")
    if chosen in SOFT_POLICIES and not microversion.at_least(req, microversion.SOFT_POLICIES):
        needed = microversion.text(microversion.SOFT_POLICIES)
        raise exception.Invalid(reason=f"server group policy {chosen!r} needs microversion {needed} or later "
                                       f"(OpenStack-API-Version: compute {needed}); this request asked for "
                                       f"{microversion.text(microversion.of(req))}")
    return chosen


def _members(session, group_ids: list[str]) -> dict[str, list[str]]:
    """Group id -> the ids of its live servers (oldest first)."""
    out: dict[str, list[str]] = {gid: [] for gid in group_ids}
    if group_ids:
        rows = session.execute(sa.select(Instance.server_group_id, Instance.id)
                               .where(Instance.server_group_id.in_(group_ids), Instance.deleted.is_(False))
                               .order_by(Instance.created_at, Instance.id))
        for group_id, instance_id in rows:
            out[group_id].append(instance_id)
    return out


def server_group_document(group: ServerGroup, members: list[str]) -> dict:
    """A group as Compute 2.1 shows it, plus the 2.64 ``policy``/``rules`` fields."""
    return {"id": group.id, "name": group.name, "policies": [group.policy], "policy": group.policy,
            "rules": {}, "members": members, "metadata": {}, "project_id": group.project_id,
            "user_id": group.user_id}


def find_group(session, context, group_id: str) -> ServerGroup:
    """The group the caller may see; NotFound otherwise (also for another project's)."""
    group = session.get(ServerGroup, group_id)
    if group is None or not common.visible(context, group.project_id):
        raise exception.NotFound(kind="Server group", ident=group_id)
    return group


class ServerGroups:
    def on_get(self, req, resp):
        context = common.ctx(req)
        query = sa.select(ServerGroup).order_by(ServerGroup.created_at, ServerGroup.id)
        all_projects = req.get_param_as_bool("all_projects", blank_as_true=True) or False
        if not (context.is_admin and all_projects):
            query = query.where(ServerGroup.project_id == common.require_project(context))
        limit = common.int_param(req, "limit", minimum=1)
        offset = common.int_param(req, "offset", default=0)
        query = query.offset(offset)
        if limit is not None:
            query = query.limit(limit)
        with common.deps(req).db.begin() as session:
            groups = list(session.scalars(query))
            members = _members(session, [g.id for g in groups])
            docs = [server_group_document(g, members[g.id]) for g in groups]
        common.respond(resp, {"server_groups": docs})

    def on_post(self, req, resp):
        context = common.ctx(req)
        project_id = common.require_project(context)
        data = common.body(req, SERVER_GROUP_CREATE)["server_group"]
        policy = _policy_of(req, data)
        limit = FIXED_LIMITS["server_groups"]
        with in_doubt.creating(common.deps(req).db, "the create of a server group") as session:
            count = session.scalar(sa.select(sa.func.count()).select_from(ServerGroup)
                                   .where(ServerGroup.project_id == project_id))
            if 0 <= limit <= count:
                raise exception.QuotaExceeded(resource="server_groups", project=project_id, requested=1,
                                              in_use=count, limit=limit)
            group = ServerGroup(name=data["name"], project_id=project_id, user_id=context.user_id, policy=policy)
            session.add(group)
            session.flush()
            doc = server_group_document(group, [])
        common.respond(resp, {"server_group": doc})


class ServerGroupItem:
    def on_get(self, req, resp, group_id):
        with common.deps(req).db.begin() as session:
            group = find_group(session, common.ctx(req), group_id)
            doc = server_group_document(group, _members(session, [group.id])[group.id])
        common.respond(resp, {"server_group": doc})

    def on_delete(self, req, resp, group_id):
        # As in nova, a group with members may go: its servers stay where they are
        # (their server_group_id is set to NULL by the foreign key).
        with common.deps(req).db.begin() as session:
            session.delete(find_group(session, common.ctx(req), group_id))
        resp.status = falcon.HTTP_204


def register(app: falcon.App, prefix: str) -> None:
    app.add_route(f"{prefix}/os-server-groups", ServerGroups())
    app.add_route(f"{prefix}/os-server-groups/{{group_id}}", ServerGroupItem())
