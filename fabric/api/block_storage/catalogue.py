"""What a Block Storage client reads besides volumes and snapshots: versions, the one volume
type, availability zones, services, extensions, quotas and limits."""

from __future__ import annotations

import falcon
import sqlalchemy as sa

from fabric import exception, servicegroup
from fabric.api import common, quota
from fabric.api.block_storage.common import MAX_VERSION, MIN_VERSION, PREFIX, entity, versioned
from fabric.api.versions import UPDATED
from fabric.db.models import Project, Quota
from fabric.volume.api import DEFAULT_TYPE_ID, DEFAULT_TYPE_NAME
from fabric.volume.rpcapi import BINARY, TOPIC

#: The volume quotas fabric enforces (fabric.api.quota.VOLUME_DEFAULT_LIMITS).
LIMITED = tuple(quota.VOLUME_DEFAULT_LIMITS)
#: Cinder quotas for what fabric does not have (backups, groups): shown at these values, not settable.
FIXED = {"backups": 0, "backup_gigabytes": 0, "groups": 0, "per_volume_gigabytes": -1}


def version(base: str) -> dict:
    return {"id": "v3.0", "status": "CURRENT", "version": MAX_VERSION, "min_version": MIN_VERSION,
            "updated": UPDATED, "links": [{"rel": "self", "href": f"{base}{PREFIX}/"}],
            "media-types": [{"base": "application/json",
                             "type": "application/vnd.openstack.volume+json;version=3"}]}


@versioned
class Versions:
    """GET /volume and /volume/v3: both answer the versions list, the root (where a client discovers
    the versions) with 300 Multiple Choices and /volume/v3 (one version shown) with 200, as Cinder's."""

    def __init__(self, status: int = 200) -> None:
        self.status = status

    def on_get(self, req, resp):
        common.respond(resp, {"versions": [version(common.deps(req).base_url(req))]}, self.status)


def volume_type() -> dict:
    return {"id": DEFAULT_TYPE_ID, "name": DEFAULT_TYPE_NAME, "description": "Default Volume Type",
            "is_public": True, "extra_specs": {}, "qos_specs_id": None,
            "os-volume-type-access:is_public": True}


@versioned
class Types:
    def on_get(self, req, resp):
        common.respond(resp, {"volume_types": [volume_type()]})


@versioned
class TypeItem:
    def on_get(self, req, resp, type_id):
        if type_id not in (DEFAULT_TYPE_ID, DEFAULT_TYPE_NAME, "default"):
            raise exception.NotFound(kind="Volume type", ident=type_id)
        common.respond(resp, {"volume_type": volume_type()})


@versioned
class AvailabilityZones:
    def on_get(self, req, resp):
        zone = common.deps(req).settings.volume.availability_zone
        up = bool(_services(req, up_only=True))
        common.respond(resp, {"availabilityZoneInfo": [{"zoneName": zone, "zoneState": {"available": up}}]})


def _services(req, up_only: bool = False):
    deps = common.deps(req)
    return servicegroup.list_services(deps.db, topic=TOPIC, binary=BINARY, up_only=up_only,
                                      down_time=deps.settings.service.service_down_time)


@versioned
class Services:
    """GET /os-services (admins): the volume workers, named as Cinder names its own."""

    def on_get(self, req, resp):
        zone = common.deps(req).settings.volume.availability_zone
        rows = [{"binary": "cinder-volume", "host": s.host, "zone": zone,
                 "status": "disabled" if s.disabled else "enabled", "state": "up" if s.up else "down",
                 "updated_at": common.isotime(s.last_heartbeat, micro=True), "disabled_reason": s.disabled_reason}
                for s in _services(req)
                if req.get_param("host") in (None, s.host) and req.get_param("binary") in (None, "cinder-volume")]
        common.respond(resp, {"services": rows})


@versioned
class Extensions:
    def on_get(self, req, resp):
        names = (("AvailabilityZones", "os-availability-zone"), ("Quotas", "os-quota-sets"),
                 ("Services", "os-services"), ("VolumeActions", "os-volume-actions"),
                 ("VolumeHostAttribute", "os-vol-host-attr"), ("VolumeTenantAttribute", "os-vol-tenant-attr"),
                 ("ExtendedSnapshotAttributes", "os-extended-snapshot-attributes"),
                 ("VolumeImageMetadata", "os-vol-image-meta"))
        common.respond(resp, {"extensions": [
            {"name": name, "alias": alias, "description": f"{name} (fabric)", "updated": UPDATED, "links": []}
            for name, alias in names]})


