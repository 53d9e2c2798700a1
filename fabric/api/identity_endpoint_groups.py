"""Endpoint groups (Keystone's OS-EP-FILTER): a group names endpoints by filters
(``service_id``, ``interface``, ``region_id``); a project associated with groups gets only
their endpoints in its tokens' catalog (:func:`fabric.api.identity_catalog.catalog`).

``/v3/OS-EP-FILTER/endpoint_groups[/{id}]`` (create, list, show, check, update, delete),
``.../{id}/endpoints`` (what the group names now), ``.../{id}/projects[/{project_id}]``
(associate, check, list, dissociate) and ``/v3/OS-EP-FILTER/projects/{id}/endpoint_groups``.
A filter naming anything else, or a value that is not a string, is a 400 naming it.
"""

from __future__ import annotations

import falcon
import sqlalchemy as sa
from marshmallow import ValidationError, fields, validate

from fabric import exception
from fabric.api import common
from fabric.api.identity import wrapped
from fabric.api.identity_admin import project_documents
from fabric.api.identity_catalog import GROUP_FILTERS, Lenient, endpoint_document, in_group
from fabric.db.models import CatalogEndpoint, EndpointGroup, Project, ProjectEndpointGroup

_PREFIX = "/v3/OS-EP-FILTER"


def _filters(value: object) -> None:
    if not isinstance(value, dict):
        raise ValidationError("must be an object of service_id, interface and region_id")
    for key, wanted in value.items():
        if key not in GROUP_FILTERS:
            raise ValidationError(f"{key!r} is not a filter; use {', '.join(GROUP_FILTERS)}")
        if not isinstance(wanted, str) or not 0 < len(wanted) <= 255:
            raise ValidationError(f"{key}={wanted!r} must be a string of 1 to 255 characters")


class GroupCreateSchema(Lenient):
    name = fields.String(required=True, validate=validate.Length(min=1, max=255))
    description = fields.String(load_default="", allow_none=True, validate=validate.Length(max=255))
    filters = fields.Raw(required=True, validate=_filters)


class GroupUpdateSchema(Lenient):
    name = fields.String(validate=validate.Length(min=1, max=255))
    description = fields.String(allow_none=True, validate=validate.Length(max=255))
    filters = fields.Raw(validate=_filters)


def group_document(row: EndpointGroup, base: str) -> dict:
    return {"id": row.id, "name": row.name, "description": row.description, "filters": row.filters,
            "links": {"self": f"{base}{_PREFIX}/endpoint_groups/{row.id}"}}


def _group(session, group_id: str) -> EndpointGroup:
    row = session.get(EndpointGroup, group_id)
    if row is None:
        raise exception.NotFound(kind="Endpoint group", ident=group_id)
    return row


def _listing(key: str, docs: list, req) -> dict:
    return {key: docs, "links": {"self": req.uri, "previous": None, "next": None}}


class Groups:
    def on_get(self, req, resp):
        deps = common.deps(req)
        query = common.equal_filters(sa.select(EndpointGroup).order_by(EndpointGroup.name, EndpointGroup.id), req,
                                     {"name": EndpointGroup.name})
        with deps.db.begin() as session:
            docs = [group_document(r, deps.base_url(req)) for r in session.scalars(query)]
        common.respond(resp, _listing("endpoint_groups", docs, req))

    def on_post(self, req, resp):
        deps = common.deps(req)
        data = common.body(req, wrapped("endpoint_group", GroupCreateSchema))["endpoint_group"]
        with deps.db.begin() as session:
            row = EndpointGroup(name=data["name"], description=data["description"] or "", filters=data["filters"])
            session.add(row)
            session.flush()
            doc = group_document(row, deps.base_url(req))
        common.respond(resp, {"endpoint_group": doc}, falcon.HTTP_201)


class GroupItem:
    def on_get(self, req, resp, endpoint_group_id):
        deps = common.deps(req)
        with deps.db.begin() as session:
            doc = group_document(_group(session, endpoint_group_id), deps.base_url(req))
        common.respond(resp, {"endpoint_group": doc})

    def on_head(self, req, resp, endpoint_group_id):
        with common.deps(req).db.begin() as session:
            _group(session, endpoint_group_id)
        resp.status = falcon.HTTP_200

    def on_patch(self, req, resp, endpoint_group_id):
        deps = common.deps(req)
        data = common.body(req, wrapped("endpoint_group", GroupUpdateSchema))["endpoint_group"]
        with deps.db.begin() as session:
            row = _group(session, endpoint_group_id)
            for key in ("name", "filters"):
                if key in data:
                    setattr(row, key, data[key])
            if "description" in data:
                row.description = data["description"] or ""
            session.flush()
            doc = group_document(row, deps.base_url(req))
        common.respond(resp, {"endpoint_group": doc})

    def on_delete(self, req, resp, endpoint_group_id):
        with common.deps(req).db.begin() as session:
            session.delete(_group(session, endpoint_group_id))  # its associations by cascade
        resp.status = falcon.HTTP_204


class GroupEndpoints:
    def on_get(self, req, resp, endpoint_group_id):
        deps = common.deps(req)
        with deps.db.begin() as session:
            group = _group(session, endpoint_group_id)
            rows = session.scalars(sa.select(CatalogEndpoint).where(in_group(group.filters))
                                   .order_by(CatalogEndpoint.service_id, CatalogEndpoint.id))
            docs = [endpoint_document(r, deps.base_url(req)) for r in rows]
        common.respond(resp, _listing("endpoints", docs, req))


