"""Network v2.0 security groups and rules, and a port's groups (``PUT /ports/{id}``).

Every change is committed first, then the network workers are told by fanout
(``security_groups_changed``) and each host re-reads what it enforces. A rule's
values are checked by :meth:`fabric.network.secgroups.RuleSpec.checked` (their one
home) and stored as it normalised them. A project's ``default`` group is made on
its first use here (listing groups, creating one) or when its first port is made.
"""

from __future__ import annotations

import logging

import falcon
import sqlalchemy as sa
from marshmallow import INCLUDE, Schema, fields, validate

from fabric import exception
from fabric.api import common, in_doubt
from fabric.db.models import Port, PortSecurityGroup, SecurityGroup, SecurityGroupRule
from fabric.network import secgroups, secgroups_db
from fabric.network.secgroups import RuleSpec

LOG = logging.getLogger(__name__)


class _Loose(Schema):
    class Meta:
        unknown = INCLUDE  # neutron clients send attributes of extensions fabric ignores


class GroupCreateSchema(_Loose):
    name = fields.String(required=True, validate=validate.Length(min=1, max=255))
    description = fields.String(load_default="", validate=validate.Length(max=255))
    project_id = fields.String(load_default=None)
    tenant_id = fields.String(load_default=None)


class GroupUpdateSchema(_Loose):
    name = fields.String(validate=validate.Length(min=1, max=255))
    description = fields.String(validate=validate.Length(max=255))


class RuleCreateSchema(_Loose):
    security_group_id = fields.String(required=True, validate=validate.Length(min=1, max=36))
    direction = fields.String(required=True)
    ethertype = fields.String(load_default="IPv4")
    protocol = fields.Raw(load_default=None, allow_none=True)
    port_range_min = fields.Integer(load_default=None, allow_none=True)
    port_range_max = fields.Integer(load_default=None, allow_none=True)
    remote_ip_prefix = fields.String(load_default=None, allow_none=True)
    remote_group_id = fields.String(load_default=None, allow_none=True)
    description = fields.String(load_default="", allow_none=True, validate=validate.Length(max=255))
    project_id = fields.String(load_default=None)
    tenant_id = fields.String(load_default=None)


GROUP_CREATE = Schema.from_dict({"security_group": fields.Nested(GroupCreateSchema, required=True)})()
GROUP_UPDATE = Schema.from_dict({"security_group": fields.Nested(GroupUpdateSchema, required=True)})()
RULE_CREATE = Schema.from_dict({"security_group_rule": fields.Nested(RuleCreateSchema, required=True)})()


def rule_document(rule: SecurityGroupRule) -> dict:
    return {"id": rule.id, "security_group_id": rule.security_group_id, "direction": rule.direction,
            "ethertype": rule.ethertype, "protocol": rule.protocol, "port_range_min": rule.port_range_min,
            "port_range_max": rule.port_range_max, "remote_ip_prefix": rule.remote_ip_prefix,
            "remote_group_id": rule.remote_group_id, "remote_address_group_id": None,
            "normalized_cidr": rule.remote_ip_prefix, "description": rule.description or "",
            "project_id": rule.project_id, "tenant_id": rule.project_id, "revision_number": 1, "tags": [],
            "created_at": common.isotime(rule.created_at),
            "updated_at": common.isotime(rule.updated_at or rule.created_at)}


def group_document(group: SecurityGroup, rules: list[SecurityGroupRule]) -> dict:
    return {"id": group.id, "name": group.name, "description": group.description or "",
            "project_id": group.project_id, "tenant_id": group.project_id, "stateful": True, "shared": False,
            "security_group_rules": [rule_document(r) for r in rules], "tags": [], "revision_number": 1,
            "created_at": common.isotime(group.created_at),
            "updated_at": common.isotime(group.updated_at or group.created_at)}


def _owner(context, data: dict) -> str:
    wanted = data.get("project_id") or data.get("tenant_id")
    if wanted and wanted != context.project_id and not context.is_admin:
        raise exception.Forbidden(reason=f"only an admin may create resources for project {wanted}")
    return wanted or common.require_project(context)


