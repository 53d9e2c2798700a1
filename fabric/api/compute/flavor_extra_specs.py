"""A flavor's extra specs: ``/flavors/{id}/os-extra_specs[/{key}]`` (``flavor create
--property``, ``flavor set --property``, ``flavor unset --property``).

Extra specs are a map of strings kept on the flavor row, limited as Nova limits them (keys of
1 to 255 letters, digits and ``-_:.`` or spaces; values of at most 255 characters, given as a
string, number or boolean and kept as a string). Everyone who may see the flavor reads them;
only admins change them (fabric.api.policy). Each change reads the row for update, so two
changes at once both land. The scheduler reads them from the database for each decision
(``aggregate_instance_extra_specs:KEY`` and the other requirements it matches), so a change
counts for the next server created.
"""

from __future__ import annotations

import falcon
from marshmallow import Schema, ValidationError, fields, validate

from fabric import exception
from fabric.api import common
from fabric.api.compute.flavors import find_flavor, known_flavors
from fabric.db.models import Flavor

#: Items a flavor's extra specs may hold (more than any flavor Nova's docs show uses).
MAX_ITEMS = 128

_KEY = fields.String(validate=validate.Regexp(r"^[a-zA-Z0-9\-_:. ]{1,255}\Z",
                                              error="extra spec keys are 1-255 letters, digits, spaces or -_:."))


class SpecValue(fields.Field):
    """A string, number or boolean (Nova's schema accepts each), kept as the string of it."""

    def _deserialize(self, value, attr, data, **kwargs) -> str:
        if isinstance(value, (bool, int, float)):
            value = str(value)
        if not isinstance(value, str):
            raise ValidationError("an extra spec value is a string, number or boolean")
        if len(value) > 255:
            raise ValidationError(f"an extra spec value is at most 255 characters, got {len(value)}")
        return value


EXTRA_SPECS = Schema.from_dict({"extra_specs": fields.Dict(keys=_KEY, values=SpecValue(), required=True)})()


def _item(req, key: str) -> dict[str, str]:
    """The body of a PUT on one key: exactly ``{key: value}``, the key the URL names, checked
    as one item of :data:`EXTRA_SPECS`."""
    raw = common.read_json(req)
    if not isinstance(raw, dict) or list(raw) != [key]:
        got = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise exception.Invalid(reason=f"the body must hold exactly the extra spec {key!r} the URL names, got {got}")
    return common.load(EXTRA_SPECS, {"extra_specs": raw})["extra_specs"]


def _for_change(session, flavor_id: str) -> Flavor:
    """The flavor, locked for update (its changers are admins, who see every flavor)."""
    flavor = session.get(Flavor, flavor_id, with_for_update=True)
    if flavor is None:
        raise exception.NotFound(kind="Flavor", ident=flavor_id)
    return flavor


def _store(flavor: Flavor, items: dict[str, str]) -> None:
    if len(items) > MAX_ITEMS:
        raise exception.Invalid(reason=f"extra specs of {len(items)} items: at most {MAX_ITEMS} are accepted")
    flavor.extra_specs = dict(items)  # a new dict: the JSON column sees the change


class ExtraSpecs:
    def on_get(self, req, resp, flavor_id):
        with common.deps(req).db.begin() as session:
            flavor = find_flavor(session, common.ctx(req), flavor_id)
            common.respond(resp, {"extra_specs": dict(flavor.extra_specs or {})})

    def on_post(self, req, resp, flavor_id):
        """Merge the given items into the extra specs; the given items are answered, as in Nova."""
        deps = common.deps(req)
        items = common.body(req, EXTRA_SPECS)["extra_specs"]
        with deps.db.begin() as session:
            flavor = _for_change(session, flavor_id)
            _store(flavor, {**(flavor.extra_specs or {}), **items})
        known_flavors(deps.db).forget(flavor_id)
        common.respond(resp, {"extra_specs": items})


class ExtraSpecItem:
    def on_get(self, req, resp, flavor_id, key):
        with common.deps(req).db.begin() as session:
            specs = find_flavor(session, common.ctx(req), flavor_id).extra_specs or {}
        if key not in specs:
            raise exception.NotFound(kind="Flavor extra spec", ident=key)
        common.respond(resp, {key: specs[key]})

    def on_put(self, req, resp, flavor_id, key):
        deps = common.deps(req)
        item = _item(req, key)
        with deps.db.begin() as session:
            flavor = _for_change(session, flavor_id)
            _store(flavor, {**(flavor.extra_specs or {}), **item})
        known_flavors(deps.db).forget(flavor_id)
        common.respond(resp, item)

    def on_delete(self, req, resp, flavor_id, key):
        deps = common.deps(req)
        with deps.db.begin() as session:
            flavor = _for_change(session, flavor_id)
            specs = dict(flavor.extra_specs or {})
            if key not in specs:
                raise exception.NotFound(kind="Flavor extra spec", ident=key)
            del specs[key]
            _store(flavor, specs)
        known_flavors(deps.db).forget(flavor_id)
        resp.status = falcon.HTTP_202


def register(app: falcon.App, prefix: str) -> None:
    app.add_route(f"{prefix}/flavors/{{flavor_id}}/os-extra_specs", ExtraSpecs())
    app.add_route(f"{prefix}/flavors/{{flavor_id}}/os-extra_specs/{{key}}", ExtraSpecItem())