class GroupProjects:
    def on_get(self, req, resp, endpoint_group_id):
        deps = common.deps(req)
        with deps.db.begin() as session:
            _group(session, endpoint_group_id)
            rows = session.scalars(sa.select(Project).join(
                ProjectEndpointGroup, ProjectEndpointGroup.project_id == Project.id)
                .where(ProjectEndpointGroup.endpoint_group_id == endpoint_group_id).order_by(Project.name)).all()
            docs = project_documents(session, rows, deps.base_url(req))
        common.respond(resp, _listing("projects", docs, req))


class GroupProject:
    """Associate (PUT, idempotent), check (GET/HEAD: 200 or 404), dissociate (DELETE)."""

    @staticmethod
    def _parties(session, endpoint_group_id: str, project_id: str) -> None:
        _group(session, endpoint_group_id)
        if session.get(Project, project_id) is None:
            raise exception.NotFound(kind="Project", ident=project_id)

    def on_put(self, req, resp, endpoint_group_id, project_id):
        try:
            with common.deps(req).db.begin() as session:
                self._parties(session, endpoint_group_id, project_id)
                if session.get(ProjectEndpointGroup, (endpoint_group_id, project_id)) is None:
                    session.add(ProjectEndpointGroup(endpoint_group_id=endpoint_group_id, project_id=project_id))
        except sa.exc.IntegrityError:
            # Made at the same moment by another request (the association is there), or one of
            # the two deleted meanwhile: tell which.
            with common.deps(req).db.begin() as session:
                self._parties(session, endpoint_group_id, project_id)
        resp.status = falcon.HTTP_204

    def on_get(self, req, resp, endpoint_group_id, project_id):
        with common.deps(req).db.begin() as session:
            self._parties(session, endpoint_group_id, project_id)
            if session.get(ProjectEndpointGroup, (endpoint_group_id, project_id)) is None:
                raise exception.NotFound(kind="Endpoint group association",
                                         ident=f"{endpoint_group_id} with project {project_id}")
        resp.status = falcon.HTTP_200

    on_head = on_get

    def on_delete(self, req, resp, endpoint_group_id, project_id):
        with common.deps(req).db.begin() as session:
            row = session.get(ProjectEndpointGroup, (endpoint_group_id, project_id))
            if row is None:
                raise exception.NotFound(kind="Endpoint group association",
                                         ident=f"{endpoint_group_id} with project {project_id}")
            session.delete(row)
        resp.status = falcon.HTTP_204


class ProjectGroups:
    def on_get(self, req, resp, project_id):
        deps = common.deps(req)
        with deps.db.begin() as session:
            if session.get(Project, project_id) is None:
                raise exception.NotFound(kind="Project", ident=project_id)
            rows = session.scalars(sa.select(EndpointGroup).join(
                ProjectEndpointGroup, ProjectEndpointGroup.endpoint_group_id == EndpointGroup.id)
                .where(ProjectEndpointGroup.project_id == project_id).order_by(EndpointGroup.name))
            docs = [group_document(r, deps.base_url(req)) for r in rows]
        common.respond(resp, _listing("endpoint_groups", docs, req))


def register(app: falcon.App) -> None:
    app.add_route(f"{_PREFIX}/endpoint_groups", Groups())
    app.add_route(f"{_PREFIX}/endpoint_groups/{{endpoint_group_id}}", GroupItem())
    app.add_route(f"{_PREFIX}/endpoint_groups/{{endpoint_group_id}}/endpoints", GroupEndpoints())
    app.add_route(f"{_PREFIX}/endpoint_groups/{{endpoint_group_id}}/projects", GroupProjects())
    app.add_route(f"{_PREFIX}/endpoint_groups/{{endpoint_group_id}}/projects/{{project_id}}", GroupProject())
    app.add_route(f"{_PREFIX}/projects/{{project_id}}/endpoint_groups", ProjectGroups())


_G = f"{_PREFIX}/endpoint_groups"
OPENAPI_OPERATIONS: list = [
    ("get", _G, "List endpoint groups (?name; admin)", None, 200),
    ("post", _G, "Create an endpoint group (admin)", wrapped("endpoint_group", GroupCreateSchema), 201),
    ("get", f"{_G}/{{endpoint_group_id}}", "Show an endpoint group (admin)", None, 200),
    ("head", f"{_G}/{{endpoint_group_id}}", "Check an endpoint group (admin)", None, 200),
    ("patch", f"{_G}/{{endpoint_group_id}}", "Update an endpoint group (admin)",
     wrapped("endpoint_group", GroupUpdateSchema), 200),
    ("delete", f"{_G}/{{endpoint_group_id}}", "Delete an endpoint group (admin)", None, 204),
    ("get", f"{_G}/{{endpoint_group_id}}/endpoints", "List the endpoints a group names (admin)", None, 200),
    ("get", f"{_G}/{{endpoint_group_id}}/projects", "List the projects of a group (admin)", None, 200),
    ("put", f"{_G}/{{endpoint_group_id}}/projects/{{project_id}}", "Associate a project (admin)", None, 204),
    ("get", f"{_G}/{{endpoint_group_id}}/projects/{{project_id}}", "Check an association (admin)", None, 200),
    ("head", f"{_G}/{{endpoint_group_id}}/projects/{{project_id}}", "Check an association (admin)", None, 200),
    ("delete", f"{_G}/{{endpoint_group_id}}/projects/{{project_id}}", "Dissociate a project (admin)", None, 204),
    ("get", f"{_PREFIX}/projects/{{project_id}}/endpoint_groups", "List a project's endpoint groups (admin)", None,
     200),
]
