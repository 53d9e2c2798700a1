"""limits and os-quota-sets (show, detail, defaults; admin update)."""

from __future__ import annotations

import falcon
import sqlalchemy as sa
from marshmallow import INCLUDE, Schema, fields

from fabric import exception
from fabric.api import common, quota
from fabric.api.compute import microversion
from fabric.db.models import Project, Quota, ServerGroup

#: Nova quota names whose limits are fixed in fabric, shown with nova's defaults. Only
#: ``server_groups`` is enforced (by os-server-groups); the others are not.
FIXED_LIMITS = {"metadata_items": 128, "injected_files": 5, "injected_file_content_bytes": 10240,
                "injected_file_path_bytes": 255, "server_groups": 10, "server_group_members": 10,
                "fixed_ips": -1, "floating_ips": -1, "security_groups": -1, "security_group_rules": -1}
_COMPUTE = ("instances", "cores", "ram", "key_pairs")
#: The network quotas Nova shows before microversion 2.36 and drops from it.
NETWORK_QUOTAS = ("fixed_ips", "floating_ips", "security_groups", "security_group_rules")
#: /limits fields dropped at 2.36 (network) and 2.39 (image metadata).
_NETWORK_LIMITS = ("maxSecurityGroups", "maxSecurityGroupRules", "maxTotalFloatingIps", "totalFloatingIpsUsed",
                   "totalSecurityGroupsUsed")


class QuotaSetSchema(Schema):
    class Meta:
        unknown = INCLUDE

    instances = fields.Integer(strict=False)
    cores = fields.Integer(strict=False)
    ram = fields.Integer(strict=False)
    key_pairs = fields.Integer(strict=False)
    force = fields.Boolean()


QUOTA_UPDATE = Schema.from_dict({"quota_set": fields.Nested(QuotaSetSchema, required=True)})()


class Limits:
    def on_get(self, req, resp):
        context = common.ctx(req)
        project_id = req.get_param("tenant_id") if context.is_admin and req.get_param("tenant_id") else \
            common.require_project(context)
        with common.deps(req).db.begin() as session:
            lim, use = quota.limits(session, project_id), quota.usages(session, project_id)
            groups = session.scalar(sa.select(sa.func.count()).select_from(ServerGroup)
                                    .where(ServerGroup.project_id == project_id))
        absolute = {
            "maxTotalInstances": lim["instances"], "maxTotalCores": lim["cores"], "maxTotalRAMSize": lim["ram"],
            "maxTotalKeypairs": lim["key_pairs"], "maxServerMeta": 128, "maxImageMeta": 128,
            "maxPersonality": 5, "maxPersonalitySize": 10240, "maxServerGroups": FIXED_LIMITS["server_groups"], "maxServerGroupMembers": 10,
            "maxSecurityGroups": -1, "maxSecurityGroupRules": -1, "maxTotalFloatingIps": -1,
            "totalInstancesUsed": use["instances"], "totalCoresUsed": use["cores"], "totalRAMUsed": use["ram"],
            "totalFloatingIpsUsed": 0, "totalSecurityGroupsUsed": 0, "totalServerGroupsUsed": groups,
        }
        if microversion.at_least(req, microversion.NO_NETWORK_PROXIES):
            for name in _NETWORK_LIMITS:
                del absolute[name]
        if microversion.at_least(req, microversion.NO_IMAGE_META_LIMIT):
            del absolute["maxImageMeta"]
        common.respond(resp, {"limits": {"rate": [], "absolute": absolute}})


def quota_set(project_id: str, lim: dict, use: dict | None = None, version: tuple[int, int] = (2, 1)) -> dict:
    """A project's quota set as Nova shows it at ``version`` (``use``: the detail form)."""
    doc: dict = {"id": project_id}
    for name in _COMPUTE:
        doc[name] = lim[name] if use is None else {"limit": lim[name], "in_use": use[name], "reserved": 0}
    for name, value in FIXED_LIMITS.items():
        if name in NETWORK_QUOTAS and version >= microversion.NO_NETWORK_PROXIES:
            continue
        doc[name] = value if use is None else {"limit": value, "in_use": 0, "reserved": 0}
    return doc


class QuotaSet:
    def on_get(self, req, resp, project_id):
        with common.deps(req).db.begin() as session:
            common.respond(resp, {"quota_set": quota_set(project_id, quota.limits(session, project_id),
                                                         version=microversion.of(req))})

    def on_get_detail(self, req, resp, project_id):
        with common.deps(req).db.begin() as session:
            common.respond(resp, {"quota_set": quota_set(project_id, quota.limits(session, project_id),
                                                         quota.usages(session, project_id),
                                                         microversion.of(req))})

    def on_get_defaults(self, req, resp, project_id):
        common.respond(resp, {"quota_set": quota_set(project_id, dict(quota.DEFAULT_LIMITS),
                                                     version=microversion.of(req))})

    def on_put(self, req, resp, project_id):
        data = common.body(req, QUOTA_UPDATE)["quota_set"]
        data.pop("force", None)
        unknown = sorted(set(data) - set(_COMPUTE) - set(FIXED_LIMITS))
        if unknown:
            raise exception.Invalid(reason=f"quota_set has unknown quotas {unknown}; known: {', '.join(_COMPUTE)}")
        fixed = sorted(set(data) & set(FIXED_LIMITS))
        if fixed:
            raise exception.Invalid(reason=f"quotas {fixed} are fixed in fabric; settable: {', '.join(_COMPUTE)}")
        deps = common.deps(req)
        with deps.db.begin() as session:
            if session.get(Project, project_id) is None:
                raise exception.NotFound(kind="Project", ident=project_id)
        for name, value in data.items():
            quota.set_limit(deps.db, project_id, name, int(value))
        with deps.db.begin() as session:
            common.respond(resp, {"quota_set": quota_set(project_id, quota.limits(session, project_id),
                                                         version=microversion.of(req))})

    def on_delete(self, req, resp, project_id):
        with common.deps(req).db.begin() as session:
            session.execute(sa.delete(Quota).where(Quota.project_id == project_id))
        resp.status = falcon.HTTP_202


def register(app: falcon.App, prefix: str) -> None:
    app.add_route(f"{prefix}/limits", Limits())
    quota_sets = QuotaSet()
    app.add_route(f"{prefix}/os-quota-sets/{{project_id}}", quota_sets)
    app.add_route(f"{prefix}/os-quota-sets/{{project_id}}/detail", quota_sets, suffix="detail")
    app.add_route(f"{prefix}/os-quota-sets/{{project_id}}/defaults", quota_sets, suffix="defaults")
