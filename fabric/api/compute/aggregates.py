"""os-aggregates (admin, as Nova's default policy): ``openstack aggregate create [--zone] /
list / show / set --property / add host / remove host / delete``.

An aggregate's availability zone is its ``availability_zone`` metadata item (create's and
update's ``availability_zone`` write it); what that means for placement lives in
fabric.scheduler.aggregates. Hosts are compute hosts (a compute node or a registered
compute service); a change that would put a host into two zones is refused (409 naming
both). That check runs under the changed aggregate's row lock only: two admins changing two
different aggregates at the same instant could still both pass it, as in Nova.
"""

from __future__ import annotations

import falcon
import sqlalchemy as sa
from marshmallow import Schema, fields, validate

from fabric import exception
from fabric.api import common
from fabric.api.compute import microversion
from fabric.api.compute.hosts import INTERNAL_ZONE
from fabric.db.models import Aggregate, AggregateHost, ComputeNode, Service
from fabric.scheduler.aggregates import ZONE_KEY, zone_conflicts

_NAME = validate.Length(min=1, max=255)


class AggregateCreateSchema(Schema):
    name = fields.String(required=True, validate=_NAME)
    availability_zone = fields.String(allow_none=True, load_default=None, validate=_NAME)


class AggregateUpdateSchema(Schema):
    name = fields.String(validate=_NAME)
    availability_zone = fields.String(allow_none=True, validate=_NAME)


class HostSchema(Schema):
    host = fields.String(required=True, validate=_NAME)


class MetadataSchema(Schema):
    # Nova's limits: keys 1-255, values up to 255 characters, null deletes the key.
    metadata = fields.Dict(keys=fields.String(validate=_NAME),
                           values=fields.String(allow_none=True, validate=validate.Length(max=255)), required=True)


AGGREGATE_CREATE = Schema.from_dict({"aggregate": fields.Nested(AggregateCreateSchema, required=True)})()
AGGREGATE_UPDATE = Schema.from_dict({"aggregate": fields.Nested(AggregateUpdateSchema, required=True)})()
#: POST /os-aggregates/{id}/action: exactly one of these keys.
_ACTIONS = {"add_host": HostSchema(), "remove_host": HostSchema(), "set_metadata": MetadataSchema()}


def aggregate_document(aggregate: Aggregate, hosts: list[str], version: tuple[int, int] = (2, 1)) -> dict:
    """An aggregate as Compute shows it at ``version`` (its "uuid" from 2.41)."""
    metadata = dict(aggregate.metadata_items or {})
    doc = {"uuid": aggregate.uuid} if version >= microversion.AGGREGATE_UUID else {}
    return doc | {"id": aggregate.id, "name": aggregate.name, "availability_zone": metadata.get(ZONE_KEY),
            "hosts": hosts, "metadata": metadata, "created_at": common.isotime(aggregate.created_at, micro=True),
            "updated_at": common.isotime(aggregate.updated_at, micro=True), "deleted_at": None, "deleted": False}


