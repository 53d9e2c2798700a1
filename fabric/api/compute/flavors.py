"""Compute flavors: list, detail, show; admin create and delete."""

from __future__ import annotations

import falcon
import sqlalchemy as sa
from marshmallow import Schema, fields, validate
from sqlalchemy import exc as sa_exc

from fabric import exception
from fabric.api import common
from fabric.db.models import Flavor


class FlavorCreateSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=255))
    ram = fields.Integer(required=True, strict=False, validate=validate.Range(min=1, max=common.INT_MAX))
    vcpus = fields.Integer(required=True, strict=False, validate=validate.Range(min=1, max=common.INT_MAX))
    disk = fields.Integer(load_default=0, strict=False, validate=validate.Range(min=0, max=common.INT_MAX))
    id = fields.String(allow_none=True, load_default=None, validate=validate.Length(min=1, max=36))
    swap = fields.Raw(allow_none=True)
    rxtx_factor = fields.Float(allow_none=True)
    is_public = fields.Boolean(data_key="os-flavor-access:is_public", load_default=True)
    ephemeral = fields.Integer(data_key="OS-FLV-EXT-DATA:ephemeral", load_default=0,
                               validate=validate.Equal(0, error="ephemeral disks are not supported; use 0"))
    description = fields.String(allow_none=True)


FLAVOR_CREATE = Schema.from_dict({"flavor": fields.Nested(FlavorCreateSchema, required=True)})()


def links(base: str, kind: str, ident: str) -> list[dict]:
    return [{"rel": "self", "href": f"{base}/compute/v2.1/{kind}/{ident}"},
            {"rel": "bookmark", "href": f"{base}/compute/{kind}/{ident}"}]


def flavor_document(flavor: Flavor, base: str, detail: bool = True) -> dict:
    doc = {"id": flavor.id, "name": flavor.name, "links": links(base, "flavors", flavor.id)}
    if detail:
        doc.update({"ram": flavor.memory_mb, "vcpus": flavor.vcpus, "disk": flavor.disk_gb, "swap": "",
                    "rxtx_factor": 1.0, "OS-FLV-EXT-DATA:ephemeral": 0, "OS-FLV-DISABLED:disabled": False,
                    "os-flavor-access:is_public": flavor.is_public})
    return doc


def find_flavor(session, context, flavor_ref: str) -> Flavor:
    """The flavor ``flavor_ref`` (an id or a URL ending in one) visible to the caller; NotFound otherwise."""
    ident = str(flavor_ref).rstrip("/").rsplit("/", 1)[-1]
    flavor = session.get(Flavor, ident)
    if flavor is None or not (flavor.is_public or context.is_admin):
        raise exception.NotFound(kind="Flavor", ident=ident)
    return flavor


class Flavors:
    def _list(self, req, resp, detail: bool):
        deps, context = common.deps(req), common.ctx(req)
        query = sa.select(Flavor).order_by(Flavor.memory_mb, Flavor.id)
        if not context.is_admin:
            query = query.where(Flavor.is_public.is_(True))
        min_ram = common.int_param(req, "minRam")
        if min_ram:
            query = query.where(Flavor.memory_mb >= min_ram)
        min_disk = common.int_param(req, "minDisk")
        if min_disk:
            query = query.where(Flavor.disk_gb >= min_disk)
        with deps.db.begin() as session:
            docs = [flavor_document(f, deps.base_url(req), detail) for f in session.scalars(query)]
        common.respond(resp, {"flavors": docs})

    def on_get(self, req, resp):
        self._list(req, resp, detail=False)

    def on_get_detail(self, req, resp):
        self._list(req, resp, detail=True)

    def on_post(self, req, resp):
        deps = common.deps(req)
        data = common.body(req, FLAVOR_CREATE)["flavor"]
        ident = data["id"] if data["id"] not in (None, "auto") else None
        try:
            with deps.db.begin() as session:
                clash = session.scalar(sa.select(Flavor.id).where(
                    sa.or_(Flavor.name == data["name"], Flavor.id == ident) if ident else Flavor.name == data["name"]))
                if clash:
                    raise exception.Conflict(reason=f"a flavor named {data['name']!r} or with id {ident!r} "
                                                    f"already exists ({clash})")
                flavor = Flavor(name=data["name"], vcpus=data["vcpus"], memory_mb=data["ram"],
                                disk_gb=data["disk"], is_public=data["is_public"], extra_specs={})
                if ident:
                    flavor.id = ident
                session.add(flavor)
                session.flush()
                doc = flavor_document(flavor, deps.base_url(req))
        except sa_exc.IntegrityError:
            raise exception.Conflict(reason=f"a flavor named {data['name']!r} already exists") from None
        common.respond(resp, {"flavor": doc})


class FlavorItem:
    def on_get(self, req, resp, flavor_id):
        deps = common.deps(req)
        with deps.db.begin() as session:
            common.respond(resp, {"flavor": flavor_document(find_flavor(session, common.ctx(req), flavor_id),
                                                            deps.base_url(req))})

    def on_delete(self, req, resp, flavor_id):
        with common.deps(req).db.begin() as session:
            if not session.execute(sa.delete(Flavor).where(Flavor.id == flavor_id)).rowcount:
                raise exception.NotFound(kind="Flavor", ident=flavor_id)
        resp.status = falcon.HTTP_202


class FlavorExtraSpecs:
    def on_get(self, req, resp, flavor_id):
        with common.deps(req).db.begin() as session:
            flavor = find_flavor(session, common.ctx(req), flavor_id)
            common.respond(resp, {"extra_specs": dict(flavor.extra_specs or {})})


def register(app: falcon.App, prefix: str) -> None:
    flavors = Flavors()
    app.add_route(f"{prefix}/flavors", flavors)
    app.add_route(f"{prefix}/flavors/detail", flavors, suffix="detail")
    app.add_route(f"{prefix}/flavors/{{flavor_id}}", FlavorItem())
    app.add_route(f"{prefix}/flavors/{{flavor_id}}/os-extra_specs", FlavorExtraSpecs())
