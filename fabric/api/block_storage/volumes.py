"""/volume/v3/volumes: create, list (filters, paging, sorting), show, update, metadata,
actions (os-extend, os-set_bootable, os-update_readonly_flag, os-volume_upload_image,
os-reset_status, os-force_delete) and delete."""

from __future__ import annotations

from typing import Any

import falcon
import sqlalchemy as sa

from fabric import exception
from fabric.api import common
from fabric.api.block_storage import catalogue, metadata, views
from fabric.api.block_storage.common import (
    boolean,
    entity,
    next_link,
    page,
    service,
    size,
    sort_order,
    text,
    versioned,
)
from fabric.db.models import Volume, VolumeAttachment
from fabric.volume import states

#: What a listing sorts by (sort_key, or the keys of sort=).
SORT_COLUMNS = {"id": Volume.id, "name": Volume.name, "status": Volume.status, "size": Volume.size,
                "created_at": Volume.created_at, "updated_at": Volume.updated_at,
                "availability_zone": Volume.availability_zone, "bootable": Volume.bootable}
#: Query parameters a listing filters on by equality.
EQUAL_FILTERS = {"name": Volume.name, "status": Volume.status, "availability_zone": Volume.availability_zone}
#: Body fields of a create fabric reads; the others Cinder knows are accepted and ignored.
_IGNORED_ON_CREATE = {"consistencygroup_id", "scheduler_hints", "backup_id", "group_id", "display_name",
                      "display_description", "os-scheduler-hints"}


def _admin(req: falcon.Request) -> bool:
    return common.ctx(req).is_admin


def _detail(req: falcon.Request, volume: dict[str, Any], *, extended: bool = True) -> dict[str, Any]:
    return views.volume(volume, common.deps(req).base_url(req), admin=_admin(req), extended=extended)


def _listing(req: falcon.Request, resp: falcon.Response, detail: bool) -> None:
    context = common.ctx(req)
    query = sa.select(Volume).where(Volume.status != states.DELETED)
    all_projects = context.is_admin and str(req.get_param("all_tenants") or "").lower() in ("1", "true", "yes")
    if not all_projects:
        query = query.where(Volume.project_id == common.require_project(context))
    elif req.get_param("project_id"):
        query = query.where(Volume.project_id == req.get_param("project_id"))
    query = common.equal_filters(query, req, EQUAL_FILTERS)
    if req.get_param("bootable") is not None:
        query = query.where(Volume.bootable.is_(str(req.get_param("bootable")).lower() in ("1", "true")))
    query = query.order_by(*sort_order(req, SORT_COLUMNS))
    base = common.deps(req).base_url(req)
    with common.deps(req).db.begin() as session:
        rows, full = page(session, query, req, Volume, "volume")
        ids = [row.id for row in rows]
        attached: dict[str, list] = {}
        if detail and ids:
            for row in session.scalars(sa.select(VolumeAttachment).where(VolumeAttachment.volume_id.in_(ids))):
                attached.setdefault(row.volume_id, []).append({c: getattr(row, c) for c in
                                                               ("id", "volume_id", "instance_uuid",
                                                                "attached_host", "device", "created_at",
                                                                "status")})
        dicts = []
        for row in rows:
            item = {c.key: getattr(row, c.key) for c in sa.inspect(Volume).column_attrs}
            item["attachments"] = attached.get(row.id, [])
            dicts.append(item)
    doc: dict[str, Any] = {"volumes": [views.volume(v, base, admin=context.is_admin) if detail
                                       else views.volume_summary(v, base) for v in dicts]}
    links = next_link(req, "volumes/detail" if detail else "volumes", rows, full)
    if links:
        doc["volumes_links"] = links
    common.respond(resp, doc)


def _no_empty_id(req: falcon.Request) -> None:
    """``/volumes/`` names the volume with the empty id, which none has (Cinder's 404): the app
    strips the trailing slash, so the collection's handlers see it first."""
    if req.env.get("PATH_INFO", "").endswith("/"):
        raise exception.NotFound(kind="Volume", ident="''")