def _hosts(session, aggregate_ids: list[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {i: [] for i in aggregate_ids}
    for aggregate_id, host in session.execute(sa.select(AggregateHost.aggregate_id, AggregateHost.host)
                                              .where(AggregateHost.aggregate_id.in_(aggregate_ids))
                                              .order_by(AggregateHost.id)):
        out[aggregate_id].append(host)
    return out


def _document(session, aggregate: Aggregate, version: tuple[int, int]) -> dict:
    return aggregate_document(aggregate, _hosts(session, [aggregate.id])[aggregate.id], version)


def _find(session, aggregate_id: str) -> Aggregate:
    aggregate = session.get(Aggregate, int(aggregate_id)) if aggregate_id.isdigit() and len(aggregate_id) < 10 else None
    if aggregate is None:
        raise exception.NotFound(kind="Aggregate", ident=aggregate_id)
    return aggregate


def _check_zone(zone: str | None) -> None:
    if zone == INTERNAL_ZONE:
        raise exception.Invalid(reason=f"availability zone {zone!r} is where fabric lists its control services; "
                                       f"choose another name")


def _check_name_free(session, name: str, aggregate_id: int | None = None) -> None:
    other = session.scalar(sa.select(Aggregate.id).where(Aggregate.name == name))
    if other is not None and other != aggregate_id:
        raise exception.Conflict(reason=f"an aggregate named {name!r} already exists (id {other})")


def _set_zone(session, aggregate: Aggregate, zone: str | None) -> None:
    """Give ``aggregate`` availability zone ``zone`` (None: none); Conflict naming the hosts it
    would put into two zones."""
    _check_zone(zone)
    conflicts = zone_conflicts(session, _hosts(session, [aggregate.id])[aggregate.id], zone, aggregate.id)
    if conflicts:
        raise exception.Conflict(reason=f"availability zone {zone!r} would put hosts into two zones: " + ", ".join(
            f"{host} is in {other!r}" for host, other in sorted(conflicts.items())))
    metadata = dict(aggregate.metadata_items or {})
    if zone:
        metadata[ZONE_KEY] = zone
    else:
        metadata.pop(ZONE_KEY, None)
    aggregate.metadata_items = metadata


class Aggregates:
    def on_get(self, req, resp):
        with common.deps(req).db.begin() as session:
            aggregates = list(session.scalars(sa.select(Aggregate).order_by(Aggregate.id)))
            hosts = _hosts(session, [a.id for a in aggregates])
            docs = [aggregate_document(a, hosts[a.id], microversion.of(req)) for a in aggregates]
        common.respond(resp, {"aggregates": docs})

    def on_post(self, req, resp):
        data = common.body(req, AGGREGATE_CREATE)["aggregate"]
        _check_zone(data["availability_zone"])
        with common.deps(req).db.begin() as session:
            _check_name_free(session, data["name"])
            metadata = {ZONE_KEY: data["availability_zone"]} if data["availability_zone"] else {}
            aggregate = Aggregate(name=data["name"], metadata_items=metadata)
            session.add(aggregate)
            session.flush()
            doc = _document(session, aggregate, microversion.of(req))
        common.respond(resp, {"aggregate": doc})


class AggregateItem:
    def on_get(self, req, resp, aggregate_id):
        with common.deps(req).db.begin() as session:
            doc = _document(session, _find(session, aggregate_id), microversion.of(req))
        common.respond(resp, {"aggregate": doc})

    def on_put(self, req, resp, aggregate_id):
        data = common.body(req, AGGREGATE_UPDATE)["aggregate"]
        if not data:
            raise exception.Invalid(reason="aggregate update needs a 'name' or an 'availability_zone'")
        with common.deps(req).db.begin() as session:
            aggregate = _find(session, aggregate_id)
            if "name" in data:
                _check_name_free(session, data["name"], aggregate.id)
                aggregate.name = data["name"]
            if "availability_zone" in data:
                _set_zone(session, aggregate, data["availability_zone"])
            session.flush()
            doc = _document(session, aggregate, microversion.of(req))
        common.respond(resp, {"aggregate": doc})

    def on_delete(self, req, resp, aggregate_id):
        """Delete an aggregate that has no hosts (Nova refuses one that has)."""
        with common.deps(req).db.begin() as session:
            aggregate = _find(session, aggregate_id)
            hosts = _hosts(session, [aggregate.id])[aggregate.id]
            if hosts:
                raise exception.Invalid(reason=f"aggregate {aggregate_id} still has hosts {', '.join(hosts)}; "
                                               f"remove them first")
            session.delete(aggregate)
        resp.status = falcon.HTTP_200


def _is_compute_host(session, host: str) -> bool:
    return session.scalar(sa.select(ComputeNode.id).where(ComputeNode.host == host)) is not None or \
        session.scalar(sa.select(Service.id).where(Service.host == host, Service.topic == "compute")) is not None


def _add_host(session, aggregate: Aggregate, host: str) -> None:
    if not _is_compute_host(session, host):
        raise exception.NotFound(kind="Compute host", ident=host)
    if host in _hosts(session, [aggregate.id])[aggregate.id]:
        raise exception.Conflict(reason=f"host {host} is already in aggregate {aggregate.id}")
    zone = (aggregate.metadata_items or {}).get(ZONE_KEY)
    other = zone_conflicts(session, [host], zone, aggregate.id).get(host)
    if other:
        raise exception.Conflict(reason=f"host {host} is in availability zone {other!r}; aggregate "
                                        f"{aggregate.id} would put it into {zone!r} too")
    session.add(AggregateHost(aggregate_id=aggregate.id, host=host))


def _remove_host(session, aggregate: Aggregate, host: str) -> None:
    removed = session.execute(sa.delete(AggregateHost).where(AggregateHost.aggregate_id == aggregate.id,
                                                             AggregateHost.host == host)).rowcount
    if not removed:
        raise exception.NotFound(kind="Host", ident=f"{host} in aggregate {aggregate.id}")


def _set_metadata(session, aggregate: Aggregate, items: dict) -> None:
    """Merge ``items`` into the metadata (a null value removes its key)."""
    if ZONE_KEY in items:
        _set_zone(session, aggregate, items[ZONE_KEY])
    metadata = dict(aggregate.metadata_items or {})
    for key, value in items.items():
        if key == ZONE_KEY:
            continue
        if value is None:
            metadata.pop(key, None)
        else:
            metadata[key] = value
    aggregate.metadata_items = metadata


class AggregateAction:
    def on_post(self, req, resp, aggregate_id):
        """``add_host``, ``remove_host`` or ``set_metadata``; answers the aggregate."""
        data = common.read_json(req)
        if not isinstance(data, dict) or len(data) != 1 or next(iter(data)) not in _ACTIONS:
            named = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise exception.Invalid(reason=f"aggregate action {named} is not one of {', '.join(sorted(_ACTIONS))} "
                                           f"(give exactly one)")
        [(action, args)] = data.items()
        args = common.load(_ACTIONS[action], args)
        with common.deps(req).db.begin() as session:
            aggregate = session.scalars(sa.select(Aggregate).where(Aggregate.id == _find(session, aggregate_id).id)
                                        .with_for_update().execution_options(populate_existing=True)).one()
            if action == "add_host":
                _add_host(session, aggregate, args["host"])
            elif action == "remove_host":
                _remove_host(session, aggregate, args["host"])
            else:
                _set_metadata(session, aggregate, args["metadata"])
            session.flush()
            doc = _document(session, aggregate, microversion.of(req))
        common.respond(resp, {"aggregate": doc})


def register(app: falcon.App, prefix: str) -> None:
    app.add_route(f"{prefix}/os-aggregates", Aggregates())
    app.add_route(f"{prefix}/os-aggregates/{{aggregate_id}}", AggregateItem())
    app.add_route(f"{prefix}/os-aggregates/{{aggregate_id}}/action", AggregateAction())
