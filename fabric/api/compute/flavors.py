"""Compute flavors: list, detail, show; admin create, update (the description, 2.55) and delete."""

from __future__ import annotations

import dataclasses
import time
import weakref

import falcon
import sqlalchemy as sa
from marshmallow import Schema, fields, validate
from sqlalchemy import exc as sa_exc

from fabric import exception
from fabric.api import common, in_doubt
from fabric.api.compute import microversion
from fabric.db import Database
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
    description = fields.String(allow_none=True, validate=validate.Length(max=65535))  # 2.55


FLAVOR_CREATE = Schema.from_dict({"flavor": fields.Nested(FlavorCreateSchema, required=True)})()


def links(base: str, kind: str, ident: str) -> list[dict]:
    return [{"rel": "self", "href": f"{base}/compute/v2.1/{kind}/{ident}"},
            {"rel": "bookmark", "href": f"{base}/compute/{kind}/{ident}"}]


def flavor_document(flavor: Flavor, base: str, detail: bool = True, version: tuple[int, int] = (2, 1)) -> dict:
    """A flavor as Nova shows it at ``version`` (its "description" from 2.55)."""
    doc = {"id": flavor.id, "name": flavor.name, "links": links(base, "flavors", flavor.id)}
    if version >= microversion.FLAVOR_DESCRIPTION:
        doc["description"] = flavor.description
    if detail:
        doc.update({"ram": flavor.memory_mb, "vcpus": flavor.vcpus, "disk": flavor.disk_gb, "swap": "",
                    "rxtx_factor": 1.0, "OS-FLV-EXT-DATA:ephemeral": 0, "OS-FLV-DISABLED:disabled": False,
                    "os-flavor-access:is_public": flavor.is_public})
    return doc


def flavor_ident(flavor_ref: str) -> str:
    """The flavor id a reference names (an id, or a URL ending in one)."""
    return str(flavor_ref).rstrip("/").rsplit("/", 1)[-1]


def _visible(flavor, context, ident: str):
    if flavor is None or not (flavor.is_public or context.is_admin):
        raise exception.NotFound(kind="Flavor", ident=ident)
    return flavor


def find_flavor(session, context, flavor_ref: str) -> Flavor:
    """The flavor ``flavor_ref`` (an id or a URL ending in one) visible to the caller; NotFound otherwise."""
    ident = flavor_ident(flavor_ref)
    return _visible(session.get(Flavor, ident), context, ident)


#: How long an API process trusts a flavor it read for a server create before reading it
#: again. A flavor deleted meanwhile is noticed at once all the same (the server row's
#: foreign key refuses it, and the create runs again with everything read afresh), and a
#: change made through this process forgets it at once: only a change of its extra specs
#: (or a flavor deleted and created again under the same id) through another API process is
#: seen late, by at most this long.
KNOWN_FLAVOR_SECONDS = 10.0


@dataclasses.dataclass(frozen=True)
class FlavorFacts:
    """What a server create takes from a flavor."""

    id: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    is_public: bool
    extra_specs: dict


class KnownFlavors:
    """The flavors one API process read for server creates lately (see KNOWN_FLAVOR_SECONDS),
    so that a create of a flavor read within that time reads it no more."""

    def __init__(self, seconds: float = KNOWN_FLAVOR_SECONDS, clock=time.monotonic, max_entries: int = 1000) -> None:
        self.seconds = seconds
        self.clock = clock
        self.max_entries = max_entries
        #: flavor id -> (clock time until which it is trusted, its facts)
        self._entries: dict[str, tuple[float, FlavorFacts]] = {}

    def find(self, session, context, flavor_ref: str) -> FlavorFacts:
        """:func:`find_flavor`'s answer (its facts), read in ``session`` unless known."""
        ident = flavor_ident(flavor_ref)
        now = self.clock()
        kept = self._entries.get(ident)
        if kept is not None and now < kept[0]:
            return _visible(kept[1], context, ident)
        row = session.get(Flavor, ident)
        if row is None:
            self._entries.pop(ident, None)
            raise exception.NotFound(kind="Flavor", ident=ident)
        facts = FlavorFacts(id=row.id, vcpus=row.vcpus, memory_mb=row.memory_mb, disk_gb=row.disk_gb,
                            is_public=row.is_public, extra_specs=dict(row.extra_specs or {}))
        if len(self._entries) >= self.max_entries:
            self._entries = {}
        self._entries[ident] = (now + self.seconds, facts)
        return _visible(facts, context, ident)

    def forget(self, flavor_id: str) -> None:
        """Read ``flavor_id`` afresh next time (it changed, or a create found it gone)."""
        self._entries.pop(flavor_id, None)


