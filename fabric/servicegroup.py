"""The services registry: who runs where, whether it is up, whether it is enabled.

Every worker's :class:`~fabric.service.Service` registers itself here at start
and heartbeats every ``service.report_interval`` seconds; the scheduler, the
API and ``fabric-manage service list`` read it to learn who is up. A service
is *up* while its last heartbeat is younger than ``service.service_down_time``.

A heartbeat may also carry the fanout messages the worker dropped (a fanout queue has no
dead-letter queue), by reason code, with the time of the last: ``fabric-manage status``
names them (:mod:`fabric.status`). They are the running process's, kept in its memory:
registration resets them, so a restarted worker starts again from none.

Rows are keyed by the unique (host, binary) pair. Writes are race-safe
without row locks: an UPDATE by key first, an INSERT when no row matched, and
on a unique-constraint conflict (another process inserted first) the UPDATE
again.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from typing import Any, Protocol

import sqlalchemy as sa

from fabric.db import Database
from fabric.db.models import Service
from fabric.db.types import utcnow
from fabric.exception import Conflict, Invalid, NotFound

LOG = logging.getLogger(__name__)

#: Seconds without a heartbeat after which a service is down, when no setting is given.
DEFAULT_DOWN_TIME = 60.0

#: Attempts of the update-or-insert dance before giving up (each conflict means
#: another process just inserted the row, so the next UPDATE finds it).
_UPSERT_ATTEMPTS = 5


class _HasHeartbeat(Protocol):
    last_heartbeat: datetime.datetime | None


@dataclasses.dataclass(frozen=True)
class ServiceInfo:
    """One registry entry as read at a moment: the row's fields plus ``up``."""

    id: int
    host: str
    binary: str
    topic: str
    version: str
    address: str
    capabilities: dict[str, Any]
    disabled: bool
    disabled_reason: str | None
    last_heartbeat: datetime.datetime | None
    report_count: int
    created_at: datetime.datetime | None
    up: bool
    #: Fanout messages the running process dropped, by reason code ({} when none).
    fanout_drops: dict[str, int] = dataclasses.field(default_factory=dict)
    #: When the last of them was dropped (the worker's clock).
    fanout_dropped_at: datetime.datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (timestamps as ISO 8601 UTC strings)."""
        data = dataclasses.asdict(self)
        for key in ("last_heartbeat", "created_at", "fanout_dropped_at"):
            if data[key] is not None:
                data[key] = data[key].isoformat() + "Z"
        return data


#: What starts a fanout-drop code counted for every host of the reporting process, not only for
#: the host whose services row carries it (:func:`process_wide`): part of the row's format.
PROCESS_WIDE_PREFIX = "process:"


def process_wide(code: str) -> str:
    """``code`` (a reason a fanout message was dropped, e.g. ``unsigned``) marked as a drop
    for every host of the process that reports it: what a fake-hosts process's fanout server
    refused (:meth:`fabric.sim.fanout.HostFanout.drops_for`). Unmarked codes are the host's own."""
    return PROCESS_WIDE_PREFIX + code


def is_up(service: _HasHeartbeat | None, now: datetime.datetime | None = None, *,
          down_time: float = DEFAULT_DOWN_TIME) -> bool:
    """Whether a service heartbeated within the last ``down_time`` seconds.

    ``service`` is anything with a ``last_heartbeat`` (a registry row, a
    scheduler's host state); ``now`` is naive UTC (default: the current time;
    pass one to judge many services at the same instant). A service that is
    missing (None) or never heartbeated is down.
    """
    if service is None or service.last_heartbeat is None:
        return False
    now = now or utcnow()
    return (now - service.last_heartbeat).total_seconds() <= down_time


def _info(row: Service, now: datetime.datetime, down_time: float) -> ServiceInfo:
    return ServiceInfo(
        id=row.id, host=row.host, binary=row.binary, topic=row.topic, version=row.version or "",
        address=row.address or "", capabilities=dict(row.capabilities or {}),
        disabled=bool(row.disabled), disabled_reason=row.disabled_reason,
        last_heartbeat=row.last_heartbeat, report_count=row.report_count or 0,
        created_at=row.created_at, up=is_up(row, now, down_time=down_time),
        fanout_drops=dict(row.fanout_drops or {}), fanout_dropped_at=row.fanout_dropped_at,
    )


def list_services(db: Database, topic: str | None = None, up_only: bool = False, *,
                  binary: str | None = None, host: str | None = None,
                  down_time: float = DEFAULT_DOWN_TIME,
                  now: datetime.datetime | None = None) -> list[ServiceInfo]:
    """Registered services ordered by (binary, host), optionally filtered.

    ``up_only`` keeps the services whose heartbeat is fresh (disabled ones
    included: being disabled is an operator's choice, not a liveness fact).
    """
    query = sa.select(Service).order_by(Service.binary, Service.host)
    if topic is not None:
        query = query.where(Service.topic == topic)
    if binary is not None:
        query = query.where(Service.binary == binary)
    if host is not None:
        query = query.where(Service.host == host)
    now = now or utcnow()
    with db.begin() as session:
        infos = [_info(row, now, down_time) for row in session.scalars(query)]
    return [info for info in infos if info.up] if up_only else infos