def quota_set(project_id: str, limits: dict, usages: dict | None = None) -> dict:
    doc: dict = {"id": project_id}
    for name in LIMITED:
        doc[name] = limits[name] if usages is None else {"limit": limits[name], "in_use": usages[name],
                                                          "reserved": 0, "allocated": 0}
        doc[f"{name}_{DEFAULT_TYPE_NAME}"] = doc[name]
    for name, value in FIXED.items():
        doc[name] = value if usages is None else {"limit": value, "in_use": 0, "reserved": 0, "allocated": 0}
    return doc


@versioned
class QuotaSet:
    def on_get(self, req, resp, project_id):
        usage = str(req.get_param("usage") or "").lower() in ("1", "true")
        with common.deps(req).db.begin() as session:
            doc = quota_set(project_id, quota.limits(session, project_id),
                            quota.usages(session, project_id) if usage else None)
        common.respond(resp, {"quota_set": doc})

    def on_get_defaults(self, req, resp, project_id):
        common.respond(resp, {"quota_set": quota_set(project_id, dict(quota.VOLUME_DEFAULT_LIMITS))})

    def on_put(self, req, resp, project_id):
        data = {k: v for k, v in entity(req, "quota_set").items() if k not in ("tenant_id", "id")}
        settable = {**{n: n for n in LIMITED}, **{f"{n}_{DEFAULT_TYPE_NAME}": n for n in LIMITED}}
        unknown = sorted(set(data) - set(settable))
        if unknown:
            raise exception.Invalid(reason=f"quota_set has quotas {unknown} fabric cannot set; settable: "
                                           f"{', '.join(LIMITED)}")
        values = {}
        for key, value in data.items():
            if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).lstrip("-").isdigit():
                raise exception.Invalid(reason=f"quota {key}={value!r} is not a whole number (-1: unlimited)")
            values[settable[key]] = int(value)
        deps = common.deps(req)
        with deps.db.begin() as session:
            if session.get(Project, project_id) is None:
                raise exception.NotFound(kind="Project", ident=project_id)
        for name, value in values.items():
            quota.set_limit(deps.db, project_id, name, value)
        with deps.db.begin() as session:
            common.respond(resp, {"quota_set": quota_set(project_id, quota.limits(session, project_id))})

    def on_delete(self, req, resp, project_id):
        with common.deps(req).db.begin() as session:
            session.execute(sa.delete(Quota).where(Quota.project_id == project_id, Quota.resource.in_(LIMITED)))
        resp.status = falcon.HTTP_202


@versioned
class Limits:
    def on_get(self, req, resp):
        context = common.ctx(req)
        project_id = common.require_project(context)
        with common.deps(req).db.begin() as session:
            lim, use = quota.limits(session, project_id), quota.usages(session, project_id)
        absolute = {"maxTotalVolumes": lim["volumes"], "maxTotalVolumeGigabytes": lim["gigabytes"],
                    "maxTotalSnapshots": lim["snapshots"], "maxTotalBackups": 0, "maxTotalBackupGigabytes": 0,
                    "totalVolumesUsed": use["volumes"], "totalGigabytesUsed": use["gigabytes"],
                    "totalSnapshotsUsed": use["snapshots"], "totalBackupsUsed": 0, "totalBackupGigabytesUsed": 0}
        common.respond(resp, {"limits": {"rate": [], "absolute": absolute}})


def register(app: falcon.App, root: str, prefix: str) -> None:
    app.add_route(root, Versions(300))
    app.add_route(prefix, Versions())
    app.add_route(f"{prefix}/types", Types())
    app.add_route(f"{prefix}/types/{{type_id}}", TypeItem())
    app.add_route(f"{prefix}/os-availability-zone", AvailabilityZones())
    app.add_route(f"{prefix}/os-services", Services())
    app.add_route(f"{prefix}/extensions", Extensions())
    quota_sets = QuotaSet()
    app.add_route(f"{prefix}/os-quota-sets/{{project_id}}", quota_sets)
    app.add_route(f"{prefix}/os-quota-sets/{{project_id}}/defaults", quota_sets, suffix="defaults")
    app.add_route(f"{prefix}/limits", Limits())