def find_group(session, context, group_id: str) -> SecurityGroup:
    """The caller's group ``group_id`` (any for an admin); NotFound otherwise."""
    group = session.get(SecurityGroup, group_id)
    if group is None or not common.visible(context, group.project_id):
        raise exception.NotFound(kind="Security group", ident=group_id)
    return group


def _rules_of(session, group_ids: list[str]) -> dict[str, list[SecurityGroupRule]]:
    out: dict[str, list[SecurityGroupRule]] = {g: [] for g in group_ids}
    if group_ids:
        for rule in session.scalars(sa.select(SecurityGroupRule)
                                    .where(SecurityGroupRule.security_group_id.in_(group_ids))
                                    .order_by(SecurityGroupRule.created_at, SecurityGroupRule.id)):
            out[rule.security_group_id].append(rule)
    return out


def port_groups(session, port_ids: list[str]) -> dict[str, list[str]]:
    """The group ids of each port (for port documents)."""
    out: dict[str, list[str]] = {p: [] for p in port_ids}
    if port_ids:
        for port_id, group_id in session.execute(
                sa.select(PortSecurityGroup.port_id, PortSecurityGroup.security_group_id)
                .where(PortSecurityGroup.port_id.in_(port_ids)).order_by(PortSecurityGroup.security_group_id)):
            out[port_id].append(group_id)
    return out


def announce(deps, context, what: str) -> None:
    """Tell every network worker that groups changed (the change is committed already)."""
    try:
        deps.clients.network.security_groups_changed(context)
    except exception.FabricError as err:
        # The rows stand: workers read them when they start.
        LOG.warning("%s, but the network workers were not told: %s", what, err.message)


class Groups:
    def on_get(self, req, resp):
        deps, context = common.deps(req), common.ctx(req)
        if context.project_id:
            secgroups_db.ensure_default_group(deps.db, context.project_id)
        query = sa.select(SecurityGroup).order_by(SecurityGroup.created_at, SecurityGroup.id)
        if not context.is_admin:
            query = query.where(SecurityGroup.project_id == context.project_id)
        for param in ("id", "name"):
            values = req.get_param_as_list(param)
            if values:
                query = query.where(getattr(SecurityGroup, param).in_(values))
        project = req.get_param("project_id") or req.get_param("tenant_id")
        if project:
            query = query.where(SecurityGroup.project_id == project)
        with deps.db.begin() as session:
            rows = list(session.scalars(query))
            rules = _rules_of(session, [g.id for g in rows])
            docs = [group_document(g, rules[g.id]) for g in rows]
        common.respond(resp, {"security_groups": docs})

    def on_post(self, req, resp):
        deps, context = common.deps(req), common.ctx(req)
        data = common.body(req, GROUP_CREATE)["security_group"]
        owner = _owner(context, data)
        if data["name"] == secgroups_db.DEFAULT_NAME:
            raise exception.Conflict(reason="security group name 'default' is taken by the project's own "
                                            "default group; choose another name")
        secgroups_db.ensure_default_group(deps.db, owner)
        with in_doubt.creating(deps.db, "the create of a security group") as session:
            group = SecurityGroup(project_id=owner, name=data["name"], description=data["description"])
            session.add(group)
            session.flush()
            rules = secgroups_db.new_group_rules(group.id, owner)
            session.add_all(rules)
            session.flush()
            doc = group_document(group, rules)
        common.respond(resp, {"security_group": doc}, falcon.HTTP_201)


