"""Claims: the database is the one authority on what a host has left.

A claim is one short transaction of compare-and-swap statements, all or
nothing:

1. the instance takes the host only if it is still waiting for one
   (``host IS NULL``, ``building``, not deleted);
2. for a server group, the group's slot is taken: anti-affinity inserts
   ``(group, slot=host)`` (unique, so two members never share a host);
   affinity bumps the pinned host's member count, or inserts the pin
   ``(group, slot="affinity")`` when there is none (unique, so one host wins);
3. the host's usage grows only if it still fits under the allocation ratios
   (``UPDATE ... WHERE used + x <= capacity * ratio``) and its ``generation``
   is bumped so caches see the change.

:func:`claim_on` takes the group slot first, then the instance, and the
host's row last (its compare-and-swap UPDATE), just before the commit. Any
step matching no row (or a unique violation) rolls everything back: the
scheduler that lost the race moves on to its next candidate. Instances in no
server group or in anti-affinity ones may be claimed many at once
(:func:`claim_many`): in one transaction, which takes the same steps, one
statement each for all, then locks the hosts' rows in id order (``SELECT ...
FOR UPDATE``) and grows each that still takes all of its placements; the
placements of a host that no longer does are undone in the same transaction
and left out, the rest commit (no rollback and second run of the whole
batch, and no read of the hosts' rows before it: one round trip fewer per
batch, and 6-8% of batches no longer run twice). Every claim
(and :func:`release`) thus takes its group slots before its hosts' rows, and
its hosts' rows in id order: two claims never wait on each other crosswise.
And the rows every claim contends for are held for its last round trips only
(on PostgreSQL two: lock and grow in one statement, then the commit), not
across the others and the Python between them: a claim holding a host waited
on the rest of its transaction, and on its worker's other green threads,
while other workers queued on that host (scheduler benchmark, PostgreSQL
backends sampled every 20 ms: 0.81-0.88 of them waiting on a lock on
average before, 0.04-0.06 after).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.dialects import postgresql, sqlite

from fabric import exception
from fabric.compute import states
from fabric.compute.faults import add_fault
from fabric.db import Database
from fabric.db.models import ComputeNode, Instance, Migration, ServerGroupHost
from fabric.db.types import utcnow
from fabric.scheduler.host_state import NODE_COLUMNS, HostState, node_select
from fabric.scheduler.request import AFFINITY, AFFINITY_SLOT, ANTI_AFFINITY, RequestSpec

#: Why a claim on resources was lost (the host no longer fits).
RESOURCES_LOST = "resources no longer fit"
#: Backends whose UPDATE can return the updated row (saves a round trip per claim).
_RETURNING_BACKENDS = ("postgresql", "sqlite")


class ClaimLost(Exception):
    """Another scheduler got there first (resources or group slot); try the next host.

    Internal to the scheduler: never crosses RPC.
    """

    def __init__(self, host: str, what: str) -> None:
        super().__init__(f"lost the claim on {host}: {what}")
        self.host = host
        self.what = what


@dataclasses.dataclass(frozen=True)
class Ratios:
    ram: float
    cpu: float
    disk: float


_instances, _nodes = Instance.__table__, ComputeNode.__table__
# Typed: beside an integer column an untyped ratio is bound as an integer (PostgreSQL rounded
# a ram ratio of 1.5 to 2, and a host took a third more than its ratio allowed).
_RAM_RATIO, _CPU_RATIO, _DISK_RATIO = (sa.bindparam(name, type_=sa.Float)
                                       for name in ("ram_ratio", "cpu_ratio", "disk_ratio"))

# The claim's statements are built once: building SQLAlchemy expressions costs
# more CPU than the rest of a decision. Values come in as bound parameters.
_PLACE_INSTANCE = (
    sa.update(_instances)
    .where(_instances.c.id == sa.bindparam("want_instance_id"), _instances.c.host.is_(None),
           _instances.c.vm_state == states.BUILDING, _instances.c.task_state == states.SCHEDULING,
           _instances.c.deleted.is_(False))
    .values(host=sa.bindparam("want_host"), scheduling_attempts=_instances.c.scheduling_attempts + 1)
)
_GROW_NODE = (
    sa.update(_nodes)
    .where(_nodes.c.id == sa.bindparam("want_node_id"),
           _nodes.c.memory_mb_used + sa.bindparam("want_memory_mb") <= _nodes.c.memory_mb * _RAM_RATIO,
           _nodes.c.vcpus_used + sa.bindparam("want_vcpus") <= _nodes.c.vcpus * _CPU_RATIO,
           _nodes.c.disk_gb_used + sa.bindparam("want_disk_gb") <= _nodes.c.disk_gb * _DISK_RATIO)
    .values(memory_mb_used=_nodes.c.memory_mb_used + sa.bindparam("want_memory_mb"),
            vcpus_used=_nodes.c.vcpus_used + sa.bindparam("want_vcpus"),
            disk_gb_used=_nodes.c.disk_gb_used + sa.bindparam("want_disk_gb"),
            running_vms=_nodes.c.running_vms + sa.bindparam("want_instances"),
            generation=_nodes.c.generation + 1,
            # Given, not left to the column's onupdate: claim_many computes the rows it grew.
            updated_at=sa.bindparam("now"))
)
_GROW_NODE_RETURNING = _GROW_NODE.returning(*NODE_COLUMNS)


# A batch's instances take their hosts, and its hosts grow, in one statement each (a CASE on
# the row's id gives each row its own values): an executemany of one statement per row cost
# ~8x the CPU of one statement for a batch of 8 (psycopg sends and reads each row's statement
# apart). Built once per row count, as the statements above.
_PLACE_MANY: dict[int, sa.Update] = {}
_GROW_MANY: dict[int, sa.Update] = {}


def _place_many_statement(count: int) -> sa.Update:
    """UPDATE the ``count`` instances ``i<k>`` to host ``h<k>`` if each still waits for one."""
    statement = _PLACE_MANY.get(count)
    if statement is None:
        ids = [sa.bindparam(f"i{k}", type_=_instances.c.id.type) for k in range(count)]
        host = sa.case(*[(_instances.c.id == ids[k], sa.bindparam(f"h{k}", type_=_instances.c.host.type))
                         for k in range(count)])
        statement = _PLACE_MANY[count] = (
            sa.update(_instances)
            .where(_instances.c.id.in_(ids), _instances.c.host.is_(None),
                   _instances.c.vm_state == states.BUILDING, _instances.c.task_state == states.SCHEDULING,
                   _instances.c.deleted.is_(False))
            .values(host=host, scheduling_attempts=_instances.c.scheduling_attempts + 1))
    return statement


def _grow_many_statement(count: int, *, lock: bool = False) -> sa.Update:
    """:data:`_GROW_NODE` for the ``count`` nodes ``n<k>``, each by ``m<k>`` MB, ``c<k>`` vCPUs,
    ``d<k>`` GB and ``v<k>`` instances (one compare-and-swap per row, as there). With ``lock``
    (PostgreSQL), it first locks the rows in id order (its ``FROM``: a ``SELECT ... ORDER BY id
    FOR UPDATE``, whose locks come above its sort) and returns every locked row, each with
    ``grown`` saying whether it grew (as grown, or as locked): lock, check and grow in one round
    trip, and the rows a placement left out is chosen again with."""
    statement = _GROW_MANY.get(-count if lock else count)
    if statement is None:
        ids = [sa.bindparam(f"n{k}", type_=_nodes.c.id.type) for k in range(count)]

        def per_node(prefix: str) -> sa.Case:
            return sa.case(*[(_nodes.c.id == ids[k], sa.bindparam(f"{prefix}{k}", type_=sa.Integer))
                             for k in range(count)])

        memory, vcpus, disk = per_node("m"), per_node("c"), per_node("d")
        statement = (
            sa.update(_nodes)
            .where(_nodes.c.id.in_(ids),
                   _nodes.c.memory_mb_used + memory <= _nodes.c.memory_mb * _RAM_RATIO,
                   _nodes.c.vcpus_used + vcpus <= _nodes.c.vcpus * _CPU_RATIO,
                   _nodes.c.disk_gb_used + disk <= _nodes.c.disk_gb * _DISK_RATIO)
            .values(memory_mb_used=_nodes.c.memory_mb_used + memory, vcpus_used=_nodes.c.vcpus_used + vcpus,
                    disk_gb_used=_nodes.c.disk_gb_used + disk,
                    running_vms=_nodes.c.running_vms + per_node("v"), generation=_nodes.c.generation + 1,
                    updated_at=sa.bindparam("now")))
        if lock:
            locked = (sa.select(*NODE_COLUMNS).where(_nodes.c.id.in_(ids)).order_by(_nodes.c.id)
                      .with_for_update().cte("locked"))
            grown = statement.where(_nodes.c.id == locked.c.id).returning(*NODE_COLUMNS).cte("grown")
            statement = sa.union_all(
                sa.select(*grown.c, sa.true().label("grown")),
                sa.select(*locked.c, sa.false().label("grown")).where(locked.c.id.not_in(sa.select(grown.c.id))))
        _GROW_MANY[-count if lock else count] = statement
    return statement
_READ_NODE = node_select().where(_nodes.c.id == sa.bindparam("want_node_id"))
#: The keys of a compute-node row as :data:`NODE_COLUMNS` name them.
_NODE_KEYS = tuple(column.key for column in NODE_COLUMNS)
# Locked in id order: two claims taking each other's hosts in opposite orders deadlocked
# (an UPDATE takes rows in the order its plan meets them; measured: PostgreSQL's one-second
# timeout, several per 2,000 decisions).
_LOCK_NODES = (node_select().where(_nodes.c.id.in_(sa.bindparam("node_ids", expanding=True)))
               .order_by(_nodes.c.id).with_for_update())


def claim(db: Database, spec: RequestSpec, host: HostState, ratios: Ratios) -> Any:
    """Claim ``spec``'s resources (and group slot) on ``host`` for ``spec.instance_id``.

    Returns the host's compute-node row as it is after the claim. Raises
    ClaimLost if the host no longer fits or the group slot was taken, and
    InstanceStateConflict if the instance is no longer waiting for a host
    (deleted, in error, or placed by another scheduler): nothing is changed
    then.
    """
    with db.engine.connect() as conn:
        return claim_on(conn, spec, host, ratios)


def claim_on(conn: sa.Connection, spec: RequestSpec, host: HostState, ratios: Ratios,
             also: Callable[[sa.Connection, str], None] | None = None) -> Any:
    """:func:`claim` on a connection the caller holds (it may have read in this transaction).

    The claim joins the connection's current transaction, if any, and ends
    it: committed on success, rolled back on any error. Holding one connection
    for the read and the claim spares a pool checkout (and its ping) per decision.
    ``also(conn, host)`` writes more in the claim's transaction (the build cast's outbox row).
    """
    grow = {"want_node_id": host.node_id, "want_memory_mb": spec.memory_mb, "want_vcpus": spec.vcpus,
            "want_disk_gb": spec.disk_gb, "want_instances": 1, "now": utcnow(), **_ratio_params(ratios)}
    try:
        # The group slot first and the host's row last: see the module docstring.
        if spec.group_id is not None:
            _claim_group_slot(conn, spec, host.host)
        placed = conn.execute(_PLACE_INSTANCE, {"want_instance_id": spec.instance_id, "want_host": host.host})
        if placed.rowcount != 1:
            raise exception.InstanceStateConflict(
                instance=spec.instance_id, attr="host/vm_state", actual="placed, deleted or not building",
                expected=f"no host, vm_state {states.BUILDING!r} and task_state {states.SCHEDULING!r}")
        if also is not None:
            also(conn, host.host)
        if conn.dialect.name in _RETURNING_BACKENDS:
            row = conn.execute(_GROW_NODE_RETURNING, grow).mappings().first()
        else:
            row = None
            if conn.execute(_GROW_NODE, grow).rowcount == 1:
                row = conn.execute(_READ_NODE, {"want_node_id": host.node_id}).mappings().one()
        if row is None:
            raise ClaimLost(host.host, RESOURCES_LOST)
        conn.commit()
        return row
    except BaseException as exc:
        conn.rollback()
        if isinstance(exc, sa.exc.IntegrityError):
            raise ClaimLost(host.host, "server group slot taken") from None
        # MariaDB may pick this transaction as a deadlock victim: a lost race like any other.
        if isinstance(exc, sa.exc.OperationalError) and "deadlock" in str(exc.orig).lower():
            raise ClaimLost(host.host, "deadlock victim") from None
        raise


def _claim_group_slot(conn: sa.Connection, spec: RequestSpec, host: str) -> None:
    if spec.group_policy == ANTI_AFFINITY:
        conn.execute(sa.insert(ServerGroupHost).values(
            group_id=spec.group_id, slot=host, host=host, instance_id=spec.instance_id, members=1))
    elif spec.group_policy == AFFINITY:
        joined = conn.execute(
            sa.update(ServerGroupHost)
            .where(ServerGroupHost.group_id == spec.group_id, ServerGroupHost.slot == AFFINITY_SLOT,
                   ServerGroupHost.host == host)
            .values(members=ServerGroupHost.members + 1)
            .execution_options(synchronize_session=False))
        if joined.rowcount != 1:
            # No pin on this host: pin it, unless another host is pinned (unique violation).
            conn.execute(sa.insert(ServerGroupHost).values(
                group_id=spec.group_id, slot=AFFINITY_SLOT, host=host, instance_id=None, members=1))


@dataclasses.dataclass
class Placement:
    """One request and the host chosen for it, to be claimed with others (:func:`claim_many`)."""

    spec: RequestSpec
    host: HostState


def claim_many(conn: sa.Connection, placements: list[Placement], ratios: Ratios,
               also: Callable[[sa.Connection, list[Placement]], None] | None = None,
               unstage: Callable[[sa.Connection, list[Placement]], None] | None = None,
               ) -> tuple[list[Any], list[Placement], list[Placement]]:
    """Claim many placements in one transaction, ended here, leaving out those that no longer fit.

    The placements are of instances in no server group or in anti-affinity
    ones. The slots of their groups are taken first (a placement whose slot
    another member holds is left out), then their instances take their hosts,
    ``also(conn, claimed)`` writes more for them (once, for all), and last
    their hosts' rows are locked (in id order) and each host grows by the sum
    of its placements, if it still takes them all (a compare-and-swap, as in
    :func:`claim_on`). The placements of a host that no longer does (another
    claim took its room since the cache read it) are undone in the same
    transaction (their instances, their slots, and ``unstage(conn, dropped)``
    for what ``also`` wrote for them) and left out; the rest commit. One commit
    for all: one disk flush where :func:`claim_on` costs one per instance.

    Returns the rows of the hosts locked (as the claim left them), the
    placements claimed and those left out. Raises, changing nothing:
    ClaimLost when the database chose this transaction as a deadlock victim
    (or a slot was taken where the backend cannot skip it), InstanceStateConflict
    when an instance is no longer waiting for a host.
    """
    if any(p.spec.group_id is not None and p.spec.group_policy != ANTI_AFFINITY for p in placements):
        raise ValueError("claim_many takes no member of a group other than anti-affinity: claim_on claims those")
    returning = conn.dialect.name in _RETURNING_BACKENDS
    try:
        slot_lost = _take_anti_affinity_slots(conn, [p for p in placements if p.spec.group_id is not None],
                                              returning)
        claimed = [p for p in placements if p.spec.instance_id not in slot_lost]
        left = [p for p in placements if p.spec.instance_id in slot_lost]
        if not claimed:
            conn.rollback()  # nothing written
            return [], [], left
        values: dict[str, Any] = {}
        for k, p in enumerate(claimed):
            values[f"i{k}"], values[f"h{k}"] = p.spec.instance_id, p.host.host
        placed = conn.execute(_place_many_statement(len(claimed)), values)
        if placed.rowcount != len(claimed):
            raise exception.InstanceStateConflict(
                instance=", ".join(p.spec.instance_id or "" for p in claimed), attr="host/vm_state",
                actual="placed, deleted or not building (one or more)",
                expected=f"no host, vm_state {states.BUILDING!r} and task_state {states.SCHEDULING!r}")
        if also is not None:
            also(conn, claimed)
        # The hosts' rows last: see the module docstring.
        rows, grown = _lock_and_grow_nodes(conn, claimed, ratios)
        dropped = [p for p in claimed if p.host.node_id not in grown]
        if len(dropped) == len(claimed):
            conn.rollback()  # no host took its placements: nothing to keep
            return rows, [], left + dropped
        if dropped:
            _unclaim(conn, dropped)
            if unstage is not None:
                unstage(conn, dropped)
        conn.commit()
        return rows, [p for p in claimed if p.host.node_id in grown], left + dropped
    except BaseException as exc:
        conn.rollback()
        if isinstance(exc, sa.exc.IntegrityError):
            raise ClaimLost("several hosts", "server group slot taken") from None
        if isinstance(exc, sa.exc.OperationalError) and "deadlock" in str(exc.orig).lower():
            raise ClaimLost("several hosts", "deadlock victim") from None
        raise


_UNPLACE = (
    sa.update(_instances)
    .where(_instances.c.id.in_(sa.bindparam("instance_ids", expanding=True)))
    .values(host=None, scheduling_attempts=_instances.c.scheduling_attempts - 1)
)
_DROP_SLOTS = sa.delete(ServerGroupHost.__table__).where(
    ServerGroupHost.__table__.c.instance_id.in_(sa.bindparam("instance_ids", expanding=True)))


def _unclaim(conn: sa.Connection, dropped: list[Placement]) -> None:
    """Undo, in the claim's transaction, what :func:`claim_many` wrote for ``dropped`` before
    their hosts' compare-and-swap failed: their instances' hosts (and attempts), their slots."""
    conn.execute(_UNPLACE, {"instance_ids": [p.spec.instance_id for p in dropped]})
    members = [p.spec.instance_id for p in dropped if p.spec.group_id is not None]
    if members:
        conn.execute(_DROP_SLOTS, {"instance_ids": members})


def _ratio_params(ratios: Ratios) -> dict[str, float]:
    return {"ram_ratio": float(ratios.ram), "cpu_ratio": float(ratios.cpu), "disk_ratio": float(ratios.disk)}


def _wanted(placements: list[Placement]) -> dict[int, list[int]]:
    """Per node id: the memory, vCPUs, disk and instances its placements add."""
    wanted: dict[int, list[int]] = {}
    for placement in placements:
        spec, totals = placement.spec, wanted.setdefault(placement.host.node_id, [0, 0, 0, 0])
        totals[0] += spec.memory_mb
        totals[1] += spec.vcpus
        totals[2] += spec.disk_gb
        totals[3] += 1
    return wanted


def _fitting(wanted: dict[int, list[int]], nodes: dict[int, dict[str, Any]], ratios: Ratios) -> set[int]:
    """The node ids of ``wanted`` whose row (in ``nodes``) still takes all that is wanted there."""
    fits = set()
    for node_id, (memory, vcpus, disk, _count) in wanted.items():
        node = nodes.get(node_id)
        # The compare-and-swap's own test (_GROW_NODE), so that what passes here grows there.
        if (node is not None and node["memory_mb_used"] + memory <= node["memory_mb"] * float(ratios.ram)
                and node["vcpus_used"] + vcpus <= node["vcpus"] * float(ratios.cpu)
                and node["disk_gb_used"] + disk <= node["disk_gb"] * float(ratios.disk)):
            fits.add(node_id)
    return fits


def _grow_values(wanted: dict[int, list[int]], ratios: Ratios, now: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"now": now, **_ratio_params(ratios)}
    for k, (node_id, (memory, vcpus, disk, count)) in enumerate(sorted(wanted.items())):
        values[f"n{k}"], values[f"m{k}"], values[f"c{k}"], values[f"d{k}"], values[f"v{k}"] = (
            node_id, memory, vcpus, disk, count)
    return values


def _lock_and_grow_nodes(conn: sa.Connection, placements: list[Placement],
                         ratios: Ratios) -> tuple[list[dict[str, Any]], set[int]]:
    """Lock the placements' hosts' rows (in id order) and grow each that still takes all of its
    placements by their sum (one compare-and-swap each, in one statement); the rows as they are
    then (grown or not) and the ids of those grown."""
    now = utcnow()
    wanted = _wanted(placements)
    if conn.dialect.name == "postgresql":
        rows = conn.execute(_grow_many_statement(len(wanted), lock=True),
                            _grow_values(wanted, ratios, now)).mappings().all()
        grown = {row["id"] for row in rows if row["grown"]}
        return [{name: row[name] for name in _NODE_KEYS} for row in rows], grown
    locked = {row["id"]: dict(row) for row in conn.execute(_LOCK_NODES, {"node_ids": sorted(wanted)}).mappings()}
    fits = _fitting(wanted, locked, ratios)
    if fits:
        growing = {node_id: wanted[node_id] for node_id in fits}
        if conn.execute(_grow_many_statement(len(growing)), _grow_values(growing, ratios, now)).rowcount != len(fits):
            # The rows are locked and fitted: only a bug or a foreign writer gets here.
            raise ClaimLost(", ".join(sorted(locked[node_id]["host"] for node_id in fits)), RESOURCES_LOST)
    for node_id in fits:
        memory, vcpus, disk, count = wanted[node_id]
        node = locked[node_id]
        node["memory_mb_used"] += memory
        node["vcpus_used"] += vcpus
        node["disk_gb_used"] += disk
        node["running_vms"] += count
        node["generation"] += 1
        node["updated_at"] = now
    return list(locked.values()), fits


def _take_anti_affinity_slots(conn: sa.Connection, members: list[Placement], returning: bool) -> set[str]:
    """Insert the members' slots (in key order, so two batches never wait on each other
    crosswise); the ids of those whose slot another member holds. Raises IntegrityError
    for a taken slot where the backend cannot skip it."""
    if not members:
        return set()
    ordered = sorted(members, key=lambda p: (p.spec.group_id or "", p.host.host))
    values: dict[str, Any] = {}
    for k, p in enumerate(ordered):
        values[f"g{k}"], values[f"s{k}"], values[f"i{k}"] = p.spec.group_id, p.host.host, p.spec.instance_id
    statement = _slots_statement(conn.dialect.name if returning else "", len(ordered))
    if not returning:
        conn.execute(statement, values)
        return set()
    taken = conn.execute(statement, values).scalars().all()
    return {p.spec.instance_id or "" for p in members} - set(taken)


#: (dialect name, or "" for a backend without RETURNING; row count) -> the slots' INSERT.
_SLOTS: dict[tuple[str, int], Any] = {}


def _slots_statement(dialect: str, count: int) -> Any:
    """INSERT the ``count`` anti-affinity slots ``(g<k>, slot and host s<k>, i<k>)``; with a
    ``dialect`` that can, skipping taken slots and returning the instances of those inserted.
    Built once per count, as the claim's other statements: building it for each batch was
    4% of a scheduler worker's CPU (the benchmark's py-spy)."""
    statement = _SLOTS.get((dialect, count))
    if statement is None:
        rows = [{"group_id": sa.bindparam(f"g{k}", type_=ServerGroupHost.group_id.type),
                 "slot": sa.bindparam(f"s{k}", type_=ServerGroupHost.slot.type),
                 "host": sa.bindparam(f"s{k}", type_=ServerGroupHost.host.type),
                 "instance_id": sa.bindparam(f"i{k}", type_=ServerGroupHost.instance_id.type),
                 "members": 1} for k in range(count)]
        if not dialect:
            statement = sa.insert(ServerGroupHost).values(rows)
        else:
            dialect_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            statement = (dialect_insert(ServerGroupHost).values(rows)
                         .on_conflict_do_nothing(index_elements=["group_id", "slot"])
                         .returning(ServerGroupHost.instance_id))
        _SLOTS[(dialect, count)] = statement
    return statement


def release(db: Database, instance_id: str, host: str, *, failed_build: bool = False) -> bool:
    """Give back what ``instance_id`` claimed on ``host`` and clear its host.

    With ``failed_build`` the host is added to the instance's failed hosts and
    the host's failed-build count grows (the weigher then avoids it for a
    while); and the instance must be back in ``scheduling`` on ``host`` (where
    the failing host put it before asking for a reschedule): a host that took
    the build up again meanwhile (a redelivered build message) keeps it, and
    the reschedule changes nothing. Idempotent: returns False, changing
    nothing, when the instance is not (or no longer) on ``host``.
    """
    on_host = [Instance.id == instance_id, Instance.host == host]
    if failed_build:
        on_host.append(Instance.task_state == states.SCHEDULING)
    with db.begin() as session:
        row = session.execute(
            sa.select(Instance.vcpus, Instance.memory_mb, Instance.disk_gb, Instance.failed_hosts,
                      Instance.server_group_id)
            .where(*on_host)).first()
        if row is None:
            return False
        values: dict[str, Any] = {"host": None}
        if failed_build:
            values["failed_hosts"] = [*(row.failed_hosts or []), host]
        cleared = session.execute(
            sa.update(Instance)
            .where(*on_host)
            .values(**values)
            .execution_options(synchronize_session=False))
        if cleared.rowcount != 1:
            return False
        node_values: dict[str, Any] = {
            "memory_mb_used": ComputeNode.memory_mb_used - row.memory_mb,
            "vcpus_used": ComputeNode.vcpus_used - row.vcpus,
            "disk_gb_used": ComputeNode.disk_gb_used - row.disk_gb,
            "running_vms": ComputeNode.running_vms - 1,
            "generation": ComputeNode.generation + 1,
        }
        if failed_build:
            node_values["failed_builds"] = ComputeNode.failed_builds + 1
            node_values["last_build_failure_at"] = utcnow()
        # The group slot before the host's row, as a claim takes them (see the module docstring).
        _release_group_slot(session, instance_id, row.server_group_id, host)
        session.execute(sa.update(ComputeNode).where(ComputeNode.host == host).values(**node_values)
                        .execution_options(synchronize_session=False))
        return True


def _release_group_slot(session: orm.Session, instance_id: str, group_id: str | None, host: str) -> None:
    session.execute(sa.delete(ServerGroupHost).where(ServerGroupHost.instance_id == instance_id)
                    .execution_options(synchronize_session=False))
    if group_id is None:
        return
    pin = (ServerGroupHost.group_id == group_id, ServerGroupHost.slot == AFFINITY_SLOT,
           ServerGroupHost.host == host)
    session.execute(sa.update(ServerGroupHost).where(*pin)
                    .values(members=ServerGroupHost.members - 1)
                    .execution_options(synchronize_session=False))
    # The last member gone: unpin, so the group may start again elsewhere.
    session.execute(sa.delete(ServerGroupHost).where(*pin, ServerGroupHost.members <= 0)
                    .execution_options(synchronize_session=False))


def fail_instance(db: Database, instance_id: str, error: exception.FabricError,
                  *, details: str = "", host: str | None = None) -> bool:
    """Put a still-unplaced building instance into error with a fault saying why.

    Returns False (and writes nothing) if the instance is no longer waiting
    for a host: deleted meanwhile, or placed by another scheduler.
    """
    with db.begin() as session:
        moved = session.execute(
            sa.update(Instance)
            .where(Instance.id == instance_id, Instance.host.is_(None),
                   Instance.vm_state == states.BUILDING, Instance.deleted.is_(False))
            .values(vm_state=states.ERROR, task_state=None)
            .execution_options(synchronize_session=False))
        if moved.rowcount != 1:
            return False
        add_fault(session, instance_id, error, host, details=details or error.message)
        return True


# --- moves (resize, cold migration): a second claim, on the destination ------------------

def claim_move(db: Database, migration_id: str, host: str, resources: dict[str, int], ratios: Ratios) -> bool:
    """Claim ``resources`` (vcpus, memory_mb, disk_gb) on ``host`` for a move, and record ``host``
    as the migration's destination, in one transaction (the source keeps its own claim).

    Returns False, changing nothing, when the migration is no longer waiting for a destination
    (claimed by an earlier delivery, or failed). Raises ClaimLost when ``host`` no longer fits.
    """
    with db.begin() as session:
        taken = session.execute(sa.update(Migration).where(
            Migration.id == migration_id, Migration.status == states.PRE_MIGRATING,
            Migration.dest_host.is_(None)).values(dest_host=host, status=states.MIGRATING)
            .execution_options(synchronize_session=False))
        if taken.rowcount != 1:
            return False
        nodes = ComputeNode.__table__.c
        grown = session.execute(sa.update(ComputeNode).where(
            ComputeNode.host == host,
            nodes.memory_mb_used + resources["memory_mb"] <= nodes.memory_mb * float(ratios.ram),
            nodes.vcpus_used + resources["vcpus"] <= nodes.vcpus * float(ratios.cpu),
            nodes.disk_gb_used + resources["disk_gb"] <= nodes.disk_gb * float(ratios.disk))
            .values(memory_mb_used=nodes.memory_mb_used + resources["memory_mb"],
                    vcpus_used=nodes.vcpus_used + resources["vcpus"],
                    disk_gb_used=nodes.disk_gb_used + resources["disk_gb"],
                    running_vms=nodes.running_vms + 1, generation=nodes.generation + 1)
            .execution_options(synchronize_session=False))
        if grown.rowcount != 1:
            raise ClaimLost(host, RESOURCES_LOST)  # leaving the transaction rolls the migration back
        return True


def release_usage(session: orm.Session, host: str, resources: dict[str, int]) -> None:
    """Give ``resources`` (vcpus, memory_mb, disk_gb) back to ``host``, in the caller's transaction,
    whose compare-and-swap (on a migration's status) makes it happen once."""
    session.execute(sa.update(ComputeNode).where(ComputeNode.host == host).values(
        memory_mb_used=ComputeNode.memory_mb_used - resources["memory_mb"],
        vcpus_used=ComputeNode.vcpus_used - resources["vcpus"],
        disk_gb_used=ComputeNode.disk_gb_used - resources["disk_gb"],
        running_vms=ComputeNode.running_vms - 1, generation=ComputeNode.generation + 1)
        .execution_options(synchronize_session=False))
