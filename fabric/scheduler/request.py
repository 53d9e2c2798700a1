"""What one placement asks for: resources, zone, image and flavor requirements, group, hosts to avoid."""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from fabric import exception
from fabric.db.models import Flavor, Image, Instance, ServerGroup, ServerGroupHost

AFFINITY = "affinity"
ANTI_AFFINITY = "anti-affinity"
#: Best-effort variants (Compute 2.15): weighed (fabric.scheduler.weighers), never filtered or claimed.
SOFT_AFFINITY = "soft-affinity"
SOFT_ANTI_AFFINITY = "soft-anti-affinity"
SOFT_POLICIES = (SOFT_AFFINITY, SOFT_ANTI_AFFINITY)
#: Policies a server group may have.
GROUP_POLICIES = (AFFINITY, ANTI_AFFINITY, *SOFT_POLICIES)
#: The ``server_group_hosts.slot`` an affinity group's one host is pinned under.
AFFINITY_SLOT = "affinity"


@dataclasses.dataclass
class RequestSpec:
    """One instance's placement request.

    ``group_hosts`` are the hosts the instance's server group already holds
    (anti-affinity: hosts to avoid; affinity: the one host to use, if pinned).
    """

    vcpus: int = 0
    memory_mb: int = 0
    disk_gb: int = 0
    instance_id: str | None = None
    project_id: str | None = None
    availability_zone: str | None = None
    image_properties: dict[str, Any] = dataclasses.field(default_factory=dict)
    extra_specs: dict[str, Any] = dataclasses.field(default_factory=dict)
    group_id: str | None = None
    group_policy: str | None = None
    group_hosts: set[str] = dataclasses.field(default_factory=set)
    ignore_hosts: set[str] = dataclasses.field(default_factory=set)
    attempts: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["group_hosts"] = sorted(self.group_hosts)
        data["ignore_hosts"] = sorted(self.ignore_hosts)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestSpec:
        """Build a spec from wire data; raises Invalid naming an unknown or bad field."""
        if not isinstance(data, dict):
            raise exception.Invalid(reason=f"request spec {data!r} is not an object")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise exception.Invalid(reason=f"unknown request spec field(s) {', '.join(unknown)}; "
                                           f"accepted: {', '.join(sorted(fields))}")
        spec = cls(**data)
        for name in ("vcpus", "memory_mb", "disk_gb"):
            value = getattr(spec, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:  # bool is an int
                raise exception.Invalid(reason=f"request spec {name}={value!r}: expected a whole number >= 0")
        for name in ("image_properties", "extra_specs"):
            if not isinstance(getattr(spec, name), dict):
                raise exception.Invalid(reason=f"request spec {name}={getattr(spec, name)!r}: expected an object")
        for name in ("group_hosts", "ignore_hosts"):
            value = getattr(spec, name)
            if not isinstance(value, (list, tuple, set)) or not all(isinstance(h, str) for h in value):
                raise exception.Invalid(reason=f"request spec {name}={value!r}: expected a list of host names")
        if spec.group_policy is not None and spec.group_policy not in GROUP_POLICIES:
            raise exception.Invalid(reason=f"group policy {spec.group_policy!r}: expected one of "
                                           f"{', '.join(GROUP_POLICIES)}")
        spec.group_hosts = set(spec.group_hosts or ())
        spec.ignore_hosts = set(spec.ignore_hosts or ())
        return spec


@dataclasses.dataclass
class InstanceRequest:
    """An instance row's scheduling view, read in one query."""

    spec: RequestSpec
    vm_state: str
    task_state: str | None
    host: str | None
    deleted: bool
    failed_hosts: list[str]


_SELECT_REQUEST = (
    sa.select(Instance.id, Instance.project_id, Instance.vcpus, Instance.memory_mb,
              Instance.disk_gb, Instance.availability_zone, Instance.vm_state,
              Instance.task_state, Instance.host, Instance.deleted, Instance.failed_hosts,
              Instance.scheduling_attempts, Instance.server_group_id,
              Flavor.extra_specs, Image.properties, ServerGroup.policy)
    .outerjoin(Flavor, Flavor.id == Instance.flavor_id)
    .outerjoin(Image, Image.id == Instance.image_id)
    .outerjoin(ServerGroup, ServerGroup.id == Instance.server_group_id)
)
_LOAD_REQUEST = _SELECT_REQUEST.where(Instance.id == sa.bindparam("instance_id"))
# Many requests are read with their groups' slots (one row per slot): one round trip where a
# second query for the slots cost one more for every batch with a group member in it.
_LOAD_REQUESTS = (
    _SELECT_REQUEST.add_columns(ServerGroupHost.slot.label("group_slot"), ServerGroupHost.host.label("slot_host"))
    .outerjoin(ServerGroupHost, ServerGroupHost.group_id == Instance.server_group_id)
    .where(Instance.id.in_(sa.bindparam("instance_ids", expanding=True)))
)


def load_instance_request(session: orm.Session | sa.Connection, instance_id: str) -> InstanceRequest:
    """Read an instance with its flavor, image and group into a request; raises NotFound."""
    row = session.execute(_LOAD_REQUEST, {"instance_id": instance_id}).first()
    if row is None:
        raise exception.NotFound(kind="Instance", ident=instance_id)
    request = _request_of(row)
    if request.spec.group_id is not None:
        request.spec.group_hosts = load_group_hosts(session, request.spec.group_id, request.spec.group_policy)
    return request


def load_instance_requests(session: orm.Session | sa.Connection,
                           instance_ids: list[str]) -> dict[str, InstanceRequest]:
    """:func:`load_instance_request` for many instances: by id, those that exist. One query
    with their groups' slots (plus one per group of a soft policy, whose members hold none)."""
    requests: dict[str, InstanceRequest] = {}
    slots: dict[str, list[tuple[str, str]]] = {}
    for row in session.execute(_LOAD_REQUESTS, {"instance_ids": list(instance_ids)}):
        if row.id not in requests:
            requests[row.id] = _request_of(row)
        if row.group_slot is not None:
            slots.setdefault(row.id, []).append((row.group_slot, row.slot_host))
    for instance_id, request in requests.items():
        spec = request.spec
        if spec.group_id is None:
            continue
        if spec.group_policy in SOFT_POLICIES:
            spec.group_hosts = load_group_hosts(session, spec.group_id, spec.group_policy)
        else:
            spec.group_hosts = _held_hosts(slots.get(instance_id, []), spec.group_policy)
    return requests


def _request_of(row: Any) -> InstanceRequest:
    """The request of a row of :data:`_SELECT_REQUEST`, its group's hosts not read yet."""
    failed = list(row.failed_hosts or [])
    spec = RequestSpec(
        vcpus=row.vcpus, memory_mb=row.memory_mb, disk_gb=row.disk_gb, instance_id=row.id,
        project_id=row.project_id, availability_zone=row.availability_zone,
        image_properties=dict(row.properties or {}), extra_specs=dict(row.extra_specs or {}),
        group_id=row.server_group_id, group_policy=row.policy,
        ignore_hosts=set(failed), attempts=row.scheduling_attempts,
    )
    return InstanceRequest(spec=spec, vm_state=row.vm_state, task_state=row.task_state,
                           host=row.host, deleted=row.deleted, failed_hosts=failed)


def load_group_hosts(session: orm.Session | sa.Connection, group_id: str, policy: str | None) -> set[str]:
    """The hosts a group holds: its pinned host (affinity) or its members' hosts (anti-affinity,
    and the soft policies, whose members hold no slot: read from the members themselves)."""
    if policy in SOFT_POLICIES:
        return set(session.scalars(sa.select(Instance.host).distinct().where(
            Instance.server_group_id == group_id, Instance.deleted.is_(False), Instance.host.is_not(None))))
    rows = session.execute(sa.select(ServerGroupHost.slot, ServerGroupHost.host)
                           .where(ServerGroupHost.group_id == group_id)).all()
    return _held_hosts(rows, policy)


def _held_hosts(slots: Any, policy: str | None) -> set[str]:
    """The hosts a group of a slotted policy holds, from its (slot, host) rows."""
    if policy == AFFINITY:
        return {host for slot, host in slots if slot == AFFINITY_SLOT}
    return {host for _slot, host in slots}