_KNOWN: weakref.WeakKeyDictionary[Database, KnownFlavors] = weakref.WeakKeyDictionary()


def known_flavors(db: Database) -> KnownFlavors:
    """This process's :class:`KnownFlavors` of ``db``."""
    known = _KNOWN.get(db)
    if known is None:
        known = _KNOWN[db] = KnownFlavors()
    return known


def _check_description(req, data: dict) -> None:
    """Raise Invalid for a flavor description below 2.55 (Nova's schema has none)."""
    if "description" in data:
        microversion.require(req, microversion.FLAVOR_DESCRIPTION, "flavor.description")


#: A flavor update (2.55): its description alone, as in Nova; null clears it.
FLAVOR_UPDATE = Schema.from_dict({"flavor": fields.Nested(Schema.from_dict({
    "description": fields.String(required=True, allow_none=True, validate=validate.Length(max=65535))}),
    required=True)})()


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
            docs = [flavor_document(f, deps.base_url(req), detail, microversion.of(req)) for f in session.scalars(query)]
        common.respond(resp, {"flavors": docs})

    def on_get(self, req, resp):
        self._list(req, resp, detail=False)

    def on_get_detail(self, req, resp):
        self._list(req, resp, detail=True)

    def on_post(self, req, resp):
        deps = common.deps(req)
        data = common.body(req, FLAVOR_CREATE)["flavor"]
        _check_description(req, data)
        ident = data["id"] if data["id"] not in (None, "auto") else None
        try:
            with in_doubt.creating(deps.db, "the create of a flavor") as session:
                clash = session.scalar(sa.select(Flavor.id).where(
                    sa.or_(Flavor.name == data["name"], Flavor.id == ident) if ident else Flavor.name == data["name"]))
                if clash:
                    raise exception.Conflict(reason=f"a flavor named {data['name']!r} or with id {ident!r} "
                                                    f"already exists ({clash})")
                flavor = Flavor(name=data["name"], vcpus=data["vcpus"], memory_mb=data["ram"],
                                disk_gb=data["disk"], is_public=data["is_public"], extra_specs={},
                                description=data.get("description"))
                if ident:
                    flavor.id = ident
                session.add(flavor)
                session.flush()
                doc = flavor_document(flavor, deps.base_url(req), version=microversion.of(req))
        except sa_exc.IntegrityError:
            raise exception.Conflict(reason=f"a flavor named {data['name']!r} already exists") from None
        known_flavors(deps.db).forget(doc["id"])  # an id another process deleted may be known here
        common.respond(resp, {"flavor": doc})


class FlavorItem:
    def on_get(self, req, resp, flavor_id):
        deps = common.deps(req)
        with deps.db.begin() as session:
            common.respond(resp, {"flavor": flavor_document(find_flavor(session, common.ctx(req), flavor_id),
                                                            deps.base_url(req), version=microversion.of(req))})

    def on_put(self, req, resp, flavor_id):
        """Change the flavor's description (2.55; admins, by policy): the one field Nova lets change."""
        microversion.require(req, microversion.FLAVOR_DESCRIPTION, "PUT /flavors/{flavor_id}")
        deps = common.deps(req)
        description = common.body(req, FLAVOR_UPDATE)["flavor"]["description"]
        with deps.db.begin() as session:
            flavor = session.get(Flavor, flavor_id)
            if flavor is None:
                raise exception.NotFound(kind="Flavor", ident=flavor_id)
            flavor.description = description
            session.flush()
            doc = flavor_document(flavor, deps.base_url(req), version=microversion.of(req))
        known_flavors(deps.db).forget(flavor_id)
        common.respond(resp, {"flavor": doc})

    def on_delete(self, req, resp, flavor_id):
        db = common.deps(req).db
        with db.begin() as session:
            if not session.execute(sa.delete(Flavor).where(Flavor.id == flavor_id)).rowcount:
                raise exception.NotFound(kind="Flavor", ident=flavor_id)
        known_flavors(db).forget(flavor_id)
        resp.status = falcon.HTTP_202


def register(app: falcon.App, prefix: str) -> None:
    flavors = Flavors()
    app.add_route(f"{prefix}/flavors", flavors)
    app.add_route(f"{prefix}/flavors/detail", flavors, suffix="detail")
    app.add_route(f"{prefix}/flavors/{{flavor_id}}", FlavorItem())
