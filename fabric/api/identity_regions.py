"""Regions (``/v3/regions``, ``openstack region create|list|show|set|delete``).

A region is listed when an operator made it (a row), when ``[api] region`` names it, or
when an endpoint does: the last two have no row until an operator changes them (a PATCH
makes one, as does naming one as another's parent). Regions form a tree: a parent must
exist, a change that would make a region its own ancestor is refused, and a region with
children or endpoints cannot be deleted (409 naming them).
"""

from __future__ import annotations

import falcon
import sqlalchemy as sa
from marshmallow import fields, validate

from fabric import exception
from fabric.api import common
from fabric.api.identity import wrapped
from fabric.api.identity_catalog import Lenient
from fabric.db import constraints
from fabric.db.models import CatalogEndpoint, Region

_ID = validate.Length(min=1, max=255)


class RegionCreateSchema(Lenient):
    id = fields.String(validate=_ID)
    description = fields.String(load_default="", allow_none=True, validate=validate.Length(max=255))
    parent_region_id = fields.String(load_default=None, allow_none=True, validate=_ID)


class RegionUpdateSchema(Lenient):
    description = fields.String(allow_none=True, validate=validate.Length(max=255))
    parent_region_id = fields.String(allow_none=True, validate=_ID)


def _implicit(session, configured: str) -> set[str]:
    """The regions listed without a row: ``[api] region`` and those endpoints name."""
    named = set(session.scalars(sa.select(CatalogEndpoint.region_id).where(CatalogEndpoint.region_id.is_not(None))))
    return named | {configured}


def region_document(region_id: str, row: Region | None, base: str) -> dict:
    return {"id": region_id, "description": row.description if row else "",
            "parent_region_id": row.parent_region_id if row else None,
            "links": {"self": f"{base}/v3/regions/{region_id}"}}


def _row(session, region_id: str, configured: str) -> Region:
    """The region's row, made for an implicit region (404 for one that does not exist)."""
    row = session.get(Region, region_id)
    if row is None:
        if region_id not in _implicit(session, configured):
            raise exception.NotFound(kind="Region", ident=region_id)
        row = Region(id=region_id, description="")
        session.add(row)
        session.flush()
    return row


def _set_parent(session, row: Region, parent_id: str | None, configured: str) -> None:
    if parent_id is not None:
        if parent_id == row.id:
            raise exception.Invalid(reason=f"parent_region_id {parent_id!r}: a region cannot be its own parent")
        try:
            ancestor: Region | None = _row(session, parent_id, configured)
        except exception.NotFound:
            raise exception.Invalid(reason=f"parent_region_id {parent_id!r}: no such region") from None
        while ancestor is not None:
            if ancestor.id == row.id:
                raise exception.Invalid(reason=f"parent_region_id {parent_id!r}: region {row.id} is among its "
                                               f"ancestors")
            ancestor = session.get(Region, ancestor.parent_region_id) if ancestor.parent_region_id else None
    row.parent_region_id = parent_id


def _create(req, resp, region_id: str | None) -> None:
    deps = common.deps(req)
    data = common.body(req, wrapped("region", RegionCreateSchema))["region"]
    if region_id is not None and data.get("id") not in (None, region_id):
        raise exception.Invalid(reason=f"region.id {data['id']!r} differs from the path's {region_id!r}")
    region_id = region_id or data.get("id")
    configured = deps.settings.api.region
    try:
        with deps.db.begin() as session:
            if region_id is not None and session.get(Region, region_id) is not None:
                raise exception.Conflict(reason=f"region {region_id} exists")
            row = Region(description=data["description"] or "") if region_id is None else Region(
                id=region_id, description=data["description"] or "")
            session.add(row)
            session.flush()
            _set_parent(session, row, data["parent_region_id"], configured)
            session.flush()
            doc = region_document(row.id, row, deps.base_url(req))
    except sa.exc.IntegrityError as exc:
        if constraints.violation(exc) != constraints.UNIQUE:
            raise
        raise exception.Conflict(reason=f"region {region_id} exists") from None
    common.respond(resp, {"region": doc}, falcon.HTTP_201)


class Regions:
    def on_get(self, req, resp):
        deps = common.deps(req)
        parent = req.get_param("parent_region_id")
        with deps.db.begin() as session:
            rows = {r.id: r for r in session.scalars(sa.select(Region))}
            ids = sorted(set(rows) | _implicit(session, deps.settings.api.region))
            docs = [region_document(i, rows.get(i), deps.base_url(req)) for i in ids]
        if parent:
            docs = [d for d in docs if d["parent_region_id"] == parent]
        common.respond(resp, {"regions": docs, "links": {"self": req.uri, "previous": None, "next": None}})

    def on_post(self, req, resp):
        _create(req, resp, None)


class RegionItem:
    def on_get(self, req, resp, region_id):
        deps = common.deps(req)
        with deps.db.begin() as session:
            row = session.get(Region, region_id)
            if row is None and region_id not in _implicit(session, deps.settings.api.region):
                raise exception.NotFound(kind="Region", ident=region_id)
            doc = region_document(region_id, row, deps.base_url(req))
        common.respond(resp, {"region": doc})

    def on_put(self, req, resp, region_id):
        _create(req, resp, region_id)

    def on_patch(self, req, resp, region_id):
        deps = common.deps(req)
        data = common.body(req, wrapped("region", RegionUpdateSchema))["region"]
        with deps.db.begin() as session:
            row = _row(session, region_id, deps.settings.api.region)
            if "description" in data:
                row.description = data["description"] or ""
            if "parent_region_id" in data:
                _set_parent(session, row, data["parent_region_id"], deps.settings.api.region)
            session.flush()
            doc = region_document(row.id, row, deps.base_url(req))
        common.respond(resp, {"region": doc})

    def on_delete(self, req, resp, region_id):
        deps = common.deps(req)
        with deps.db.begin() as session:
            row = session.get(Region, region_id)
            if row is None:
                raise exception.NotFound(kind="Region", ident=region_id)
            children = list(session.scalars(sa.select(Region.id).where(Region.parent_region_id == region_id)))
            if children:
                raise exception.Conflict(reason=f"region {region_id} has child regions: {', '.join(sorted(children))}")
            endpoints = session.scalar(sa.select(sa.func.count()).select_from(CatalogEndpoint)
                                       .where(CatalogEndpoint.region_id == region_id))
            if endpoints:
                raise exception.Conflict(reason=f"region {region_id} has {endpoints} endpoint(s)")
            session.delete(row)
        resp.status = falcon.HTTP_204


def register(app: falcon.App) -> None:
    app.add_route("/v3/regions", Regions())
    app.add_route("/v3/regions/{region_id}", RegionItem())


OPENAPI_OPERATIONS: list = [
    ("get", "/v3/regions", "List regions (?parent_region_id)", None, 200),
    ("post", "/v3/regions", "Create a region (admin)", wrapped("region", RegionCreateSchema), 201),
    ("get", "/v3/regions/{region_id}", "Show a region", None, 200),
    ("put", "/v3/regions/{region_id}", "Create a region with this id (admin)",
     wrapped("region", RegionCreateSchema), 201),
    ("patch", "/v3/regions/{region_id}", "Update a region (admin)", wrapped("region", RegionUpdateSchema), 200),
    ("delete", "/v3/regions/{region_id}", "Delete a region without children or endpoints (admin)", None, 204),
]
