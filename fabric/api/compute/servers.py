"""Servers: create (validate, reserve quota, commit, then cast the scheduler),
list (with the 2.26 tag filters), detail, show, update (name; description from 2.19)
and delete. Documents are shaped for the request's microversion (views, microversion)."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import secrets

import falcon
import sqlalchemy as sa
from marshmallow import INCLUDE, Schema, fields, validate

from fabric import exception, images
from fabric.api import common, ports, quota
from fabric.api.compute import microversion, tags, views
from fabric.api.compute.flavors import find_flavor, links
from fabric.api.compute.hosts import node_zones
from fabric.api.compute.lookup import get_instance, get_instance_for_update
from fabric.api.network import find_network
from fabric.compute import instance_actions, states
from fabric.compute.api import ComputeService
from fabric.compute.faults import add_fault
from fabric.db.models import Instance, Keypair, ServerGroup
from fabric.db.types import utcnow
from fabric.network import secgroups_db

LOG = logging.getLogger(__name__)


class NetworkRequestSchema(Schema):
    uuid = fields.String(validate=validate.Length(min=1, max=36))
    port = fields.String(validate=validate.Length(min=1, max=36))
    fixed_ip = fields.IP()


class ServerCreateSchema(Schema):
    class Meta:
        unknown = INCLUDE  # nova ignores fields of extensions it does not have; so do we

    name = fields.String(required=True, validate=validate.Length(min=1, max=255))
    imageRef = fields.String(required=True, validate=validate.Length(min=1))
    flavorRef = fields.String(required=True, validate=validate.Length(min=1))
    networks = fields.List(fields.Nested(NetworkRequestSchema), load_default=list)
    key_name = fields.String(allow_none=True, load_default=None)
    availability_zone = fields.String(allow_none=True, load_default=None)
    metadata = fields.Dict(keys=fields.String(validate=validate.Length(max=255)),
                           values=fields.String(validate=validate.Length(max=255)), load_default=dict)
    min_count = fields.Integer(strict=False, load_default=1, validate=validate.Range(min=1))
    max_count = fields.Integer(strict=False, load_default=None, validate=validate.Range(min=1))
    # Nova's limit: 65535 characters of base64.
    user_data = fields.String(allow_none=True, load_default=None, validate=validate.Length(max=65535))
    security_groups = fields.List(fields.Dict(), load_default=list)
    description = fields.String(allow_none=True, validate=validate.Length(max=255))  # 2.19
    return_reservation_id = fields.Boolean(load_default=False)


SERVER_CREATE = Schema.from_dict({
    "server": fields.Nested(ServerCreateSchema, required=True),
    "os:scheduler_hints": fields.Dict(load_default=dict),
    # The name Nova documents and python-openstackclient sends (`server create --hint`).
    "OS-SCH-HNT:scheduler_hints": fields.Dict(load_default=dict),
})()

#: Sort keys a client may ask for.
_SORT_KEYS = {"created_at": Instance.created_at, "display_name": Instance.display_name,
              "updated_at": Instance.updated_at, "vm_state": Instance.vm_state, "uuid": Instance.id}


def _check_user_data(user_data: str | None) -> None:
    """Raise Invalid unless ``user_data`` is None or base64 (what the metadata service decodes)."""
    if user_data is None:
        return
    try:
        base64.b64decode(user_data, validate=True)
    except (binascii.Error, ValueError):
        raise exception.Invalid(reason=f"server.user_data {user_data[:40]!r}{'...' if len(user_data) > 40 else ''} "
                                       "is not base64 (RFC 4648, padded); encode the data first") from None


def _check_description(req, data: dict) -> None:
    """Raise Invalid when a body gives a description below microversion 2.19 (as Nova does)."""
    if "description" in data and not microversion.at_least(req, microversion.DESCRIPTION):
        needed, asked = microversion.text(microversion.DESCRIPTION), microversion.text(microversion.of(req))
        raise exception.Invalid(reason=f"server.description needs microversion {needed} or later "
                                       f"(OpenStack-API-Version: compute {needed}); this request asked for {asked}")


def _check_zone(session, zone: str | None) -> None:
    """Raise Invalid unless ``zone`` is None or the zone of some compute host (its aggregate's or
    its node's: fabric.scheduler.aggregates), as Nova refuses an unknown zone at once."""
    if zone is None:
        return
    known = set(node_zones(session).values())
    if zone not in known:
        raise exception.Invalid(reason=f"server.availability_zone {zone!r} is not a zone of any compute host; "
                                       f"known: {', '.join(sorted(known)) or 'none'}")


def compute_service(deps) -> ComputeService:
    """Compute's api over this API's database and compute client: how every request that moves
    a server (action, delete) or reads its console reaches the compute worker."""
    return ComputeService(deps.db, deps.clients.compute, outbox=deps.outbox,
                          max_retries=deps.settings.database.max_retries)


class ServerUpdateSchema(Schema):
    name = fields.String(validate=validate.Length(min=1, max=255))
    description = fields.String(allow_none=True, validate=validate.Length(max=255))  # 2.19
    # Accepted and ignored, as Nova does: fabric has no access addresses.
    accessIPv4 = fields.String()
    accessIPv6 = fields.String()


SERVER_UPDATE = Schema.from_dict({"server": fields.Nested(ServerUpdateSchema, required=True)})()


def _validate_networks(session, context, requested: list[dict]) -> list[dict]:
    out = []
    for index, item in enumerate(requested):
        if item.get("port"):
            # The user's port as it is, with the address it holds (fabric.api.ports): the server keeps it.
            out.append(ports.nic_request(session, context, item["port"]))
            continue
        if not item.get("uuid"):
            raise exception.Invalid(reason=f"server.networks[{index}] needs a 'uuid' or a 'port'")
        network = find_network(session, context, item["uuid"])
        out.append({"network_id": network.id, "port_id": None,
                    "fixed_ip": str(item["fixed_ip"]) if item.get("fixed_ip") else None})
    return out


class Servers:
    def on_post(self, req, resp):
        deps, context = common.deps(req), common.ctx(req)
        project_id = common.require_project(context)
        data = common.body(req, SERVER_CREATE)
        spec, hints = data["server"], data["os:scheduler_hints"] | data["OS-SCH-HNT:scheduler_hints"]
        count = spec["max_count"] or spec["min_count"]
        _check_description(req, spec)
        _check_user_data(spec["user_data"])
        if count < spec["min_count"]:
            raise exception.Invalid(reason=f"server.max_count {count} is below min_count {spec['min_count']}")
        with deps.db.begin() as session:
            flavor = find_flavor(session, context, spec["flavorRef"])
            # The images the compute worker will boot, resolved by the same rule it uses, for the
            # instance's project: a bad kernel_id/ramdisk_id is refused here, before any write.
            image = images.resolve_boot(session, project_id, spec["imageRef"].rstrip("/").rsplit("/", 1)[-1]).image
            if image.min_ram > flavor.memory_mb or (flavor.disk_gb and image.min_disk > flavor.disk_gb):
                raise exception.Invalid(reason=f"flavor {flavor.id} is too small for image {image.id} "
                                               f"(needs {image.min_ram} MiB RAM, {image.min_disk} GiB disk)")
            networks = _validate_networks(session, context, spec["networks"])
            _check_zone(session, spec["availability_zone"])
            group_id = hints.get("group")
            if group_id is not None:
                group = session.get(ServerGroup, str(group_id))
                if group is None or not common.visible(context, group.project_id):
                    raise exception.NotFound(kind="Server group", ident=str(group_id))
            key_data = None
            if spec["key_name"]:
                key_data = session.scalar(sa.select(Keypair.public_key).where(
                    Keypair.user_id == context.user_id, Keypair.name == spec["key_name"]))
                if key_data is None:
                    raise exception.Invalid(reason=f"keypair {spec['key_name']!r} does not exist for this user")
            snapshot = {"id": flavor.id, "vcpus": flavor.vcpus, "memory_mb": flavor.memory_mb,
                        "disk_gb": flavor.disk_gb, "extra_specs": dict(flavor.extra_specs or {})}
            image_props = {"id": image.id, "min_ram": image.min_ram, "min_disk": image.min_disk,
                           "properties": dict(image.properties or {})}
        # The groups the server's new ports start in (fabric.network.secgroups_db), checked before any write.
        groups = secgroups_db.resolve_for_new_ports(deps.db, project_id, [
            str(g.get("name", "")) for g in spec["security_groups"]])
        networks = [dict(n, security_groups=groups) for n in networks]
        deltas = {"instances": count, "cores": flavor.vcpus * count, "ram": flavor.memory_mb * count}
        quota.ensure_usage_rows(deps.db, project_id, deltas)
        now = utcnow()
        request_spec = {"flavor": snapshot, "image": image_props, "availability_zone": spec["availability_zone"],
                        "scheduler_hints": hints, "requested_networks": networks, "key_name": spec["key_name"],
                        "project_id": project_id, "user_id": context.user_id, "num_instances": count}
        with deps.db.begin() as session:
            quota.reserve(session, project_id, deltas)
            instances = []
            for n in range(count):
                instance = Instance(
                    display_name=spec["name"] if count == 1 else f"{spec['name']}-{n + 1}",
                    project_id=project_id, user_id=context.user_id, flavor_id=flavor.id, vcpus=flavor.vcpus,
                    memory_mb=flavor.memory_mb, disk_gb=flavor.disk_gb, image_id=image.id,
                    key_name=spec["key_name"], availability_zone=spec["availability_zone"],
                    vm_state=states.BUILDING, task_state=states.SCHEDULING, power_state=0, task_started_at=now,
                    requested_networks=networks, metadata_items=spec["metadata"], network_info=[],
                    failed_hosts=[], server_group_id=str(group_id) if group_id is not None else None,
                    user_data=spec["user_data"] or None, key_data=key_data, launch_index=n,
                    description=spec.get("description"))
                session.add(instance)
                instances.append(instance)
            session.flush()
            ids = [i.id for i in instances]
            for ident in ids:
                instance_actions.start(session, context, ident, instance_actions.CREATE)
            # Committed with the rows: a crash before the broker confirms it leaves the cast for
            # the next API start to send (fabric.rpc.outbox), never a server stuck in BUILD.
            staged = deps.outbox.stage(session, "api.schedule", context, instance_ids=ids, request_spec=request_spec)
        try:
            deps.outbox.send(staged)
        except exception.Unroutable as err:
            LOG.error("Could not ask the scheduler to build %s: %s", ids, err.message)
            _fail_build(deps.db, ids, project_id, deltas, err)
        base = deps.base_url(req)
        resp.set_header("Location", f"{base}/compute/v2.1/servers/{ids[0]}")
        if spec["return_reservation_id"]:
            # Nova's multiple-create answer when asked for it: the reservation alone.
            common.respond(resp, {"reservation_id": "r-" + ids[0][:8]}, falcon.HTTP_202)
            return
        # Exactly Nova's 2.1 create document (tempest's schema admits no other field).
        doc = {"id": ids[0], "links": links(base, "servers", ids[0]), "OS-DCF:diskConfig": "MANUAL",
               "security_groups": [{"name": g.get("name")} for g in spec["security_groups"]] or [{"name": "default"}],
               "adminPass": secrets.token_urlsafe(12)}
        common.respond(resp, {"server": doc}, falcon.HTTP_202)

    def _list(self, req, resp, detail: bool):
        deps, context = common.deps(req), common.ctx(req)
        query = sa.select(*views.DOCUMENT_COLUMNS).where(Instance.deleted.is_(False))
        all_tenants = req.get_param_as_bool("all_tenants", blank_as_true=True) or False
        wanted_project = req.get_param("project_id") or req.get_param("tenant_id")
        if context.is_admin and (all_tenants or wanted_project):
            if wanted_project:
                query = query.where(Instance.project_id == wanted_project)
        else:
            query = query.where(Instance.project_id == common.require_project(context))
        if req.get_param("status"):
            status = req.get_param("status").upper()
            if status not in views.STATUS_FILTER:
                raise exception.Invalid(reason=f"status {status!r} is unknown; known: "
                                               f"{', '.join(sorted(views.STATUS_FILTER))}")
            query = query.where(Instance.vm_state == views.STATUS_FILTER[status])
        query = common.equal_filters(query, req, {"image": Instance.image_id, "flavor": Instance.flavor_id,
                                                  "host": Instance.host, "key_name": Instance.key_name})
        query = tags.filter_servers(query, req)
        sort_key = req.get_param("sort_key") or "created_at"
        if sort_key not in _SORT_KEYS:
            raise exception.Invalid(reason=f"sort_key {sort_key!r} is not supported; use one of "
                                           f"{', '.join(sorted(_SORT_KEYS))}")
        descending = (req.get_param("sort_dir") or "desc") == "desc"
        column = _SORT_KEYS[sort_key]
        query = query.order_by(column.desc() if descending else column.asc(), Instance.id)
        limit = common.int_param(req, "limit", minimum=0)
        marker = req.get_param("marker")
        name_re = None
        if req.get_param("name"):
            try:
                name_re = re.compile(req.get_param("name"))
            except re.error as err:
                raise exception.Invalid(reason=f"name filter {req.get_param('name')!r} is not a regex: {err}") \
                    from None
        with deps.db.begin() as session:
            rows = session.execute(query).all()
            if name_re is not None:
                rows = [r for r in rows if name_re.search(r.display_name)]
            if marker:
                index = next((i for i, r in enumerate(rows) if r.id == marker), None)
                if index is None:
                    raise exception.Invalid(reason=f"marker {marker!r} is not a server in this listing")
                rows = rows[index + 1:]
            more = limit is not None and len(rows) > limit
            if limit is not None:
                rows = rows[:limit]
            scope = query.with_only_columns(Instance.id).order_by(None)
            addresses = views.addresses_for(session, rows, scope) if detail else {}
            groups = views.groups_for(session, rows, scope) if detail else {}
            version = microversion.of(req)
            server_tags = views.tags_for(session, rows, scope) if detail and version >= microversion.TAGS else {}
            faults = views.faults_for(session, rows) if detail else {}
            base = deps.base_url(req)
            if detail:
                # Encoded server by server (each cached while its row is unchanged), then joined.
                docs = [views.server_json(r, base, context.is_admin, addresses.get(r.id, {}), faults.get(r.id),
                                          groups.get(r.id), version, server_tags.get(r.id)) for r in rows]
            else:
                docs = [views.server_document(r, base, context.is_admin, {}, None, False) for r in rows]
        next_links = [{"rel": "next", "href": f"{base}/compute/v2.1/servers{'/detail' if detail else ''}"
                                              f"?limit={limit}&marker={rows[-1].id}"}] if more and rows else None
        if detail:
            resp.status = falcon.HTTP_200
            resp.content_type = falcon.MEDIA_JSON
            tail = ',"servers_links":' + json.dumps(next_links, separators=(",", ":")) if next_links else ""
            resp.text = '{"servers":[' + ",".join(docs) + "]" + tail + "}"
            return
        doc: dict = {"servers": docs}
        if next_links:
            doc["servers_links"] = next_links
        common.respond(resp, doc)

    def on_get(self, req, resp):
        self._list(req, resp, detail=False)

    def on_get_detail(self, req, resp):
        self._list(req, resp, detail=True)


def _fail_build(db, ids: list[str], project_id: str, deltas: dict, err: exception.FabricError) -> None:
    """Put unbuildable servers into ERROR with a fault and give their quota back."""
    with db.begin() as session:
        failed = session.execute(sa.update(Instance).where(
            Instance.id.in_(ids), Instance.vm_state == states.BUILDING, Instance.task_state == states.SCHEDULING)
            .values(vm_state=states.ERROR, task_state=None)).rowcount
        for ident in ids:
            add_fault(session, ident, err, None, code=max(err.code, 500), details="")
        if failed:
            per = {k: v // len(ids) * failed for k, v in deltas.items()}
            quota.release(session, project_id, per)


class ServerItem:
    @staticmethod
    def _respond(req, resp, session, context, instance: Instance) -> None:
        """Answer the server's document, read in ``session``."""
        addresses = views.addresses_for(session, [instance])[instance.id]
        groups = views.groups_for(session, [instance])[instance.id]
        fault = views.faults_for(session, [instance]).get(instance.id)
        version = microversion.of(req)
        server_tags = views.tags_for(session, [instance])[instance.id] if version >= microversion.TAGS else None
        common.respond(resp, {"server": views.server_document(
            instance, common.deps(req).base_url(req), context.is_admin, addresses, fault, groups=groups,
            version=version, tags=server_tags)})

    def on_get(self, req, resp, server_id):
        deps, context = common.deps(req), common.ctx(req)
        with deps.db.begin() as session:
            self._respond(req, resp, session, context, get_instance(session, context, server_id))

    def on_put(self, req, resp, server_id):
        """``server set --name`` (and ``--description``, 2.19): answers the server."""
        deps, context = common.deps(req), common.ctx(req)
        data = common.body(req, SERVER_UPDATE)["server"]
        _check_description(req, data)
        with deps.db.begin() as session:
            instance = get_instance_for_update(session, context, server_id)
            if "name" in data:
                instance.display_name = data["name"]
            if "description" in data:
                instance.description = data["description"]
            session.flush()
            self._respond(req, resp, session, context, instance)

    def on_delete(self, req, resp, server_id):
        """Accept the delete once (compute's api: task deleting, or deleted at once for a server
        never placed on a host) and give the quota back in the same transaction."""
        deps, context = common.deps(req), common.ctx(req)
        with deps.db.begin() as session:
            get_instance(session, context, server_id)  # NotFound unless the caller may see it

        def release_quota(session, instance: Instance) -> None:
            quota.release(session, instance.project_id, {"instances": 1, "cores": instance.vcpus,
                                                         "ram": instance.memory_mb})

        compute_service(deps).delete(context, server_id, on_accepted=release_quota)
        resp.status = falcon.HTTP_204


def register(app: falcon.App, prefix: str) -> None:
    servers = Servers()
    app.add_route(f"{prefix}/servers", servers)
    app.add_route(f"{prefix}/servers/detail", servers, suffix="detail")
    app.add_route(f"{prefix}/servers/{{server_id}}", ServerItem())
