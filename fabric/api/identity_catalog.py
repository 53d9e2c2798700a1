"""The service catalog, kept in the database: services and their endpoints
(``openstack service|endpoint list|create|show|delete``), served in every
project-scoped token (regions: :mod:`fabric.api.identity_regions`).

An endpoint's URL may hold ``$(api_url)s`` (this API's public base URL) and
``$(objectstore_url)s`` (the objectstore's), filled in when a token is issued, so
the catalog fabric seeds (:data:`DEFAULT_SERVICES`, also seeded by migration 0009)
follows ``[api] public_url`` and the objectstore's address as before.
"""

from __future__ import annotations

import falcon
import sqlalchemy as sa
from marshmallow import EXCLUDE, Schema, fields, post_load, validate

from fabric import exception
from fabric.api import common
from fabric.db import constraints
from fabric.db.models import CatalogEndpoint, CatalogService, EndpointGroup, ProjectEndpointGroup, Region

#: (type, name, URL template): the catalog fabric has always served.
DEFAULT_SERVICES = (("identity", "keystone", "$(api_url)s/v3"), ("compute", "nova", "$(api_url)s/compute/v2.1"),
                    ("image", "glance", "$(api_url)s/image"), ("network", "neutron", "$(api_url)s/networking"),
                    ("s3", "fabric-objectstore", "$(objectstore_url)s"),
                    ("block-storage", "cinder", "$(api_url)s/volume/v3"),
                    ("volumev3", "cinderv3", "$(api_url)s/volume/v3"))
INTERFACES = ("public", "internal", "admin")


def seed(session, region: str) -> None:
    """Fill an empty catalog with the default services (ids ``<type>-service``, endpoints
    ``<type>-public`` in ``region``): run by bootstrap, for a database made without
    migrations. A catalog with any service is the operator's and is left alone."""
    if session.scalar(sa.select(CatalogService.id).limit(1)) is not None:
        return
    for kind, name, url in DEFAULT_SERVICES:
        if session.get(CatalogService, f"{kind}-service") is None:
            session.add(CatalogService(id=f"{kind}-service", type=kind, name=name, description="", enabled=True))
            session.flush()  # no relationship() tells the ORM to insert the service first
            session.add(CatalogEndpoint(id=f"{kind}-public", service_id=f"{kind}-service", interface="public",
                                        region_id=region, url=url, enabled=True))


def expand(url: str, api_url: str, objectstore_url: str) -> str:
    return url.replace("$(api_url)s", api_url).replace("$(objectstore_url)s", objectstore_url)


#: What an endpoint group's filters may name, and the endpoint's column each compares.
GROUP_FILTERS = {"service_id": CatalogEndpoint.service_id, "interface": CatalogEndpoint.interface,
                 "region_id": CatalogEndpoint.region_id}


def in_group(filters: dict) -> sa.ColumnElement[bool]:
    """The endpoints an endpoint group's ``filters`` name: those matching every filter."""
    return sa.and_(sa.true(), *(GROUP_FILTERS[key] == value for key, value in filters.items()))


def catalog(session, api_url: str, objectstore_url: str, project_id: str | None = None) -> list[dict]:
    """The catalog of a token: every enabled service with its enabled endpoints, cut down, for
    a project associated with endpoint groups (OS-EP-FILTER), to the endpoints in them."""
    query = (sa.select(CatalogService, CatalogEndpoint)
             .join(CatalogEndpoint, CatalogEndpoint.service_id == CatalogService.id)
             .where(CatalogService.enabled.is_(True), CatalogEndpoint.enabled.is_(True))
             .order_by(CatalogService.type, CatalogService.id, CatalogEndpoint.interface))
    if project_id is not None:
        groups = session.scalars(sa.select(EndpointGroup.filters).join(
            ProjectEndpointGroup, ProjectEndpointGroup.endpoint_group_id == EndpointGroup.id)
            .where(ProjectEndpointGroup.project_id == project_id)).all()
        if groups:
            query = query.where(sa.or_(*(in_group(filters) for filters in groups)))
    services: dict[str, dict] = {}
    for service, endpoint in session.execute(query).all():
        entry = services.setdefault(service.id, {"id": service.id, "type": service.type, "name": service.name,
                                                 "endpoints": []})
        entry["endpoints"].append({"id": endpoint.id, "interface": endpoint.interface, "region": endpoint.region_id,
                                   "region_id": endpoint.region_id,
                                   "url": expand(endpoint.url, api_url, objectstore_url)})
    return list(services.values())


class Lenient(Schema):
    """What every identity create or update body loads with: fields fabric does not keep (tags,
    options, extras) are ignored, as Keystone does; a null description is empty."""

    class Meta:
        unknown = EXCLUDE

    @post_load
    def _empty_description(self, data: dict, **_kwargs) -> dict:
        if "description" in data and data["description"] is None:
            data["description"] = ""
        return data