@versioned
class Volumes:
    def on_get(self, req, resp):
        _no_empty_id(req)
        _listing(req, resp, detail=False)

    def on_put(self, req, resp):
        """``PUT /volumes/``: an update of the empty id, which no volume has."""
        raise exception.NotFound(kind="Volume", ident="''")

    def on_delete(self, req, resp):
        """``DELETE /volumes/``: the empty id, which no volume has."""
        raise exception.NotFound(kind="Volume", ident="''")

    def on_get_detail(self, req, resp):
        _listing(req, resp, detail=True)

    def on_post(self, req, resp):
        body = entity(req, "volume")
        known = {"size", "name", "description", "metadata", "imageRef", "image_id", "snapshot_id", "source_volid",
                 "availability_zone", "volume_type", "multiattach", "bootable"} | _IGNORED_ON_CREATE
        unknown = sorted(set(body) - known)
        if unknown:
            raise exception.Invalid(reason=f"volume has unknown fields {unknown}")
        for unsupported in ("backup_id", "consistencygroup_id", "group_id"):
            if body.get(unsupported) is not None:
                raise exception.Invalid(reason=f"{unsupported} {body[unsupported]!r}: volumes from backups, "
                                               "consistency groups and groups are not supported")
        image_id = body.get("imageRef") or body.get("image_id")
        volume = service(req).create(
            common.ctx(req), size=size(body["size"], "size") if body.get("size") is not None else None,
            name=text(body.get("name", body.get("display_name")), "name"),
            description=text(body.get("description", body.get("display_description")), "description"),
            metadata=body.get("metadata") or {}, image_id=text(image_id, "imageRef"),
            snapshot_id=text(body.get("snapshot_id"), "snapshot_id"),
            source_volid=text(body.get("source_volid"), "source_volid"),
            availability_zone=text(body.get("availability_zone"), "availability_zone"),
            volume_type=text(body.get("volume_type"), "volume_type"),
            multiattach=boolean(body.get("multiattach", False), "multiattach"),
            bootable=boolean(body.get("bootable", False), "bootable"))
        common.respond(resp, {"volume": _detail(req, volume, extended=False)}, falcon.HTTP_202)


@versioned
class VolumeItem:
    def on_get(self, req, resp, volume_id):
        common.respond(resp, {"volume": _detail(req, service(req).get(common.ctx(req), volume_id))})

    def on_put(self, req, resp, volume_id):
        body = entity(req, "volume")
        changes: dict[str, Any] = {}
        for key, alias in (("name", "display_name"), ("description", "display_description")):
            if key in body or alias in body:
                changes[key] = text(body.get(key, body.get(alias)), key)
        unknown = sorted(set(body) - {"name", "description", "display_name", "display_description", "metadata"})
        if unknown:
            raise exception.Invalid(reason=f"volume fields {unknown} cannot be changed; changeable: name, "
                                           "description, metadata")
        volumes = service(req)
        if "metadata" in body:
            volumes.update_metadata(common.ctx(req), volume_id, body["metadata"], replace=True)
        common.respond(resp, {"volume": _detail(req, volumes.update(common.ctx(req), volume_id, **changes),
                                                extended=False)})

    def on_delete(self, req, resp, volume_id):
        cascade = str(req.get_param("cascade") or "").lower() in ("1", "true")
        service(req).delete(common.ctx(req), volume_id, cascade=cascade)
        resp.status = falcon.HTTP_202


#: The volume actions fabric performs, as a refusal names them.
ACTIONS = ("os-extend, os-set_bootable, os-update_readonly_flag, os-volume_upload_image, os-reset_status, "
           "os-force_delete")


