"""Network v2.0 subnet pools, mounted at ``/networking/v2.0/subnetpools``: create, list,
show, set (name, description), delete (refused while subnets were carved from it), and
:func:`carve_cidr`, how ``subnet create --subnet-pool`` gets its CIDR.

The prefix rules are IPAM's (:mod:`fabric.ipam.prefixes`, run in-process). A subnet
pool hands out prefixes, not addresses: the addresses of each subnet carved from it
come from that subnet's own IPAM pool as for any other subnet.
"""

from __future__ import annotations

import falcon
import sqlalchemy as sa
from marshmallow import INCLUDE, Schema, fields, validate

from fabric import exception
from fabric.api import common, in_doubt
from fabric.db.models import Subnet, SubnetPool
from fabric.ipam import prefixes

PREFIX = "/networking/v2.0"


class _Loose(Schema):
    class Meta:
        unknown = INCLUDE  # address_scope_id, default_quota, tags: accepted and ignored


class SubnetPoolCreateSchema(_Loose):
    name = fields.String(load_default="", validate=validate.Length(max=255))
    description = fields.String(load_default="", validate=validate.Length(max=255))
    prefixes = fields.List(fields.String(validate=validate.Length(min=1, max=64)), required=True,
                           validate=validate.Length(min=1, max=64))
    default_prefixlen = fields.Integer(load_default=None, allow_none=True)
    min_prefixlen = fields.Integer(load_default=None, allow_none=True)
    max_prefixlen = fields.Integer(load_default=None, allow_none=True)
    shared = fields.Boolean(load_default=False)
    is_default = fields.Boolean(load_default=False)
    project_id = fields.String(load_default=None)
    tenant_id = fields.String(load_default=None)


class SubnetPoolUpdateSchema(Schema):
    name = fields.String(validate=validate.Length(max=255))
    description = fields.String(validate=validate.Length(max=255))


SUBNET_POOL_CREATE = Schema.from_dict({"subnetpool": fields.Nested(SubnetPoolCreateSchema, required=True)})()
SUBNET_POOL_UPDATE = Schema.from_dict({"subnetpool": fields.Nested(SubnetPoolUpdateSchema, required=True)})()


def spec_of(pool: SubnetPool) -> prefixes.PoolSpec:
    return prefixes.PoolSpec(pool.ip_version, list(pool.prefixes), pool.default_prefixlen, pool.min_prefixlen,
                             pool.max_prefixlen)


def subnet_pool_document(pool: SubnetPool) -> dict:
    return {"id": pool.id, "name": pool.name, "description": pool.description, "project_id": pool.project_id,
            "tenant_id": pool.project_id, "prefixes": list(pool.prefixes), "ip_version": pool.ip_version,
            "default_prefixlen": pool.default_prefixlen, "min_prefixlen": pool.min_prefixlen,
            "max_prefixlen": pool.max_prefixlen, "shared": pool.shared, "is_default": pool.is_default,
            "address_scope_id": None, "default_quota": None, "tags": [], "revision_number": pool.revision,
            "created_at": common.isotime(pool.created_at),
            "updated_at": common.isotime(pool.updated_at or pool.created_at)}


def find_pool(session, context, pool_id: str) -> SubnetPool:
    """The subnet pool visible to the caller (own, shared, or admin); NotFound otherwise."""
    pool = session.get(SubnetPool, pool_id)
    if pool is None or not (pool.shared or common.visible(context, pool.project_id)):
        raise exception.NotFound(kind="Subnet pool", ident=pool_id)
    return pool


class PoolChanged(Exception):
    """Another subnet was carved from the pool meanwhile: carve again (in a new transaction)."""


def carve_cidr(session, context, pool_id: str, cidr: str | None, prefixlen: int | None) -> str:
    """The CIDR of a new subnet from pool ``pool_id``: ``cidr`` checked against the pool, or
    the lowest free block of ``prefixlen`` (default: the pool's).

    Bumps the pool's revision by compare-and-swap in the caller's transaction, so of two
    transactions that carved from the same view only one commits; the other gets
    PoolChanged and carves again. Raises NotFound, Invalid, Conflict (pool full, overlap).
    """
    pool = find_pool(session, context, pool_id)
    seen = pool.revision
    used = list(session.scalars(sa.select(Subnet.cidr).where(Subnet.subnetpool_id == pool.id)))
    spec = spec_of(pool)
    carved = prefixes.check_requested(spec, cidr, used) if cidr else prefixes.carve(spec, prefixlen, used)
    changed = session.execute(sa.update(SubnetPool).where(SubnetPool.id == pool.id, SubnetPool.revision == seen)
                              .values(revision=seen + 1).execution_options(synchronize_session=False)).rowcount
    if changed != 1:
        raise PoolChanged(pool_id)
    return carved