class ServiceCreateSchema(Lenient):
    type = fields.String(required=True, validate=validate.Length(min=1, max=255))
    name = fields.String(load_default="", validate=validate.Length(max=255))
    description = fields.String(load_default="", allow_none=True, validate=validate.Length(max=255))
    enabled = common.StrictBoolean(load_default=True)


class ServiceUpdateSchema(Lenient):
    type = fields.String(validate=validate.Length(min=1, max=255))
    name = fields.String(validate=validate.Length(max=255))
    description = fields.String(allow_none=True, validate=validate.Length(max=255))
    enabled = common.StrictBoolean()


class EndpointCreateSchema(Lenient):
    service_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    interface = fields.String(required=True, validate=validate.OneOf(INTERFACES))
    url = fields.String(required=True, validate=[validate.Length(min=1, max=2048),
                                                 validate.Regexp(r"^(https?://|\$\()", error="must be an http(s) URL")])
    region_id = fields.String(allow_none=True, validate=validate.Length(max=255))
    region = fields.String(allow_none=True, validate=validate.Length(max=255))
    enabled = common.StrictBoolean(load_default=True)


class EndpointUpdateSchema(Lenient):
    service_id = fields.String(validate=validate.Length(min=1, max=64))
    interface = fields.String(validate=validate.OneOf(INTERFACES))
    url = fields.String(validate=[validate.Length(min=1, max=2048),
                                  validate.Regexp(r"^(https?://|\$\()", error="must be an http(s) URL")])
    region_id = fields.String(allow_none=True, validate=validate.Length(max=255))
    region = fields.String(allow_none=True, validate=validate.Length(max=255))
    enabled = common.StrictBoolean()


def _wrapped(key: str, inner: type[Schema]) -> Schema:
    return Schema.from_dict({key: fields.Nested(inner, required=True)})()


def service_document(row: CatalogService, base: str) -> dict:
    return {"id": row.id, "type": row.type, "name": row.name, "description": row.description,
            "enabled": row.enabled, "links": {"self": f"{base}/v3/services/{row.id}"}}


def endpoint_document(row: CatalogEndpoint, base: str) -> dict:
    return {"id": row.id, "service_id": row.service_id, "interface": row.interface, "region_id": row.region_id,
            "region": row.region_id, "url": row.url, "enabled": row.enabled,
            "links": {"self": f"{base}/v3/endpoints/{row.id}"}}


def ensure_region(session, region_id: str | None) -> None:
    """An endpoint's region exists from the moment an endpoint names it, as Keystone makes
    it (a concurrent endpoint naming the same new region finds it made)."""
    if region_id is None or session.get(Region, region_id) is not None:
        return
    try:
        with session.begin_nested():
            session.add(Region(id=region_id, description=""))
    except sa.exc.IntegrityError as exc:
        if constraints.violation(exc) != constraints.UNIQUE:
            raise


def _endpoint_changes(session, data: dict) -> dict:
    """An endpoint update's changes: ``region`` (the older name) is ``region_id``; the
    service and the region must exist (the region is made if need be)."""
    region = data.pop("region", None)
    if region is not None and "region_id" not in data:
        data["region_id"] = region
    if "service_id" in data:
        common.get_or_404(session, CatalogService, data["service_id"], "Service")
    ensure_region(session, data.get("region_id"))
    return data


class Services:
    def on_get(self, req, resp):
        deps = common.deps(req)
        query = common.equal_filters(sa.select(CatalogService).order_by(CatalogService.type, CatalogService.id), req,
                                     {"name": CatalogService.name, "type": CatalogService.type})
        with deps.db.begin() as session:
            docs = [service_document(r, deps.base_url(req)) for r in session.scalars(query)]
        common.respond(resp, {"services": docs, "links": {"self": req.uri, "previous": None, "next": None}})

    def on_post(self, req, resp):
        deps = common.deps(req)
        data = common.body(req, _wrapped("service", ServiceCreateSchema))["service"]
        with deps.db.begin() as session:
            row = CatalogService(**data)
            session.add(row)
            session.flush()
            doc = service_document(row, deps.base_url(req))
        common.respond(resp, {"service": doc}, falcon.HTTP_201)