def get_service(db: Database, host: str, binary: str, *,
                down_time: float = DEFAULT_DOWN_TIME) -> ServiceInfo:
    """The registry entry of (host, binary); raises NotFound if none."""
    found = list_services(db, host=host, binary=binary, down_time=down_time)
    if not found:
        raise NotFound(kind="Service", ident=f"{binary} on host {host}")
    return found[0]


def _upsert(db: Database, host: str, binary: str, update: dict[str, Any],
            insert: dict[str, Any]) -> None:
    """UPDATE the (host, binary) row, or INSERT it; safe against concurrent inserts."""
    for _attempt in range(_UPSERT_ATTEMPTS):
        with db.begin() as session:
            result = session.execute(
                sa.update(Service)
                .where(Service.host == host, Service.binary == binary)
                .values(**update)
                .execution_options(synchronize_session=False))
            if result.rowcount:
                return
        try:
            with db.begin() as session:
                session.add(Service(host=host, binary=binary, **insert))
            return
        except sa.exc.IntegrityError:
            # Another process registered the same (host, binary) between our
            # UPDATE and INSERT: its row now exists, so update that one.
            LOG.debug("Service %s on %s was inserted concurrently; updating it", binary, host)
    raise Conflict(reason=f"could not write the registry row of {binary} on host {host}: "
                          f"{_UPSERT_ATTEMPTS} attempts lost a race")


def register(db: Database, *, host: str, binary: str, topic: str, version: str,
             address: str = "", capabilities: dict[str, Any] | None = None) -> None:
    """Record that (host, binary) is starting: its topic, version, address, capabilities.

    Counts as a heartbeat, and clears the fanout drops the previous process reported (a new
    process has dropped none). A disabled service stays disabled across restarts.
    """
    now = utcnow()
    fields = {"topic": topic, "version": version, "address": address,
              "capabilities": dict(capabilities or {}), "last_heartbeat": now}
    # SQL NULL (a JSON column would store None as the JSON document null).
    cleared = {"fanout_drops": sa.null(), "fanout_dropped_at": None}
    _upsert(db, host, binary,
            update={**fields, **cleared, "report_count": Service.report_count + 1, "updated_at": now},
            insert={**fields, "report_count": 1})


def heartbeat(db: Database, *, host: str, binary: str, topic: str,
              capabilities: dict[str, Any] | None = None,
              fanout_drops: dict[str, int] | None = None,
              fanout_dropped_at: datetime.datetime | None = None) -> None:
    """Advance (host, binary)'s heartbeat and report count (re-creating a deleted row).

    ``capabilities``, when given, replace the recorded ones (they changed); so do
    ``fanout_drops`` (the counts by reason code since the worker started) and, with them,
    ``fanout_dropped_at``.
    """
    now = utcnow()
    changed: dict[str, Any] = {} if capabilities is None else {"capabilities": dict(capabilities)}
    if fanout_drops is not None:
        changed.update(fanout_drops=dict(fanout_drops), fanout_dropped_at=fanout_dropped_at)
    _upsert(db, host, binary,
            update={"last_heartbeat": now, "report_count": Service.report_count + 1,
                    "updated_at": now, **changed},
            insert={"topic": topic, "last_heartbeat": now, "report_count": 1, **changed})


def heartbeat_many(db: Database, services: list[tuple[str, str, str]]) -> None:
    """Advance the heartbeat and report count of every (host, binary, topic) in ``services``
    in one UPDATE (rows an operator deleted are re-created, one by one).

    What a process running many services (a few hundred fake hosts, ``fabric-all``) writes
    in place of one transaction per service: at 1,000 hosts of two workers each, 200
    transactions a second became one statement per process and interval.
    """
    if not services:
        return
    now = utcnow()
    keys = sorted({(host, binary) for host, binary, _ in services})
    with db.begin() as session:
        updated = session.execute(
            sa.update(Service).where(sa.tuple_(Service.host, Service.binary).in_(keys))
            .values(last_heartbeat=now, report_count=Service.report_count + 1, updated_at=now)
            .execution_options(synchronize_session=False)).rowcount
        if updated == len(keys):
            return
        present = set(session.execute(sa.select(Service.host, Service.binary)
                                      .where(sa.tuple_(Service.host, Service.binary).in_(keys))).all())
    for host, binary, topic in services:
        if (host, binary) not in present:
            heartbeat(db, host=host, binary=binary, topic=topic)


def set_disabled(db: Database, host: str, binary: str, disabled: bool,
                 reason: str | None = None) -> None:
    """Disable (with a reason) or enable (clearing the reason) a registered service.

    Raises NotFound when (host, binary) is not registered, and Invalid for a
    reason longer than the 255 characters the registry keeps.
    """
    if reason is not None and len(reason) > 255:
        raise Invalid(reason=f"disabled reason is {len(reason)} characters long; at most 255 are kept")
    with db.begin() as session:
        result = session.execute(
            sa.update(Service)
            .where(Service.host == host, Service.binary == binary)
            .values(disabled=disabled, disabled_reason=reason if disabled else None,
                    updated_at=utcnow())
            .execution_options(synchronize_session=False))
        if not result.rowcount:
            raise NotFound(kind="Service", ident=f"{binary} on host {host}")