class GroupItem:
    def on_get(self, req, resp, group_id):
        context = common.ctx(req)
        with common.deps(req).db.begin() as session:
            group = find_group(session, context, group_id)
            common.respond(resp, {"security_group": group_document(group, _rules_of(session, [group.id])[group.id])})

    def on_put(self, req, resp, group_id):
        deps, context = common.deps(req), common.ctx(req)
        data = common.body(req, GROUP_UPDATE)["security_group"]
        with deps.db.begin() as session:
            group = find_group(session, context, group_id)
            if "name" in data:
                if group.default_for is not None and data["name"] != secgroups_db.DEFAULT_NAME:
                    raise exception.Conflict(reason=f"the default group {group_id} cannot be renamed")
                group.name = data["name"]
            if "description" in data:
                group.description = data["description"]
            session.flush()
            doc = group_document(group, _rules_of(session, [group.id])[group.id])
        common.respond(resp, {"security_group": doc})

    def on_delete(self, req, resp, group_id):
        deps, context = common.deps(req), common.ctx(req)
        with deps.db.begin() as session:
            group = find_group(session, context, group_id)
            if group.default_for is not None and not context.is_admin:
                raise exception.Conflict(reason=f"security group {group_id} is the project's default group; "
                                                "it cannot be deleted")
            ports = session.scalar(sa.select(sa.func.count()).select_from(PortSecurityGroup)
                                   .where(PortSecurityGroup.security_group_id == group_id))
            if ports:
                raise exception.Conflict(reason=f"security group {group_id} is in use by {ports} port(s); "
                                                "remove it from them first")
            referring = session.scalar(sa.select(SecurityGroupRule.security_group_id).where(
                SecurityGroupRule.remote_group_id == group_id,
                SecurityGroupRule.security_group_id != group_id).limit(1))
            if referring is not None:
                raise exception.Conflict(reason=f"security group {group_id} is the remote group of a rule of "
                                                f"group {referring}; delete that rule first")
            session.delete(group)
        announce(deps, context, f"Security group {group_id} deleted")
        resp.status = falcon.HTTP_204


class Rules:
    def on_get(self, req, resp):
        deps, context = common.deps(req), common.ctx(req)
        query = sa.select(SecurityGroupRule).order_by(SecurityGroupRule.created_at, SecurityGroupRule.id)
        if not context.is_admin:
            query = query.where(SecurityGroupRule.project_id == context.project_id)
        for param in ("id", "security_group_id", "direction", "ethertype", "protocol", "remote_group_id"):
            values = req.get_param_as_list(param)
            if values:
                query = query.where(getattr(SecurityGroupRule, param).in_(values))
        with deps.db.begin() as session:
            docs = [rule_document(r) for r in session.scalars(query)]
        common.respond(resp, {"security_group_rules": docs})

    def on_post(self, req, resp):
        deps, context = common.deps(req), common.ctx(req)
        data = common.body(req, RULE_CREATE)["security_group_rule"]
        spec = RuleSpec.checked(data["direction"], data["ethertype"], data["protocol"], data["port_range_min"],
                                data["port_range_max"], data["remote_ip_prefix"], data["remote_group_id"])
        with in_doubt.creating(deps.db, "the create of a security group rule") as session:
            group = find_group(session, context, data["security_group_id"])
            if spec.remote_group_id is not None:
                find_group(session, context, spec.remote_group_id)
            # An ICMP rule keeps the name it was given (Neutron shows ipv6-icmp as ipv6-icmp); it
            # duplicates a rule that gave another ICMP name, as both allow the same.
            icmp = spec.protocol in secgroups.ICMP_NAMES
            same = sa.select(SecurityGroupRule.id).where(
                SecurityGroupRule.security_group_id == group.id,
                *(SecurityGroupRule.protocol.in_(secgroups.ICMP_NAMES) if k == "protocol" and icmp
                  else getattr(SecurityGroupRule, k) == v if v is not None else getattr(SecurityGroupRule, k).is_(None)
                  for k, v in spec.to_dict().items()))
            duplicate = session.scalar(same.limit(1))
            if duplicate is not None:
                raise exception.Conflict(reason=f"security group {group.id} already has this rule ({duplicate})")
            stored = spec.to_dict() | ({"protocol": str(data["protocol"]).lower()} if icmp else {})
            rule = SecurityGroupRule(security_group_id=group.id, project_id=group.project_id,
                                     description=data["description"] or "", **stored)
            session.add(rule)
            session.flush()
            doc = rule_document(rule)
        announce(deps, context, f"Security group rule {doc['id']} created")
        common.respond(resp, {"security_group_rule": doc}, falcon.HTTP_201)