@versioned
class VolumeAction:
    """POST /volumes/{id}/action: one action per body, named by its key."""

    def on_post(self, req, resp, volume_id):
        doc = common.read_json(req)
        if not isinstance(doc, dict) or len(doc) != 1:
            raise exception.Invalid(reason="an action body is an object with exactly one action key; accepted: "
                                           f"{ACTIONS}")
        [(name, args)] = doc.items()
        context, volumes = common.ctx(req), service(req)
        if name == "os-extend":
            if not isinstance(args, dict) or "new_size" not in args:
                raise exception.Invalid(reason="os-extend needs {'new_size': N}")
            volumes.extend(context, volume_id, size(args["new_size"], "new_size"))
        elif name == "os-set_bootable":
            if not isinstance(args, dict) or "bootable" not in args:
                raise exception.Invalid(reason="os-set_bootable needs {'bootable': true|false}")
            volumes.update(context, volume_id, bootable=boolean(args["bootable"], "bootable"))
            resp.status = falcon.HTTP_200
            return
        elif name == "os-update_readonly_flag":
            if not isinstance(args, dict) or "readonly" not in args:
                raise exception.Invalid(reason="os-update_readonly_flag needs {'readonly': true|false}")
            # Cinder keeps the flag in the volume's metadata as "True"/"False", where clients read it.
            readonly = boolean(args["readonly"], "readonly")
            volumes.update_metadata(context, volume_id, {"readonly": str(readonly)})
        elif name == "os-volume_upload_image":
            if not isinstance(args, dict):
                raise exception.Invalid(reason="os-volume_upload_image needs {'image_name': ...} (and optionally "
                                               "disk_format, container_format, force, visibility, protected)")
            common.respond(resp, {"os-volume_upload_image": _upload_answer(volumes.upload_to_image(
                context, volume_id, args))}, falcon.HTTP_202)
            return
        elif name == "os-reset_status":
            if not context.is_admin:
                raise exception.Forbidden(reason="os-reset_status is for admins")
            status = (args or {}).get("status") if isinstance(args, dict) else None
            _reset_status(req, volume_id, status)
        elif name == "os-force_delete":
            if not context.is_admin:
                raise exception.Forbidden(reason="os-force_delete is for admins")
            volumes.delete(context, volume_id, force=True)
        else:
            raise exception.Invalid(reason=f"volume action {name!r} is not supported; accepted: {ACTIONS}")
        resp.status = falcon.HTTP_202


def _upload_answer(volume: dict[str, Any]) -> dict[str, Any]:
    """Cinder's answer to os-volume_upload_image: the volume (now uploading) and the image it fills."""
    image = volume["image"]
    return {"id": volume["id"], "updated_at": common.isotime(volume["updated_at"], True),
            "status": volume["status"], "display_description": volume["description"], "size": volume["size"],
            "volume_type": catalogue.volume_type(), "image_id": image["id"], "image_name": image["name"],
            "container_format": image["container_format"], "disk_format": image["disk_format"],
            "visibility": image["visibility"], "protected": bool(image["properties"].get("__protected"))}


_RESETTABLE = (states.AVAILABLE, states.ERROR, states.IN_USE, states.ERROR_DELETING, states.ERROR_EXTENDING,
               states.MAINTENANCE)


def _reset_status(req: falcon.Request, volume_id: str, status: Any) -> None:
    """An admin's repair: the volume's status set to ``status`` by compare-and-swap from the one read."""
    if status not in _RESETTABLE:
        raise exception.Invalid(reason=f"status {status!r} cannot be set; accepted: {', '.join(_RESETTABLE)}")
    context = common.ctx(req)
    current = service(req).get(context, volume_id)["status"]
    with common.deps(req).db.begin() as session:
        if not states.swap(session, Volume, volume_id, current, status, status_reason="reset by an admin"):
            raise exception.Conflict(reason=f"volume {volume_id} changed status meanwhile; try again")


def register(app: falcon.App, prefix: str) -> None:
    collection = Volumes()
    app.add_route(f"{prefix}/volumes", collection)
    app.add_route(f"{prefix}/volumes/detail", collection, suffix="detail")
    app.add_route(f"{prefix}/volumes/{{volume_id}}", VolumeItem())
    app.add_route(f"{prefix}/volumes/{{volume_id}}/action", VolumeAction())
    app.add_route(f"{prefix}/volumes/{{volume_id}}/metadata", metadata.Metadata(snapshot=False))
    app.add_route(f"{prefix}/volumes/{{volume_id}}/metadata/{{key}}", metadata.MetadataKey(snapshot=False))