class SubnetPools:
    def on_get(self, req, resp):
        context = common.ctx(req)
        query = sa.select(SubnetPool).order_by(SubnetPool.created_at, SubnetPool.id)
        if not context.is_admin:
            query = query.where(sa.or_(SubnetPool.project_id == context.project_id, SubnetPool.shared.is_(True)))
        query = common.equal_filters(query, req, {"id": SubnetPool.id, "name": SubnetPool.name})
        with common.deps(req).db.begin() as session:
            common.respond(resp, {"subnetpools": [subnet_pool_document(p) for p in session.scalars(query)]})

    def on_post(self, req, resp):
        deps, context = common.deps(req), common.ctx(req)
        data = common.body(req, SUBNET_POOL_CREATE)["subnetpool"]
        owner = data.get("project_id") or data.get("tenant_id") or common.require_project(context)
        if owner != context.project_id and not context.is_admin:
            raise exception.Forbidden(reason=f"only an admin may create subnet pools for project {owner}")
        if (data["shared"] or data["is_default"]) and not context.is_admin:
            raise exception.Forbidden(reason="only an admin may create a shared or default subnet pool")
        spec = prefixes.validate_pool(data["prefixes"], data["default_prefixlen"], data["min_prefixlen"],
                                      data["max_prefixlen"])
        with in_doubt.creating(deps.db, "the create of a subnet pool") as session:
            pool = SubnetPool(project_id=owner, name=data["name"], description=data["description"],
                              ip_version=spec.ip_version, prefixes=spec.prefixes,
                              default_prefixlen=spec.default_prefixlen, min_prefixlen=spec.min_prefixlen,
                              max_prefixlen=spec.max_prefixlen, shared=data["shared"], is_default=data["is_default"],
                              revision=0)
            session.add(pool)
            session.flush()
            doc = subnet_pool_document(pool)
        common.respond(resp, {"subnetpool": doc}, falcon.HTTP_201)


class SubnetPoolItem:
    def _own(self, session, context, pool_id: str) -> SubnetPool:
        pool = find_pool(session, context, pool_id)
        if not common.visible(context, pool.project_id):
            raise exception.Forbidden(reason=f"subnet pool {pool_id} belongs to another project")
        return pool

    def on_get(self, req, resp, pool_id):
        with common.deps(req).db.begin() as session:
            common.respond(resp, {"subnetpool": subnet_pool_document(find_pool(session, common.ctx(req), pool_id))})

    def on_put(self, req, resp, pool_id):
        data = common.body(req, SUBNET_POOL_UPDATE)["subnetpool"]
        with common.deps(req).db.begin() as session:
            pool = self._own(session, common.ctx(req), pool_id)
            for name, value in data.items():
                setattr(pool, name, value)
            session.flush()
            common.respond(resp, {"subnetpool": subnet_pool_document(pool)})

    def on_delete(self, req, resp, pool_id):
        with common.deps(req).db.begin() as session:
            pool = self._own(session, common.ctx(req), pool_id)
            carved = session.scalar(sa.select(sa.func.count()).select_from(Subnet)
                                    .where(Subnet.subnetpool_id == pool_id))
            if carved:
                raise exception.Conflict(reason=f"subnet pool {pool_id} has {carved} subnet(s) carved from it; "
                                                "delete those first")
            session.delete(pool)
        resp.status = falcon.HTTP_204


OPERATIONS = [
    ("get", f"{PREFIX}/subnetpools", "List subnet pools", None, 200),
    ("post", f"{PREFIX}/subnetpools", "Create a subnet pool (prefixes, default/min/max prefix length)",
     SUBNET_POOL_CREATE, 201),
    ("get", f"{PREFIX}/subnetpools/{{pool_id}}", "Show a subnet pool", None, 200),
    ("put", f"{PREFIX}/subnetpools/{{pool_id}}", "Set a subnet pool's name or description", SUBNET_POOL_UPDATE,
     200),
    ("delete", f"{PREFIX}/subnetpools/{{pool_id}}", "Delete a subnet pool (refused while subnets use it)", None,
     204),
]


def register(app: falcon.App) -> None:
    app.add_route(f"{PREFIX}/subnetpools", SubnetPools())
    app.add_route(f"{PREFIX}/subnetpools/{{pool_id}}", SubnetPoolItem())