class RuleItem:
    def _get(self, session, context, rule_id) -> SecurityGroupRule:
        rule = session.get(SecurityGroupRule, rule_id)
        if rule is None or not common.visible(context, rule.project_id):
            raise exception.NotFound(kind="Security group rule", ident=rule_id)
        return rule

    def on_get(self, req, resp, rule_id):
        with common.deps(req).db.begin() as session:
            common.respond(resp, {"security_group_rule": rule_document(self._get(session, common.ctx(req), rule_id))})

    def on_delete(self, req, resp, rule_id):
        deps, context = common.deps(req), common.ctx(req)
        with deps.db.begin() as session:
            session.delete(self._get(session, context, rule_id))
        announce(deps, context, f"Security group rule {rule_id} deleted")
        resp.status = falcon.HTTP_204


def set_port_groups(deps, context, port_id: str, refs: list[str]) -> list[str]:
    """Port ``port_id`` is in exactly the groups ``refs`` names (ids or names of the port's
    project's groups); returns their ids. NotFound for an unknown port or group."""
    with deps.db.begin() as session:
        port = session.get(Port, port_id)
        if port is None or not common.visible(context, port.project_id):
            raise exception.NotFound(kind="Port", ident=port_id)
        project = port.project_id
    default_id = secgroups_db.ensure_default_group(deps.db, project) if secgroups_db.DEFAULT_NAME in refs else None
    with deps.db.begin() as session:
        ids = secgroups_db.resolve_groups(session, project, refs, default_id)
        session.execute(sa.delete(PortSecurityGroup).where(PortSecurityGroup.port_id == port_id))
        session.add_all([PortSecurityGroup(port_id=port_id, security_group_id=g) for g in ids])
    announce(deps, context, f"Port {port_id}'s security groups set")
    return ids


def change_server_groups(deps, context, instance, ref: str, add: bool) -> str:
    """Put every port of ``instance`` in the group ``ref`` (an id or name of its project's
    groups), or take them all out of it (Compute's addSecurityGroup and removeSecurityGroup);
    returns the group's id. Invalid when it is already in (or not in) the group, as Nova says;
    Conflict while the server has no port yet; NotFound for an unknown group."""
    project = instance.project_id
    with deps.db.begin() as session:
        ports = list(session.scalars(sa.select(Port.id).where(Port.device_id == instance.id)))
    if not ports:
        raise exception.Conflict(reason=f"server {instance.id} has no port yet: change its security groups "
                                        "once it is built")
    default_id = secgroups_db.ensure_default_group(deps.db, project) if ref == secgroups_db.DEFAULT_NAME else None
    with deps.db.begin() as session:
        [group_id] = secgroups_db.resolve_groups(session, project, [ref], default_id)
        members = set(session.scalars(sa.select(PortSecurityGroup.port_id).where(
            PortSecurityGroup.port_id.in_(ports), PortSecurityGroup.security_group_id == group_id)))
        if add:
            if members == set(ports):
                raise exception.Invalid(reason=f"security group {ref!r} is already associated with server {instance.id}")
            session.add_all([PortSecurityGroup(port_id=p, security_group_id=group_id) for p in ports if p not in members])
        else:
            if not members:
                raise exception.Invalid(reason=f"security group {ref!r} is not associated with server {instance.id}")
            session.execute(sa.delete(PortSecurityGroup).where(PortSecurityGroup.port_id.in_(ports),
                                                               PortSecurityGroup.security_group_id == group_id))
    announce(deps, context, f"Server {instance.id} {'added to' if add else 'removed from'} security group {group_id}")
    return group_id


def register(app: falcon.App, prefix: str) -> None:
    app.add_route(f"{prefix}/security-groups", Groups())
    app.add_route(f"{prefix}/security-groups/{{group_id}}", GroupItem())
    app.add_route(f"{prefix}/security-group-rules", Rules())
    app.add_route(f"{prefix}/security-group-rules/{{rule_id}}", RuleItem())
