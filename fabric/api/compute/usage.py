"""os-simple-tenant-usage (``openstack usage list`` and ``usage show``): what each project's
servers used in a period, in hours of vCPUs, MiB of RAM and GiB of disk, as Nova counts it.

A server counts from its launch (one never launched counts nothing) to its termination or
the end of the period, clipped to the period; deleted servers count for the time they ran
in it. Listing every project is for admins; a member may ask for their own project.
"""

from __future__ import annotations

import datetime

import falcon
import sqlalchemy as sa

from fabric import exception
from fabric.api import common
from fabric.api.compute import microversion
from fabric.db.models import Flavor, Instance
from fabric.db.types import utcnow

_HOUR = datetime.timedelta(hours=1)


def query_time(req: falcon.Request, name: str, default: datetime.datetime | None) -> datetime.datetime | None:
    """A period bound from the query (ISO 8601; naive means UTC), as naive UTC."""
    raw = req.get_param(name)
    if not raw:
        return default
    try:
        value = datetime.datetime.fromisoformat(raw)
    except ValueError:
        raise exception.Invalid(reason=f"{name} {raw!r} is not an ISO 8601 time, e.g. 2026-12-01T00:00:00") from None
    if value.tzinfo is not None:
        value = value.astimezone(datetime.UTC).replace(tzinfo=None)
    return value


def _period(req: falcon.Request) -> tuple[datetime.datetime, datetime.datetime]:
    now = utcnow()
    start, stop = query_time(req, "start", now - datetime.timedelta(days=1)), query_time(req, "end", now)
    if stop < start:
        raise exception.Invalid(reason=f"end {common.isotime(stop)} is before start {common.isotime(start)}")
    return start, min(stop, now)


def _server_usages(session, start: datetime.datetime, stop: datetime.datetime,
                   project_id: str | None) -> list[dict]:
    query = (sa.select(Instance, Flavor.name).outerjoin(Flavor, Flavor.id == Instance.flavor_id)
             .where(Instance.launched_at.is_not(None), Instance.launched_at < stop,
                    sa.or_(Instance.terminated_at.is_(None), Instance.terminated_at > start))
             .order_by(Instance.project_id, Instance.launched_at))
    if project_id is not None:
        query = query.where(Instance.project_id == project_id)
    usages = []
    for instance, flavor_name in session.execute(query):
        began = max(instance.launched_at, start)
        ended = min(instance.terminated_at or stop, stop)
        hours = max((ended - began) / _HOUR, 0.0)
        usages.append({
            "instance_id": instance.id, "name": instance.display_name, "tenant_id": instance.project_id,
            "hours": hours, "vcpus": instance.vcpus, "memory_mb": instance.memory_mb, "local_gb": instance.disk_gb,
            "flavor": flavor_name or "", "state": "terminated" if instance.deleted else instance.vm_state,
            "started_at": common.isotime(instance.launched_at, micro=True),
            "ended_at": common.isotime(instance.terminated_at, micro=True),
            "uptime": int(((instance.terminated_at or utcnow()) - instance.launched_at).total_seconds())})
    return usages


def _tenant_usage(project_id: str, servers: list[dict], start: datetime.datetime, stop: datetime.datetime,
                  detailed: bool) -> dict:
    doc = {"tenant_id": project_id, "start": common.isotime(start, micro=True),
           "stop": common.isotime(stop, micro=True), "total_hours": sum(s["hours"] for s in servers),
           "total_vcpus_usage": sum(s["hours"] * s["vcpus"] for s in servers),
           "total_memory_mb_usage": sum(s["hours"] * s["memory_mb"] for s in servers),
           "total_local_gb_usage": sum(s["hours"] * s["local_gb"] for s in servers)}
    if detailed:
        doc["server_usages"] = servers
    return doc


def _page(req, servers: list[dict], path: str, links_key: str) -> tuple[list[dict], dict]:
    """From microversion 2.40, ``servers`` cut to the page ``limit`` and ``marker`` (a server's
    id) name, and the next page's link under ``links_key`` when there is one."""
    if not microversion.at_least(req, microversion.USAGE_PAGES):
        return servers, {}
    limit, marker = common.int_param(req, "limit", minimum=0), req.get_param("marker")
    if marker is not None:
        index = next((i for i, s in enumerate(servers) if s["instance_id"] == marker), None)
        if index is None:
            raise exception.Invalid(reason=f"marker {marker!r} is not a server in this period's usage")
        servers = servers[index + 1:]
    if limit is None or len(servers) <= limit:
        return servers, {}
    servers = servers[:limit]
    query = "&".join(f"{k}={v}" for k, v in req.params.items() if k not in ("marker", "limit"))
    href = f"{common.deps(req).base_url(req)}/compute/v2.1/{path}?{query + '&' if query else ''}limit={limit}" \
           f"&marker={servers[-1]['instance_id']}"
    return servers, {links_key: [{"rel": "next", "href": href}]}


class Usages:
    def on_get(self, req, resp):
        start, stop = _period(req)
        detailed = req.get_param_as_bool("detailed", default=False)
        with common.deps(req).db.begin() as session:
            servers = _server_usages(session, start, stop, None)
        servers, links = _page(req, servers, "os-simple-tenant-usage", "tenant_usages_links")
        by_project: dict[str, list[dict]] = {}
        for server in servers:
            by_project.setdefault(server["tenant_id"], []).append(server)
        common.respond(resp, {"tenant_usages": [_tenant_usage(p, s, start, stop, detailed)
                                                for p, s in sorted(by_project.items())]} | links)


class ProjectUsage:
    def on_get(self, req, resp, project_id):
        start, stop = _period(req)
        with common.deps(req).db.begin() as session:
            servers = _server_usages(session, start, stop, project_id)
        servers, links = _page(req, servers, f"os-simple-tenant-usage/{project_id}", "tenant_usage_links")
        # Nova answers an empty object for a project that used nothing in the period.
        usage = _tenant_usage(project_id, servers, start, stop, True) if servers else {}
        common.respond(resp, {"tenant_usage": usage} | links)


def register(app: falcon.App, prefix: str) -> None:
    app.add_route(f"{prefix}/os-simple-tenant-usage", Usages())
    app.add_route(f"{prefix}/os-simple-tenant-usage/{{project_id}}", ProjectUsage())
