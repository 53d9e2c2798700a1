"""/volume/v3/snapshots: create, list, show, update, metadata, delete."""

from __future__ import annotations

from typing import Any

import falcon
import sqlalchemy as sa

from fabric import exception
from fabric.api import common
from fabric.api.block_storage import metadata, views
from fabric.api.block_storage.common import boolean, entity, next_link, page, service, sort_order, text, versioned
from fabric.db.models import VolumeSnapshot
from fabric.volume import states

SORT_COLUMNS = {"id": VolumeSnapshot.id, "name": VolumeSnapshot.name, "status": VolumeSnapshot.status,
                "size": VolumeSnapshot.size, "created_at": VolumeSnapshot.created_at,
                "updated_at": VolumeSnapshot.updated_at}
EQUAL_FILTERS = {"name": VolumeSnapshot.name, "status": VolumeSnapshot.status,
                 "volume_id": VolumeSnapshot.volume_id}


def _listing(req: falcon.Request, resp: falcon.Response, detail: bool) -> None:
    context = common.ctx(req)
    query = sa.select(VolumeSnapshot).where(VolumeSnapshot.status != states.DELETED)
    if not (context.is_admin and str(req.get_param("all_tenants") or "").lower() in ("1", "true", "yes")):
        query = query.where(VolumeSnapshot.project_id == common.require_project(context))
    elif req.get_param("project_id"):
        query = query.where(VolumeSnapshot.project_id == req.get_param("project_id"))
    query = common.equal_filters(query, req, EQUAL_FILTERS).order_by(*sort_order(req, SORT_COLUMNS))
    with common.deps(req).db.begin() as session:
        rows, full = page(session, query, req, VolumeSnapshot, "snapshot")
        items = [{c.key: getattr(row, c.key) for c in sa.inspect(VolumeSnapshot).column_attrs} for row in rows]
    shown = [views.snapshot(item, extended=detail) for item in items]
    doc: dict[str, Any] = {"snapshots": shown}
    links = next_link(req, "snapshots/detail" if detail else "snapshots", rows, full)
    if links:
        doc["snapshots_links"] = links
    common.respond(resp, doc)


@versioned
class Snapshots:
    def on_get(self, req, resp):
        _listing(req, resp, detail=False)

    def on_get_detail(self, req, resp):
        _listing(req, resp, detail=True)

    def on_post(self, req, resp):
        body = entity(req, "snapshot")
        unknown = sorted(set(body) - {"volume_id", "name", "description", "force", "metadata", "display_name",
                                      "display_description"})
        if unknown:
            raise exception.Invalid(reason=f"snapshot has unknown fields {unknown}")
        if body.get("volume_id") is None:  # Cinder looks the volume up: 404, naming the missing id
            raise exception.NotFound(kind="Volume", ident=None)
        if not isinstance(body["volume_id"], str):
            raise exception.Invalid(reason=f"snapshot volume_id {body['volume_id']!r} must name a volume")
        snapshot = service(req).create_snapshot(
            common.ctx(req), body["volume_id"], name=text(body.get("name", body.get("display_name")), "name"),
            description=text(body.get("description", body.get("display_description")), "description"),
            force=boolean(body.get("force", False), "force"), metadata=body.get("metadata") or {})
        common.respond(resp, {"snapshot": views.snapshot(snapshot, extended=False)}, falcon.HTTP_202)


@versioned
class SnapshotItem:
    def on_get(self, req, resp, snapshot_id):
        common.respond(resp, {"snapshot": views.snapshot(service(req).get_snapshot(common.ctx(req), snapshot_id))})

    def on_put(self, req, resp, snapshot_id):
        body = entity(req, "snapshot")
        unknown = sorted(set(body) - {"name", "description", "display_name", "display_description"})
        if unknown:
            raise exception.Invalid(reason=f"snapshot fields {unknown} cannot be changed; changeable: name, "
                                           "description")
        changes = {key: text(body.get(key, body.get(alias)), key)
                   for key, alias in (("name", "display_name"), ("description", "display_description"))
                   if key in body or alias in body}
        snapshot = service(req).update_snapshot(common.ctx(req), snapshot_id, **changes)
        common.respond(resp, {"snapshot": views.snapshot(snapshot, extended=False)})

    def on_delete(self, req, resp, snapshot_id):
        service(req).delete_snapshot(common.ctx(req), snapshot_id)
        resp.status = falcon.HTTP_202


def register(app: falcon.App, prefix: str) -> None:
    collection = Snapshots()
    app.add_route(f"{prefix}/snapshots", collection)
    app.add_route(f"{prefix}/snapshots/detail", collection, suffix="detail")
    app.add_route(f"{prefix}/snapshots/{{snapshot_id}}", SnapshotItem())
    app.add_route(f"{prefix}/snapshots/{{snapshot_id}}/metadata", metadata.Metadata(snapshot=True))
    app.add_route(f"{prefix}/snapshots/{{snapshot_id}}/metadata/{{key}}", metadata.MetadataKey(snapshot=True))
