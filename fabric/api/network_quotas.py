"""Network v2.0 quotas: the limits on networks, subnets, ports, routers and floating IPs,
enforced with compute's race-safe reservation (:mod:`fabric.api.quota`), and the
``/quotas/{project_id}`` resource (``openstack quota show/set`` for network resources).

A create reserves its unit in the transaction that writes its row, a delete gives it back
in the transaction that removes the row, so the usage row moves exactly with the rows
and concurrent creates cannot pass the limit. Over quota is Neutron's 409 OverQuota
(:mod:`fabric.api.errors`). What is counted: networks, subnets, routers and floating IPs
a project creates, and the ports it creates itself (``port create``); the ports fabric
makes on its behalf (servers' NICs, DHCP, router legs) are not.
"""

from __future__ import annotations

import falcon
import sqlalchemy as sa
from marshmallow import INCLUDE, Schema, fields, validate

from fabric import exception
from fabric.api import common, quota
from fabric.db.models import Project, Quota

#: Neutron's resource names fabric limits (their defaults: quota.NETWORK_DEFAULT_LIMITS).
LIMITED = tuple(quota.NETWORK_DEFAULT_LIMITS)
#: Shown as unlimited: fabric does not count them.
UNLIMITED = ("security_group", "security_group_rule", "rbac_policy", "subnetpool")


def prepare(db, project_id: str, resource: str) -> None:
    """Make the project's usage row of ``resource``; before the transaction that :func:`take` runs in."""
    quota.ensure_usage_rows(db, project_id, [resource])


def take(session, project_id: str, resource: str, count: int = 1) -> None:
    """Reserve ``count`` of ``resource`` in the caller's transaction; QuotaExceeded (409) naming
    the resource, the usage and the limit when it does not fit."""
    quota.reserve(session, project_id, {resource: count})


def check(session, project_id: str, resource: str, count: int = 1) -> None:
    """Raise QuotaExceeded now if ``count`` more would not fit (a courtesy before costly work such
    as taking an address; :func:`take` in the writing transaction is what enforces it)."""
    limit = quota.limits(session, project_id).get(resource, -1)
    in_use = quota.usages(session, project_id).get(resource, 0)
    if 0 <= limit < in_use + count:
        raise exception.QuotaExceeded(resource=resource, project=project_id, requested=count, in_use=in_use,
                                      limit=limit)


def give_back(session, project_id: str, resource: str, count: int = 1) -> None:
    """Release ``count`` of ``resource`` in the caller's transaction (the one deleting the rows)."""
    quota.release(session, project_id, {resource: count})


class QuotaSchema(Schema):
    class Meta:
        unknown = INCLUDE  # checked below, to name every unknown key

    network = fields.Integer(strict=True, validate=validate.Range(min=-1))
    subnet = fields.Integer(strict=True, validate=validate.Range(min=-1))
    port = fields.Integer(strict=True, validate=validate.Range(min=-1))
    router = fields.Integer(strict=True, validate=validate.Range(min=-1))
    floatingip = fields.Integer(strict=True, validate=validate.Range(min=-1))
    # What `openstack quota set` sends with the limits (Neutron's quota-check-limit): check_limit
    # refuses a limit below what the project uses already; force (--force) sets it anyway.
    check_limit = fields.Boolean()
    force = fields.Boolean()


QUOTA_UPDATE = Schema.from_dict({"quota": fields.Nested(QuotaSchema, required=True)})()


def _limits(session, project_id: str) -> dict[str, int]:
    found = quota.limits(session, project_id)
    return {name: found[name] for name in LIMITED} | dict.fromkeys(UNLIMITED, -1)


class Quotas:
    """``/quotas/{project_id}`` (show, admin set and reset) and its ``/details`` (with usage)."""

    def on_get(self, req, resp, project_id):
        with common.deps(req).db.begin() as session:
            common.respond(resp, {"quota": _limits(session, project_id)})

    def on_get_details(self, req, resp, project_id):
        with common.deps(req).db.begin() as session:
            limits, used = _limits(session, project_id), quota.usages(session, project_id)
        common.respond(resp, {"quota": {name: {"limit": limit, "used": used.get(name, 0), "reserved": 0}
                                        for name, limit in limits.items()}})

    def on_put(self, req, resp, project_id):
        data = common.body(req, QUOTA_UPDATE)["quota"]
        check_limit = data.pop("check_limit", False) and not data.pop("force", False)
        data.pop("force", None)
        unknown = sorted(set(data) - set(LIMITED))
        if unknown:
            raise exception.Invalid(reason=f"quota {unknown} cannot be set in fabric; settable: {', '.join(LIMITED)}")
        deps = common.deps(req)
        with deps.db.begin() as session:
            if session.get(Project, project_id) is None:
                raise exception.NotFound(kind="Project", ident=project_id)
            used = quota.usages(session, project_id)
        below = {name: value for name, value in data.items() if check_limit and 0 <= value < used.get(name, 0)}
        if below:
            raise exception.Invalid(reason="quota " + ", ".join(f"{n}={v} is below the {used[n]} in use"
                                                                for n, v in sorted(below.items()))
                                           + f" in project {project_id}; free some first, or use --force")
        for name, value in data.items():
            quota.set_limit(deps.db, project_id, name, value)
        self.on_get(req, resp, project_id)

    def on_delete(self, req, resp, project_id):
        with common.deps(req).db.begin() as session:
            session.execute(sa.delete(Quota).where(Quota.project_id == project_id, Quota.resource.in_(LIMITED)))
        resp.status = falcon.HTTP_204


OPERATIONS = [
    ("get", "/networking/v2.0/quotas/{project_id}", "Show a project's network quotas", None, 200),
    ("get", "/networking/v2.0/quotas/{project_id}/details", "Show a project's network quotas with usage", None,
     200),
    ("put", "/networking/v2.0/quotas/{project_id}", "Set a project's network quotas (admin)", QUOTA_UPDATE, 200),
    ("delete", "/networking/v2.0/quotas/{project_id}", "Reset a project's network quotas to the defaults (admin)",
     None, 204),
]


def register(app: falcon.App, prefix: str) -> None:
    quotas = Quotas()
    app.add_route(f"{prefix}/quotas/{{project_id}}", quotas)
    app.add_route(f"{prefix}/quotas/{{project_id}}/details", quotas, suffix="details")
