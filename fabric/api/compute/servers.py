"""Servers: create (validate, reserve quota, commit, then cast the scheduler),
list (with the 2.26 tag filters), detail, show, update (name; description from 2.19)
and delete. Documents are shaped for the request's microversion (views, microversion)."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import re
import secrets

import falcon
import sqlalchemy as sa
from marshmallow import INCLUDE, Schema, fields, validate
from sqlalchemy import exc as sa_exc

from fabric import exception, images
from fabric.api import common, in_doubt, ports, quota
from fabric.api.compute import boot_requests, list_filters, microversion, tags, views, volume_attachments
from fabric.api.compute.flavors import KnownFlavors, find_flavor, flavor_ident, known_flavors, links
from fabric.api.compute.hosts import node_zones
from fabric.api.compute.lookup import get_instance, get_instance_for_update
from fabric.api.network import usable_network_id
from fabric.compute import instance_actions, states
from fabric.compute.api import ComputeService
from fabric.compute.faults import add_fault
from fabric.context import new_request_id
from fabric.db.models import Instance, InstanceTag, Keypair, ServerGroup
from fabric.db.retry import is_deadlock
from fabric.db.types import new_uuid, utcnow
from fabric.network import secgroups_db
from fabric.rpc.outbox import StagedCast

LOG = logging.getLogger(__name__)


class ServerCreateSchema(Schema):
    class Meta:
        unknown = INCLUDE  # nova ignores fields of extensions it does not have; so do we

    name = fields.String(required=True, validate=validate.Length(min=1, max=255))
    # Empty or absent when booting from a volume (block_device_mapping_v2: volume_attachments).
    imageRef = fields.String(load_default="")
    block_device_mapping_v2 = fields.Raw(load_default=None)
    flavorRef = fields.String(required=True, validate=validate.Length(min=1))
    # A list, or "auto"/"none" from 2.37: checked by fabric.api.compute.boot_requests.
    networks = fields.Raw(load_default=None)
    tags = fields.Raw()  # 2.52
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
    adminPass = fields.String(validate=validate.Length(max=255))
    # Where the owner says the server is reached (kept and shown as given; nothing routes to them).
    accessIPv4 = fields.IPv4()
    accessIPv6 = fields.IPv6()


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


def access_addresses(data: dict) -> dict[str, str | None]:
    """The instance columns of the accessIPv4/accessIPv6 a create, update or rebuild body gives
    (addresses its schema validated, as Nova's: never empty), in their canonical text; those it
    leaves out are not in the result."""
    names = {"accessIPv4": "access_ip_v4", "accessIPv6": "access_ip_v6"}
    return {column: str(data[name]) for name, column in names.items() if name in data}


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
    # Where the owner says the server is reached (kept and shown as given; nothing routes to them).
    accessIPv4 = fields.IPv4()
    accessIPv6 = fields.IPv6()


SERVER_UPDATE = Schema.from_dict({"server": fields.Nested(ServerUpdateSchema, required=True)})()


def _validate_networks(session, context, requested: list[dict]) -> list[dict]:
    """The requested networks and ports (fabric.api.compute.boot_requests) as the compute worker
    plugs them; a device tag goes with its request."""
    out = []
    for index, item in enumerate(requested):
        if item.get("port"):
            # The user's port as it is, with the address it holds (fabric.api.ports): the server keeps it.
            out.append(ports.nic_request(session, context, item["port"]) | _tag_of(item))
            continue
        if not item.get("uuid"):
            raise exception.Invalid(reason=f"server.networks[{index}] needs a 'uuid' or a 'port'")
        network_id = usable_network_id(session, context, item["uuid"])
        out.append({"network_id": network_id, "port_id": None,
                    "fixed_ip": str(item["fixed_ip"]) if item.get("fixed_ip") else None} | _tag_of(item))
    return out


def _tag_of(item: dict) -> dict:
    return {"tag": item["tag"]} if "tag" in item else {}


#: The quota resources a server takes.
SERVER_RESOURCES = ("instances", "cores", "ram")
#: Runs of a create whose transaction the database rolled back as a deadlock's victim.
DEADLOCK_TRIES = 3
#: A create's INSERTs, built once (a statement built per request costs its cache key each time).
_INSERT_INSTANCE, _INSERT_TAG = sa.insert(Instance.__table__), sa.insert(InstanceTag.__table__)


@dataclasses.dataclass(frozen=True)
class _CreatePlan:
    """What a checked create writes: the flavor's snapshot, the image's properties, the NICs
    (each with its security groups), the server group, the key, the quota and the scheduler's spec."""

    flavor: dict
    image_props: dict
    networks: list[dict]
    group_id: str | None
    key_data: str | None
    deltas: dict[str, int]
    request_spec: dict


class Servers:
    def on_post(self, req, resp):
        """Check the request, take the quota and write the servers (rows, tags, actions and the
        scheduler's cast) in one transaction, so a refusal at any step leaves nothing written;
        then send the cast. A boot volume is the exception: it is reserved, by its own
        transaction, between the checks and the writes (given back if the writes fail). The
        flavor may be one this process knows (flavors.KnownFlavors): a create that finds it
        gone at the write runs once more, everything read afresh."""
        deps, context = common.deps(req), common.ctx(req)
        project_id = common.require_project(context)
        data = common.body(req, SERVER_CREATE)
        spec, hints = data["server"], data["os:scheduler_hints"] | data["OS-SCH-HNT:scheduler_hints"]
        count = spec["max_count"] or spec["min_count"]
        _check_description(req, spec)
        _check_user_data(spec["user_data"])
        boot_tags = boot_requests.boot_tags(req, spec)
        if count < spec["min_count"]:
            raise exception.Invalid(reason=f"server.max_count {count} is below min_count {spec['min_count']}")
        boot_volume = volume_attachments.boot_volume_request(spec, count)
        # Each of these runs its own transactions: done before the create's opens, so that it
        # never holds one connection while waiting for another. Once this process knows a
        # project's usage rows they cost no statement.
        volume_image = None if boot_volume is None else \
            volume_attachments.boot_volume_image_props(deps, context, boot_volume["uuid"])
        quota.ensure_usage_rows(deps.db, project_id, SERVER_RESOURCES)
        known = known_flavors(deps.db)
        # Chosen before the write, so that a commit whose answer the database lost can be
        # looked for (fabric.api.in_doubt).
        ids = [new_uuid() for _ in range(count)]
        args = (req, deps, context, project_id, spec, hints, ids, boot_tags, boot_volume, volume_image)
        plan, staged = self._create_retried(args, known, spec)
        try:
            deps.outbox.send(staged)
        except exception.Unroutable as err:
            LOG.error("Could not ask the scheduler to build %s: %s", ids, err.message)
            _fail_build(deps.db, ids, project_id, plan.deltas, err)
        self._created(req, resp, deps, spec, ids)

    def _create_retried(self, args: tuple, known: KnownFlavors | None, spec: dict) -> tuple[_CreatePlan, StagedCast]:
        """:meth:`_create` of ``args``, run again when its transaction wrote nothing and may succeed
        now: once after a foreign key refused a row (read afresh), up to :data:`DEADLOCK_TRIES`
        times in all when chosen as a deadlock's victim (then 409: nothing was written)."""
        for attempt in range(1, DEADLOCK_TRIES + 1):
            try:
                return self._create(*args, known)
            except sa_exc.IntegrityError:
                # A row the create names went meanwhile: most likely the flavor this process knew
                # (the server row's foreign key refused it). Once more, everything read afresh.
                known.forget(flavor_ident(spec["flavorRef"]))
                return self._create(*args, None)
            except sa_exc.OperationalError as err:
                # MariaDB picks a victim among creates taking one project's quota rows at once
                # (seen with ten at a time): rolled back whole, so run again, as Nova's API does.
                if not is_deadlock(err):
                    raise
                if attempt == DEADLOCK_TRIES:
                    raise exception.Conflict(reason=f"the database chose this create as a deadlock's victim "
                                                    f"{attempt} times (other creates of the project at the same "
                                                    "moment); nothing was written: try again") from None
                LOG.info("A server create was a deadlock's victim (try %d of %d); running it again",
                         attempt, DEADLOCK_TRIES)
        raise AssertionError("unreachable")

    def _create(self, req, deps, context, project_id: str, spec: dict, hints: dict, ids: list[str],
                boot_tags: list[str], boot_volume: dict | None, volume_image: dict | None,
                known: KnownFlavors | None) -> tuple[_CreatePlan, StagedCast]:
        """Check and write the create of servers ``ids`` (see on_post): the plan and the staged
        cast. ``known``: the flavors this process knows (None: read the flavor). A commit that
        lost its connection counts as written if the database then says it was."""
        count, staged = len(ids), None
        if boot_volume is None:
            try:
                with deps.db.begin() as session:
                    plan = self._plan(req, session, context, project_id, spec, hints, count, volume_image, known)
                    staged = self._insert(session, deps, context, spec, project_id, plan, boot_tags, ids)
            except Exception as err:
                if staged is None or not _written_after_all(deps, context, ids, err):
                    raise
            return plan, staged
        with deps.db.begin() as session:
            plan = self._plan(req, session, context, project_id, spec, hints, count, volume_image, known)
        # Reserved for the server's id before the server exists (the build connects it).
        boot_attachment = volume_attachments.reserve_boot_volume(deps, context, boot_volume, ids[0])
        try:
            with deps.db.begin() as session:
                staged = self._insert(session, deps, context, spec, project_id, plan, boot_tags, ids)
        except BaseException as err:
            if staged is None or not _written_after_all(deps, context, ids, err):
                volume_attachments.release_boot_volume(deps, context, boot_attachment)
                raise
        return plan, staged

    @staticmethod
    def _plan(req, session, context, project_id: str, spec: dict, hints: dict, count: int,
              volume_image: dict | None, known: KnownFlavors | None) -> _CreatePlan:
        """Every check of a create, read in ``session`` (the flavor, the image or the boot
        volume's ``volume_image``, the networks and ports, the zone, the server group, the key,
        the security groups); raises the first refusal. Writes nothing but a missing ``default``
        security group (kept only if the caller's transaction commits)."""
        flavor = known.find(session, context, spec["flavorRef"]) if known else \
            find_flavor(session, context, spec["flavorRef"])
        # The images the compute worker will boot, resolved by the same rule it uses, for the
        # instance's project: a bad kernel_id/ramdisk_id is refused here, before any write.
        if volume_image is None:
            image = images.resolve_boot(session, project_id, spec["imageRef"].rstrip("/").rsplit("/", 1)[-1]).image
            if image.min_ram > flavor.memory_mb or (flavor.disk_gb and image.min_disk > flavor.disk_gb):
                raise exception.Invalid(reason=f"flavor {flavor.id} is too small for image {image.id} "
                                               f"(needs {image.min_ram} MiB RAM, {image.min_disk} GiB disk)")
            image_props = {"id": image.id, "min_ram": image.min_ram, "min_disk": image.min_disk,
                           "properties": dict(image.properties or {})}
        else:
            image_props = volume_image
        networks = _validate_networks(session, context, boot_requests.requested_networks(req, session, context, spec))
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
        # The groups the server's new ports start in.
        groups = secgroups_db.resolve_for_new_ports(session, project_id, [
            str(g.get("name", "")) for g in spec["security_groups"]])
        networks = [dict(n, security_groups=groups) for n in networks]
        snapshot = {"id": flavor.id, "vcpus": flavor.vcpus, "memory_mb": flavor.memory_mb,
                    "disk_gb": flavor.disk_gb, "extra_specs": dict(flavor.extra_specs or {})}
        request_spec = {"flavor": snapshot, "image": image_props, "availability_zone": spec["availability_zone"],
                        "scheduler_hints": hints, "requested_networks": networks, "key_name": spec["key_name"],
                        "project_id": project_id, "user_id": context.user_id, "num_instances": count}
        return _CreatePlan(flavor=snapshot, image_props=image_props, networks=networks,
                           group_id=None if group_id is None else str(group_id), key_data=key_data,
                           deltas={"instances": count, "cores": flavor.vcpus * count,
                                   "ram": flavor.memory_mb * count},
                           request_spec=request_spec)

    @staticmethod
    def _insert(session, deps, context, spec: dict, project_id: str, plan: _CreatePlan,
                boot_tags: list[str], ids: list[str]) -> StagedCast:
        """Take the quota, add the server rows ``ids``, their tags and actions, and stage the
        scheduler's cast, in ``session``; the staged cast (send it after the commit)."""
        now = utcnow()
        flavor = plan.flavor
        count = len(ids)
        quota.reserve(session, project_id, plan.deltas)
        # Core INSERTs on the session's connection: nothing later in the request reads these
        # rows back, so the ORM's unit of work would be cost without use.
        conn = session.connection()
        conn.execute(_INSERT_INSTANCE, [dict(
            id=ident, display_name=spec["name"] if count == 1 else f"{spec['name']}-{n + 1}",
            project_id=project_id, user_id=context.user_id, flavor_id=flavor["id"], vcpus=flavor["vcpus"],
            memory_mb=flavor["memory_mb"], disk_gb=flavor["disk_gb"], image_id=plan.image_props["id"],
            key_name=spec["key_name"], availability_zone=spec["availability_zone"],
            vm_state=states.BUILDING, task_state=states.SCHEDULING, power_state=0, task_started_at=now,
            requested_networks=plan.networks, metadata_items=spec["metadata"], network_info=[],
            failed_hosts=[], server_group_id=plan.group_id, user_data=spec["user_data"] or None,
            key_data=plan.key_data, launch_index=n, description=spec.get("description"),
            access_ip_v4=None, access_ip_v6=None) | access_addresses(spec) for n, ident in enumerate(ids)])
        if boot_tags:
            conn.execute(_INSERT_TAG, [{"instance_id": ident, "tag": tag}
                                                  for ident in ids for tag in boot_tags])
        instance_actions.start_all(conn, context, ids, instance_actions.CREATE)
        # Committed with the rows: a crash before the broker confirms it leaves the cast for
        # the next API start to send (fabric.rpc.outbox), never a server stuck in BUILD.
        return deps.outbox.stage(conn, "api.schedule", context, instance_ids=ids, request_spec=plan.request_spec)

    def _created(self, req, resp, deps, spec, ids) -> None:
        base = deps.base_url(req)
        resp.set_header("Location", f"{base}/compute/v2.1/servers/{ids[0]}")
        if spec["return_reservation_id"]:
            # Nova's multiple-create answer when asked for it: the reservation alone.
            common.respond(resp, {"reservation_id": "r-" + ids[0][:8]}, falcon.HTTP_202)
            return
        # Exactly Nova's 2.1 create document (tempest's schema admits no other field).
        doc = {"id": ids[0], "links": links(base, "servers", ids[0]), "OS-DCF:diskConfig": "MANUAL",
               "security_groups": [{"name": g.get("name")} for g in spec["security_groups"]] or [{"name": "default"}],
               "adminPass": spec.get("adminPass") or secrets.token_urlsafe(12)}
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
            if status not in views.STATUS_FILTER and not microversion.at_least(req, microversion.STRICT_STATUS):
                query = query.where(sa.false())  # before 2.38 Nova answered an unknown status with no servers
            elif status not in views.STATUS_FILTER:
                raise exception.Invalid(reason=f"status {status!r} is unknown; known: "
                                               f"{', '.join(sorted(views.STATUS_FILTER))}")
            else:
                query = query.where(Instance.vm_state == views.STATUS_FILTER[status])
        query = common.equal_filters(query, req, {"image": Instance.image_id, "flavor": Instance.flavor_id,
                                                  "host": Instance.host, "key_name": Instance.key_name})
        query = tags.filter_servers(query, req)
        query = list_filters.changes_since(query, req)
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
            rows = list_filters.by_address(session, rows, req)
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
            flavors = views.flavors_for(session, rows) if detail and version >= microversion.FLAVOR_EMBEDDED else {}
            base = deps.base_url(req)
            if detail:
                # Encoded server by server (each cached while its row is unchanged), then joined.
                docs = [views.server_json(r, base, context.is_admin, addresses.get(r.id, {}), faults.get(r.id),
                                          groups.get(r.id), version, server_tags.get(r.id), flavors) for r in rows]
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


def _written_after_all(deps, context, ids: list[str], err: BaseException) -> bool:
    """Whether the create of servers ``ids``, whose commit raised ``err``, was written
    (fabric.api.in_doubt); if that stays unknown, it is deleted once found."""
    def written(session) -> bool:
        return session.scalar(sa.select(Instance.id).where(Instance.id == ids[0])) is not None

    def undo() -> None:
        # A request of its own: the server's action log shows the delete beside the create.
        undoing = dataclasses.replace(context, request_id=new_request_id())
        for ident in ids:
            try:
                compute_service(deps).delete(undoing, ident, on_accepted=_release_quota)
            except exception.NotFound:
                pass  # deleted already (by an earlier try of this undo)

    return in_doubt.settle(deps.db, err, written, undo, f"the create of server(s) {', '.join(ids)}")


def _release_quota(session, instance: Instance) -> None:
    """Give back what a server took of its project's quota (its delete was accepted)."""
    quota.release(session, instance.project_id, {"instances": 1, "cores": instance.vcpus,
                                                 "ram": instance.memory_mb})


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
    def _respond(req, resp, session, context, instance: Instance, brief: bool = False) -> None:
        """Answer the server's document, read in ``session`` (``brief``: as Nova answers an update)."""
        addresses = views.addresses_for(session, [instance])[instance.id]
        groups = views.groups_for(session, [instance])[instance.id]
        fault = views.faults_for(session, [instance]).get(instance.id)
        version = microversion.of(req)
        server_tags = views.tags_for(session, [instance])[instance.id] if version >= microversion.TAGS else None
        doc = views.server_document(
            instance, common.deps(req).base_url(req), context.is_admin, addresses, fault, groups=groups,
            version=version, tags=server_tags, flavors=views.flavors_for(session, [instance]))
        common.respond(resp, {"server": views.update_view(doc) if brief else doc})

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
            for column, value in access_addresses(data).items():
                setattr(instance, column, value)
            session.flush()
            self._respond(req, resp, session, context, instance, brief=True)

    def on_delete(self, req, resp, server_id):
        """Accept the delete once (compute's api: task deleting, or deleted at once for a server
        never placed on a host) and give the quota back in the same transaction."""
        deps, context = common.deps(req), common.ctx(req)
        with deps.db.begin() as session:
            get_instance(session, context, server_id)  # NotFound unless the caller may see it
        compute_service(deps).delete(context, server_id, on_accepted=_release_quota)
        resp.status = falcon.HTTP_204


def register(app: falcon.App, prefix: str) -> None:
    servers = Servers()
    app.add_route(f"{prefix}/servers", servers)
    app.add_route(f"{prefix}/servers/detail", servers, suffix="detail")
    app.add_route(f"{prefix}/servers/{{server_id}}", ServerItem())
