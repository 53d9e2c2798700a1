"""The cloud's health at a glance: what ``fabric-manage status`` shows.

:func:`gather` reads the services registry, the broker's queues, the
instances and the hosts' capacity, and the schema revision, and returns a
:class:`Status`: sections of rows to show, and ``problems``: one line for each
thing that needs a person (a worker down, a dead letter, a fanout message a
worker dropped, a server stuck in a transient state, a schema not at the
code's revision, a broker or database that cannot be asked). Servers in error
are shown but are not a problem by themselves: a build that found no valid
host is the tenant's news, not the operator's.

A fanout queue has no dead-letter queue: what a worker refuses on it (unsigned,
forged, stale ...) or gives up on is dropped, and it would show nowhere else.
Each worker counts those drops by reason code and its heartbeat writes them to
the services registry (:mod:`fabric.servicegroup`); they are the running
process's counts, so a restarted worker reports none until it drops another.
A real worker is one host: its counts are its host's. A process of fake hosts
(:mod:`fabric.sim.fake_hosts`) consumes a topic's fanout once for all its hosts,
and what its server refuses there was lost to every one of them: one host's row
carries those counts, under codes marked by
:func:`~fabric.servicegroup.process_wide`, and the problem line says they
concern every host of that process.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from fabric import config, servicegroup
from fabric.db import Database, migration
from fabric.db.models import ComputeNode, Instance
from fabric.db.types import utcnow
from fabric.exception import FabricError
from fabric.rpc import queues

#: A server whose task started longer ago than this is reported stuck (the reaper errors it
#: only after ``[compute] transient_timeout``; a person should look well before).
DEFAULT_STUCK_AFTER = 300.0
#: Servers that went to error this long ago or less are listed.
ERROR_WINDOW = datetime.timedelta(hours=1)


@dataclasses.dataclass
class Section:
    """A titled table: ``headers`` and ``rows`` (``None`` cells show as ``-``)."""

    title: str
    headers: tuple[str, ...]
    rows: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)
    note: str = ""


@dataclasses.dataclass
class Status:
    sections: list[Section] = dataclasses.field(default_factory=list)
    #: One line per thing that needs a person; empty when all is well.
    problems: list[str] = dataclasses.field(default_factory=list)


def _by_scope(counts: dict[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """``counts`` split into the host's own and its process's
    (:func:`~fabric.servicegroup.process_wide`), both by unmarked code."""
    own: dict[str, int] = {}
    shared: dict[str, int] = {}
    for code, count in counts.items():
        if code.startswith(servicegroup.PROCESS_WIDE_PREFIX):
            shared[code.removeprefix(servicegroup.PROCESS_WIDE_PREFIX)] = count
        else:
            own[code] = count
    return own, shared


def _listed(counts: dict[str, int]) -> str:
    return ", ".join(f"{code} {count}" for code, count in sorted(counts.items()))


def _by_code(counts: dict[str, int]) -> str:
    """Fanout drops as a person reads them: ``forged 1, stale 3``; those of every host of the
    process (:func:`~fabric.servicegroup.process_wide`) after the host's own, named so:
    ``invalid 1; for every host of its process: unsigned 3``."""
    own, shared = _by_scope(counts)
    parts = [_listed(own)] if own else []
    if shared:
        parts.append(f"for every host of its process: {_listed(shared)}")
    return "; ".join(parts)


def fanout_drops_problem(service: servicegroup.ServiceInfo) -> str | None:
    """The problem line of the fanout messages ``service`` dropped, or None if it dropped none;
    it says which were lost to every host of its process (:func:`~fabric.servicegroup.process_wide`), and, if any
    were stale, to compare clocks."""
    dropped = sum(service.fanout_drops.values())
    if not dropped:
        return None
    when = (service.fanout_dropped_at.isoformat(sep=" ", timespec="seconds")
            if service.fanout_dropped_at else "unknown")
    stale = any(counts.get("stale") for counts in _by_scope(service.fanout_drops))
    hint = "; stale: compare its clock with its senders'" if stale else ""
    return (f"{service.binary} on {service.host} (topic {service.topic}) dropped {dropped} fanout message(s) "
            f"since it started ({_by_code(service.fanout_drops)}), the last at {when} UTC: a fanout queue "
            f"has no dead-letter queue, its log says why{hint}")


def services_section(db: Database, settings: config.Settings, status: Status) -> Section:
    section = Section("Services", ("Host", "Binary", "State", "Status", "Last heartbeat (UTC)", "Dropped fanouts"))
    for service in servicegroup.list_services(db, down_time=settings.service.service_down_time):
        state = "up" if service.up else "down"
        seen = service.last_heartbeat.isoformat(sep=" ", timespec="seconds") if service.last_heartbeat else "never"
        section.rows.append((service.host, service.binary, state,
                             f"disabled ({service.disabled_reason})" if service.disabled and service.disabled_reason
                             else "disabled" if service.disabled else "enabled", seen,
                             _by_code(service.fanout_drops) or None))
        # A disabled worker was taken out on purpose; one that is down while enabled was not.
        if not service.up and not service.disabled:
            status.problems.append(f"{service.binary} on {service.host} is down (last heartbeat {seen})")
        # Disabled or down, what it dropped while it ran was still lost.
        dropped = fanout_drops_problem(service)
        if dropped:
            status.problems.append(dropped)
    if not section.rows:
        section.note = "No services are registered."
        status.problems.append("no services are registered")
    return section


def queues_section(settings: config.Settings, ctl: queues.Rabbitmqctl, status: Status) -> Section:
    section = Section("Queues with a backlog or dead letters", ("Queue", "Ready", "Unacked", "Consumers",
                                                               "Dead letters"))
    if not settings.rpc.transport_url.startswith("amqp"):
        section.note = f"The transport ({settings.rpc.transport_url.split(':', 1)[0]}://) has no queues to list."
        return section
    try:
        vhost = queues.vhost_of(queues.amqp_url(settings))
        rows = queues.list_queues(ctl, vhost)
    except FabricError as exc:
        status.problems.append(f"could not list the broker's queues: {exc}")
        section.note = "Unknown."
        return section
    for row in rows:
        if row.ready or row.dead:
            section.rows.append((row.name, row.ready, row.unacked, row.consumers,
                                 "-" if row.dead is None else row.dead))
        if row.dead:
            status.problems.append(f"queue {row.name} has {row.dead} dead letter(s) "
                                   f"(fabric-manage queues requeue-dead {row.name})")
        if row.ready and not row.consumers:
            status.problems.append(f"queue {row.name} holds {row.ready} message(s) and no worker consumes it")
    if not section.rows:
        section.note = "No backlog, no dead letters."
    return section


def instances_section(db: Database, stuck_after: float, status: Status, now: datetime.datetime) -> Section:
    section = Section("Servers stuck or in error", ("Server", "Project", "Host", "State", "Task", "Since (UTC)"))
    stuck_cutoff = now - datetime.timedelta(seconds=stuck_after)
    since = sa.func.coalesce(Instance.task_started_at, Instance.updated_at)
    statement = (sa.select(Instance.id, Instance.project_id, Instance.host, Instance.vm_state, Instance.task_state,
                           since.label("since"))
                 .where(Instance.deleted.is_(False))
                 .where(sa.or_(sa.and_(Instance.task_state.is_not(None), since < stuck_cutoff),
                               sa.and_(Instance.vm_state == "error", Instance.updated_at >= now - ERROR_WINDOW)))
                 .order_by(since))
    with db.engine.connect() as connection:
        rows = connection.execute(statement).all()
    for row in rows:
        when = row.since.isoformat(sep=" ", timespec="seconds") if row.since else "-"
        section.rows.append((row.id, row.project_id, row.host, row.vm_state, row.task_state, when))
        if row.task_state is not None:
            status.problems.append(f"server {row.id} is stuck in task {row.task_state} since {when}"
                                   f"{' on ' + row.host if row.host else ''}")
    if not section.rows:
        section.note = f"None stuck for more than {stuck_after:g}s, none in error in the last hour."
    return section


def _percent(used: int, total: int) -> str:
    return f"{used}/{total} ({100 * used // total}%)" if total else f"{used}/0"


def capacity_section(db: Database, status: Status) -> Section:
    section = Section("Hosts' capacity in use", ("Host", "Zone", "vCPUs", "Memory MiB", "Disk GiB", "Servers"))
    with db.engine.connect() as connection:
        nodes = connection.execute(sa.select(ComputeNode).order_by(ComputeNode.host)).all()
    for node in nodes:
        section.rows.append((node.host, node.availability_zone, _percent(node.vcpus_used, node.vcpus),
                             _percent(node.memory_mb_used, node.memory_mb), _percent(node.disk_gb_used, node.disk_gb),
                             node.running_vms))
    if not section.rows:
        section.note = "No compute host has reported."
    return section


def schema_section(db: Database, status: Status) -> Section:
    current, head = migration.current_revision(db), migration.head_revision()
    section = Section("Database schema", ("Database revision", "Code's revision"), [(current or "none", head)])
    try:
        todo = migration.pending(db)
    except Exception:  # noqa: BLE001 - alembic: a revision this code does not know
        status.problems.append(f"the database schema is at {current}, which this code does not know "
                               "(a newer release's?)")
        return section
    if todo:
        status.problems.append(f"the database schema is at {current or 'no revision'}, {len(todo)} migration(s) "
                               f"behind the code ({', '.join(todo)}): fabric-manage db sync")
    return section


def gather(settings: config.Settings, db: Database, *, ctl: queues.Rabbitmqctl | None = None,
           stuck_after: float = DEFAULT_STUCK_AFTER, now: Callable[[], datetime.datetime] = utcnow) -> Status:
    """Everything ``fabric-manage status`` shows, and what of it needs a person."""
    status = Status()
    at = now()
    steps: Sequence[Callable[[], Section]] = (
        lambda: services_section(db, settings, status),
        lambda: queues_section(settings, ctl or queues.Rabbitmqctl(), status),
        lambda: instances_section(db, stuck_after, status, at),
        lambda: capacity_section(db, status),
        lambda: schema_section(db, status),
    )
    for step in steps:
        status.sections.append(step())
    return status
