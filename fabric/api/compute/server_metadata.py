"""A server's metadata: ``/servers/{id}/metadata[/{key}]`` (``server set --property``,
``server unset --property``).

Metadata is a map of strings kept on the instance row, limited as Nova limits it (keys and
values of 1 to 255 characters, :data:`MAX_ITEMS` items). Each change reads the row for
update, so two changes at once both land (on SQLite the writers take turns anyway). A
locked server's metadata is changed only by an admin. Neither touches the guest: the
metadata service serves the new values from then on.
"""

from __future__ import annotations

import falcon
from marshmallow import Schema, fields, validate

from fabric import exception
from fabric.api import common
from fabric.api.compute.lookup import get_instance, get_instance_for_update
from fabric.compute.api import refuse_if_locked
from fabric.db.models import Instance

#: Items a server's metadata may hold (Nova's default metadata_items quota).
MAX_ITEMS = 128

_KEY = fields.String(validate=validate.Length(min=1, max=255))
_VALUE = fields.String(validate=validate.Length(max=255))


METADATA = Schema.from_dict({"metadata": fields.Dict(keys=_KEY, values=_VALUE, required=True)})()
META = Schema.from_dict({"meta": fields.Dict(keys=_KEY, values=_VALUE, required=True)})()


def _store(instance: Instance, items: dict[str, str]) -> dict[str, str]:
    if len(items) > MAX_ITEMS:
        raise exception.Invalid(reason=f"metadata of {len(items)} items: at most {MAX_ITEMS} are accepted")
    instance.metadata_items = dict(items)
    return instance.metadata_items


class Metadata:
    def on_get(self, req, resp, server_id):
        deps, context = common.deps(req), common.ctx(req)
        with deps.db.begin() as session:
            common.respond(resp, {"metadata": dict(get_instance(session, context, server_id).metadata_items or {})})

    def on_post(self, req, resp, server_id):
        """Merge the given items into the metadata; all of it is answered."""
        self._change(req, resp, server_id, replace=False)

    def on_put(self, req, resp, server_id):
        """Replace the metadata with the given items."""
        self._change(req, resp, server_id, replace=True)

    @staticmethod
    def _change(req, resp, server_id: str, replace: bool) -> None:
        deps, context = common.deps(req), common.ctx(req)
        items = common.body(req, METADATA)["metadata"]
        with deps.db.begin() as session:
            instance = _for_change(session, context, server_id)
            merged = items if replace else {**(instance.metadata_items or {}), **items}
            common.respond(resp, {"metadata": _store(instance, merged)})


def _for_change(session, context, server_id: str):
    """The instance, locked for update; NotFound unless the caller may see it, InstanceLocked
    if it is locked and the caller is not an admin (as Nova)."""
    instance = get_instance_for_update(session, context, server_id)
    refuse_if_locked(context, instance)
    return instance


class MetadataItem:
    def on_get(self, req, resp, server_id, key):
        deps, context = common.deps(req), common.ctx(req)
        with deps.db.begin() as session:
            items = get_instance(session, context, server_id).metadata_items or {}
        if key not in items:
            raise exception.NotFound(kind="Metadata item", ident=key)
        common.respond(resp, {"meta": {key: items[key]}})

    def on_put(self, req, resp, server_id, key):
        deps, context = common.deps(req), common.ctx(req)
        item = common.body(req, META)["meta"]
        if list(item) != [key]:
            raise exception.Invalid(reason=f"meta must hold exactly the item {key!r} the URL names, got {sorted(item)}")
        with deps.db.begin() as session:
            instance = _for_change(session, context, server_id)
            _store(instance, {**(instance.metadata_items or {}), **item})
        common.respond(resp, {"meta": item})

    def on_delete(self, req, resp, server_id, key):
        deps, context = common.deps(req), common.ctx(req)
        with deps.db.begin() as session:
            instance = _for_change(session, context, server_id)
            items = dict(instance.metadata_items or {})
            if key not in items:
                raise exception.NotFound(kind="Metadata item", ident=key)
            del items[key]
            _store(instance, items)
        resp.status = falcon.HTTP_204


def register(app: falcon.App, prefix: str) -> None:
    app.add_route(f"{prefix}/servers/{{server_id}}/metadata", Metadata())
    app.add_route(f"{prefix}/servers/{{server_id}}/metadata/{{key}}", MetadataItem())