class CatalogItem:
    """One service or endpoint: show (anyone signed in), update and delete (admin; a service's
    endpoints go with it by cascade)."""

    def __init__(self, model, kind: str, update_schema, document, changes=None) -> None:
        self.model, self.kind, self.update_schema, self.document = model, kind, update_schema, document
        #: (session, loaded body) -> the attributes to set (checking what they refer to).
        self.changes = changes or (lambda session, data: data)

    def _row(self, session, params: dict):
        (ident,) = params.values()  # the route's one id: service_id or endpoint_id
        return common.get_or_404(session, self.model, ident, self.kind.capitalize())

    def on_get(self, req, resp, **params):
        deps = common.deps(req)
        with deps.db.begin() as session:
            doc = self.document(self._row(session, params), deps.base_url(req))
        common.respond(resp, {self.kind: doc})

    def on_patch(self, req, resp, **params):
        deps = common.deps(req)
        data = common.body(req, _wrapped(self.kind, self.update_schema))[self.kind]
        with deps.db.begin() as session:
            row = self._row(session, params)
            for key, value in self.changes(session, data).items():
                setattr(row, key, value)
            session.flush()
            doc = self.document(row, deps.base_url(req))
        common.respond(resp, {self.kind: doc})

    def on_delete(self, req, resp, **params):
        with common.deps(req).db.begin() as session:
            session.delete(self._row(session, params))
        resp.status = falcon.HTTP_204


class Endpoints:
    def on_get(self, req, resp):
        deps = common.deps(req)
        interface = req.get_param("interface")
        if interface and interface not in INTERFACES:
            raise exception.Invalid(reason=f"interface={interface!r} must be one of {', '.join(INTERFACES)}")
        query = common.equal_filters(sa.select(CatalogEndpoint).order_by(CatalogEndpoint.service_id,
                                                                         CatalogEndpoint.id), req,
                                     {"service_id": CatalogEndpoint.service_id, "interface": CatalogEndpoint.interface,
                                      "region_id": CatalogEndpoint.region_id})
        with deps.db.begin() as session:
            docs = [endpoint_document(r, deps.base_url(req)) for r in session.scalars(query)]
        common.respond(resp, {"endpoints": docs, "links": {"self": req.uri, "previous": None, "next": None}})

    def on_post(self, req, resp):
        deps = common.deps(req)
        data = common.body(req, _wrapped("endpoint", EndpointCreateSchema))["endpoint"]
        region = data.pop("region_id", None) or data.pop("region", None)
        data.pop("region", None)
        with deps.db.begin() as session:
            common.get_or_404(session, CatalogService, data["service_id"], "Service")
            ensure_region(session, region)
            row = CatalogEndpoint(region_id=region, **data)
            session.add(row)
            session.flush()
            doc = endpoint_document(row, deps.base_url(req))
        common.respond(resp, {"endpoint": doc}, falcon.HTTP_201)


class AuthCatalog:
    """GET /v3/auth/catalog: the catalog a scoped token carries (an unscoped one has none: 403)."""

    def on_get(self, req, resp):
        deps = common.deps(req)
        if req.context.token.scope is None:
            raise exception.Forbidden(reason="an unscoped token has no catalog: scope it to a project, a domain or "
                                             "the system")
        with deps.db.begin() as session:
            entries = catalog(session, deps.base_url(req), deps.settings.objectstore_url,
                              req.context.token.project_id)
        common.respond(resp, {"catalog": entries, "links": {"self": f"{deps.base_url(req)}/v3/auth/catalog"}})


def register(app: falcon.App) -> None:
    app.add_route("/v3/auth/catalog", AuthCatalog())
    app.add_route("/v3/services", Services())
    app.add_route("/v3/services/{service_id}",
                  CatalogItem(CatalogService, "service", ServiceUpdateSchema, service_document))
    app.add_route("/v3/endpoints", Endpoints())
    app.add_route("/v3/endpoints/{endpoint_id}",
                  CatalogItem(CatalogEndpoint, "endpoint", EndpointUpdateSchema, endpoint_document, _endpoint_changes))


OPENAPI_OPERATIONS: list = [
    ("get", "/v3/services", "List catalog services (?name, ?type)", None, 200),
    ("post", "/v3/services", "Create a catalog service (admin)", _wrapped("service", ServiceCreateSchema), 201),
    ("get", "/v3/services/{service_id}", "Show a catalog service", None, 200),
    ("patch", "/v3/services/{service_id}", "Update a catalog service (admin)",
     _wrapped("service", ServiceUpdateSchema), 200),
    ("delete", "/v3/services/{service_id}", "Delete a catalog service and its endpoints (admin)", None, 204),
    ("get", "/v3/endpoints", "List endpoints (?service_id, ?interface, ?region_id)", None, 200),
    ("post", "/v3/endpoints", "Create an endpoint (admin)", _wrapped("endpoint", EndpointCreateSchema), 201),
    ("get", "/v3/endpoints/{endpoint_id}", "Show an endpoint", None, 200),
    ("patch", "/v3/endpoints/{endpoint_id}", "Update an endpoint (admin)", _wrapped("endpoint", EndpointUpdateSchema),
     200),
    ("delete", "/v3/endpoints/{endpoint_id}", "Delete an endpoint (admin)", None, 204),
    ("get", "/v3/auth/catalog", "The catalog of the caller's scoped token", None, 200),
]
