"""The cast outbox: casts whose loss would strand a row in a transient state.

A cast sent after its transaction commits is lost if the process dies between the
commit and the broker's confirm: the row waits in ``scheduling`` or ``deleting`` for a
message that never comes. Every such cast is listed in :data:`CASTS` and goes through
an :class:`Outbox` instead:

* :meth:`Outbox.stage` writes it into the ``outbox`` table in the caller's transaction
  (one INSERT, committed or rolled back with the state change; :meth:`Outbox.stage_many`
  writes many casts in one INSERT);
* after the commit, :meth:`Outbox.send` hands it to the relay, which publishes it
  through the worker's own client (the service's ``rpcapi``, so target and routing stay
  there) inside :func:`fabric.rpc.confirmed`, and deletes the row only once the broker
  confirmed it (deletes are batched: one DELETE for the rows confirmed within
  ``DELETE_GATHER`` seconds). The
  happy path costs the INSERT and a share of a DELETE, no other database round trip;
* casts with the same key (the instance) are published one after the other, each only
  after the one before it was confirmed, so they arrive in the order they were staged;
* ``Unroutable`` (no worker consumes the target) is final: the row is deleted and
  :meth:`~Outbox.send` raises it, so the caller can undo its state change as before.
  Any other failure (no broker, no confirm in time) keeps the row: the relay sends it
  again every :data:`SWEEP_INTERVAL` seconds until confirmed;
* the writer holds its rows for a lease (:data:`LEASE_SECONDS`, renewed while it still
  holds unconfirmed ones). A process killed between commit and confirm leaves its rows;
  the next start of a worker of the same kind takes over every row of its kind at once
  (:meth:`Outbox.start`), and a running relay's periodic sweep takes rows of its kind
  whose lease ran out (their writer is gone).

A cast may therefore arrive twice (re-sent by a new writer after its first copy was
confirmed but before the row was deleted): every handler named here is idempotent.

Fault injection, for tests only: the environment variable
``OUTBOX_KILL_AFTER_COMMIT=<cast name>`` (read once, here) makes
:meth:`Outbox.send` kill its own process with SIGKILL right before publishing that
cast, after its transaction committed and before any confirm. (Not a ``FABRIC_``
variable: those are settings, and the launchers refuse ones they do not know.)
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import logging
import os
import signal
import socket
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import eventlet
import eventlet.event
import sqlalchemy as sa
from sqlalchemy import orm

from fabric.context import RequestContext
from fabric.db import Database
from fabric.db.models import OutboxCast
from fabric.db.types import utcnow
from fabric.exception import Unroutable
from fabric.rpc.client import confirmed

LOG = logging.getLogger(__name__)

#: Seconds a writer holds its rows before another relay of its kind may take them over.
LEASE_SECONDS = 10.0
#: Seconds between a running relay's retries, lease renewals and sweeps.
SWEEP_INTERVAL = 2.0
#: Seconds a publish waits for the broker's confirm before the relay tries again later.
CONFIRM_TIMEOUT = 5.0

#: Seconds the deleter waits for more confirms to join its DELETE. Measured with
#: tools/bench/storm.py, the API spent 7% of its time deleting outbox rows, about one row
#: per statement; a row confirmed and not yet deleted costs nothing unless its writer dies
#: meanwhile (it is then sent again, harmlessly).
DELETE_GATHER = 0.2
#: Tries of a DELETE of confirmed rows before they are left to the lease (and sent again).
_DELETE_ATTEMPTS = 5

_KILL_AFTER_COMMIT = os.environ.get("OUTBOX_KILL_AFTER_COMMIT", "")

_outbox = OutboxCast.__table__
# The statements are built once: building one per cast (and its cache key) cost a scheduler
# worker more CPU than the INSERT itself (py-spy of tools/bench/scheduler.py: a sixth of it).
# The table's, not the entity's: an ORM session then runs them as they are, without its bulk-insert layer.
_INSERT = sa.insert(_outbox)
_INSERT_RETURNING_IDS = sa.insert(_outbox).returning(_outbox.c.id, sort_by_parameter_order=True)
_DELETE = sa.delete(_outbox).where(_outbox.c.id.in_(sa.bindparam("ids", expanding=True)))


@dataclasses.dataclass(frozen=True)
class OutboxedCast:
    """A cast that goes through the outbox: who writes it, how it is sent, what its loss strands."""

    #: The kind of worker that stages it (and whose next start sends it if the writer died).
    kind: str
    #: The attribute of the outbox's ``senders`` holding the client, and the method called on it.
    sender: str
    method: str
    #: The keyword argument giving the order key (the instance; first item of a list).
    key: str
    #: The row state a lost copy would leave behind.
    strands: str


#: Every cast whose loss would leave a row in a transient state: the one list.
CASTS: dict[str, OutboxedCast] = {
    # fabric.api.compute.servers: POST /servers.
    "api.schedule": OutboxedCast("api", "scheduler", "build_instances", "instance_ids",
                                 "new servers in building/scheduling that no scheduler places"),
    # fabric.compute.api.ComputeService: every server action and the delete of a placed server.
    "api.instance_action": OutboxedCast("api", "compute", "instance_action", "instance_id",
                                        "a server in a task state (rebooting, powering-off, pausing, "
                                        "deleting, rebuilding, resize_prep, image_snapshot...) its host "
                                        "never hears of"),
    # fabric.scheduler.manager: the build cast to the chosen host, committed with the claim.
    "scheduler.build": OutboxedCast("scheduler", "compute", "build_instance", "instance_id",
                                    "a placed server in building/scheduling that its host never builds"),
    # fabric.compute.collaborators.SchedulerRescheduler: a failed build handed back.
    "compute.reschedule": OutboxedCast("compute", "scheduler", "schedule_and_build", "instance_id",
                                       "a failed build back in scheduling that no scheduler places again"),
    # fabric.compute.moves: the source host hands a resized/migrated server to its destination,
    # and the destination of a revert hands it back, each committed with the host swap.
    "compute.finish_resize": OutboxedCast("compute", "compute", "finish_resize", "instance_id",
                                          "a server in resize_migrated whose destination never starts it"),
    "compute.finish_revert_resize": OutboxedCast("compute", "compute", "finish_revert_resize", "instance_id",
                                                 "a server in resize_reverting whose source never restores it"),
    # fabric.compute.moves: a server deleted mid-move has its move's source drop the set-aside guest.
    "compute.drop_set_aside": OutboxedCast("compute", "compute", "drop_set_aside", "instance_id",
                                           "a deleted server's set-aside disk left on the source of its move"),
}


class StagedCast:
    """One cast in the outbox (what :meth:`Outbox.stage` returns, for :meth:`Outbox.send`)."""

    __slots__ = ("id", "cast", "key", "payload", "done", "error")

    def __init__(self, ident: int, cast: str, key: str, payload: dict[str, Any]) -> None:
        self.id = ident
        self.cast = cast
        self.key = key
        self.payload = payload
        #: Sent once its fate is known to the writer: confirmed, unroutable, or left to retries.
        self.done = eventlet.event.Event()
        self.error: Exception | None = None


def _key_of(spec: OutboxedCast, kwargs: dict[str, Any]) -> str:
    value = kwargs[spec.key]
    if isinstance(value, list | tuple):
        value = value[0] if value else ""
    return str(value)


class Outbox:
    """The outbox and relay of one worker kind in one process (see the module docstring).

    ``senders`` has one attribute per :attr:`OutboxedCast.sender` of this ``kind``'s casts
    (looked up at each send, so a replaced client is used at once).
    """

    def __init__(self, db: Database, kind: str, senders: Any, *, host: str | None = None,
                 lease: float = LEASE_SECONDS, confirm_timeout: float = CONFIRM_TIMEOUT,
                 sweep_interval: float = SWEEP_INTERVAL) -> None:
        if kind not in {spec.kind for spec in CASTS.values()}:
            raise ValueError(f"outbox kind {kind!r}: known kinds are "
                             f"{', '.join(sorted({s.kind for s in CASTS.values()}))}")
        self.db = db
        self.kind = kind
        self.senders = senders
        self.lease = lease
        self.confirm_timeout = confirm_timeout
        self.sweep_interval = sweep_interval
        #: Who holds the rows this relay writes or took over (unique per process and outbox).
        self.writer = f"{kind}@{host or socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._queues: dict[str, collections.deque[StagedCast]] = {}
        #: Keys whose head failed to send: retried by the sweep, in order.
        self._stalled: set[str] = set()
        self._held: dict[int, StagedCast] = {}
        self._to_delete: list[int] = []
        self._deleter: Any = None
        self._loop: Any = None
        self._stopping = eventlet.event.Event()
        #: Casts published and confirmed, and rows taken over from other writers (for tests and logs).
        self.sent = 0
        self.taken_over = 0

    # --- the writer's side -------------------------------------------------------

    def stage(self, session: orm.Session | sa.Connection, cast: str, ctx: RequestContext,
              **kwargs: Any) -> StagedCast:
        """Write ``cast`` (a name in :data:`CASTS`) with ``kwargs`` into the caller's transaction.

        Raises ValueError for a cast not listed or of another kind; ``kwargs`` must be
        JSON-serialisable. Send the result with :meth:`send` after the commit.
        """
        return self.stage_many(session, [(cast, ctx, kwargs)])[0]

    def stage_many(self, session: orm.Session | sa.Connection,
                   casts: Sequence[tuple[str, RequestContext, dict[str, Any]]]) -> list[StagedCast]:
        """:meth:`stage` for many ``(cast, ctx, kwargs)``, in one INSERT where the backend can
        return the new rows' ids in order (PostgreSQL, SQLite, MariaDB): their staged casts, in
        the order given (which is the order casts with the same key are sent in).

        Raises ValueError, writing nothing, if any cast is not one of this outbox's.
        """
        now = utcnow()
        lease_until = now + datetime.timedelta(seconds=self.lease)
        rows: list[dict[str, Any]] = []
        for cast, ctx, kwargs in casts:
            spec = CASTS.get(cast)
            if spec is None or spec.kind != self.kind:
                raise ValueError(f"cast {cast!r} is not one of the {self.kind} outbox's: "
                                 f"{', '.join(n for n, s in CASTS.items() if s.kind == self.kind)}")
            rows.append({"kind": self.kind, "writer": self.writer, "cast": cast, "key": _key_of(spec, kwargs),
                         "payload": {"context": ctx.to_dict(), "kwargs": kwargs}, "created_at": now,
                         "lease_until": lease_until})
        if not rows:
            return []
        dialect = session.dialect if isinstance(session, sa.Connection) else session.get_bind().dialect
        if len(rows) > 1 and dialect.insert_executemany_returning_sort_by_parameter_order:
            ids = list(session.execute(_INSERT_RETURNING_IDS, rows).scalars())
        else:
            ids = [session.execute(_INSERT, row).inserted_primary_key[0] for row in rows]
        return [StagedCast(ident, row["cast"], row["key"], row["payload"]) for ident, row in zip(ids, rows, strict=True)]

    @staticmethod
    def unstage(session: orm.Session | sa.Connection, staged: Sequence[StagedCast]) -> None:
        """Take back, in the transaction that staged them, casts :meth:`stage` wrote there and
        the caller no longer wants (never sent: they are not committed yet)."""
        if staged:
            session.execute(_DELETE, {"ids": [cast.id for cast in staged]})

    def send(self, *staged: StagedCast) -> None:
        """Publish committed casts (from :meth:`stage`) in order; return once each was confirmed,
        or found unroutable, or left to the relay's retries (no broker, no confirm in time).

        Raises the first ``Unroutable``: that cast's row is gone and will not be sent, so the
        caller undoes its state change. Raises nothing else: the relay keeps trying the rest.
        """
        entries = list(staged)
        if _KILL_AFTER_COMMIT and any(entry.cast == _KILL_AFTER_COMMIT for entry in entries):
            LOG.warning("OUTBOX_KILL_AFTER_COMMIT=%s: killing this process after the commit",
                        _KILL_AFTER_COMMIT)
            os.kill(os.getpid(), signal.SIGKILL)
        self._enqueue(entries, run_here=True)
        for entry in entries:
            entry.done.wait()
            if entry.error is not None:
                raise entry.error

    # --- the relay -----------------------------------------------------------------

    def _enqueue(self, entries: Iterable[StagedCast], *, run_here: bool = False) -> None:
        """Queue entries behind their key's earlier ones; start a runner per idle key
        (in this green thread with ``run_here``: the writer publishes its own casts)."""
        idle: list[str] = []
        for entry in entries:
            if entry.id in self._held:
                continue
            self._held[entry.id] = entry
            queue = self._queues.get(entry.key)
            if queue is None:
                queue = self._queues[entry.key] = collections.deque()
                idle.append(entry.key)
            elif entry.key in self._stalled:
                entry.done.send(None)  # behind a cast that waits for the broker: left to the relay
            queue.append(entry)
        for key in idle:
            if run_here:
                self._run(key)
            else:
                eventlet.spawn_n(self._run, key)

    def _run(self, key: str) -> None:
        """Publish ``key``'s queue head first, each after the one before was confirmed."""
        queue = self._queues[key]
        while queue:
            entry = queue[0]
            if not self._publish(entry):
                self._stalled.add(key)
                for waiting in queue:
                    if not waiting.done.ready():
                        waiting.done.send(None)
                return
            queue.popleft()
        del self._queues[key]

    def _publish(self, entry: StagedCast) -> bool:
        """Send one cast and wait for its confirm; False to try it again later."""
        spec = CASTS[entry.cast]
        try:
            sender = getattr(getattr(self.senders, spec.sender), spec.method)
            with confirmed(self.confirm_timeout):
                sender(RequestContext.from_dict(entry.payload["context"]), **entry.payload["kwargs"])
        except Unroutable as exc:
            LOG.error("Outbox cast %s %d (key %s) is unroutable; dropped: %s", entry.cast, entry.id, entry.key,
                      exc.message)
            entry.error = exc
        except Exception as exc:  # noqa: BLE001 - kept and sent again; the reason is logged
            LOG.warning("Outbox cast %s %d (key %s) not confirmed; retried in %gs: %s", entry.cast, entry.id,
                        entry.key, self.sweep_interval, exc)
            return False
        else:
            self.sent += 1
        self._held.pop(entry.id, None)
        self._to_delete.append(entry.id)
        if self._deleter is None:
            self._deleter = eventlet.spawn(self._delete_confirmed)
        if not entry.done.ready():
            entry.done.send(None)
        return True

    def _delete_confirmed(self) -> None:
        """Delete confirmed rows, many per statement (those confirmed while the last ran)."""
        failures = 0
        try:
            self._stopping.wait(DELETE_GATHER)  # let more confirms join one DELETE (not once stopping)
            while self._to_delete:
                ids, self._to_delete = self._to_delete, []
                try:
                    with self.db.engine.begin() as conn:
                        conn.execute(_DELETE, {"ids": ids})
                except Exception as exc:  # noqa: BLE001 - a row left behind is only sent again
                    failures += 1
                    if failures >= _DELETE_ATTEMPTS:
                        LOG.error("Gave up deleting %d confirmed outbox rows (they will be sent again, "
                                  "harmlessly, when their lease ends): %s", len(ids), exc)
                        return
                    LOG.warning("Could not delete %d confirmed outbox rows (retrying): %s", len(ids), exc)
                    self._to_delete[:0] = ids
                    if self._stopping.wait(self.sweep_interval):
                        return
        finally:
            self._deleter = None

    def start(self) -> None:
        """Take over every row of this kind (their writers are gone: this worker just started,
        or are alive and the copies they send are harmless), send them, and keep retrying,
        renewing leases and sweeping up rows whose writer's lease ran out."""
        if self._loop is None:
            self._take_over(every=True)
            self._loop = eventlet.spawn(self._relay_loop)

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the relay after deleting what was confirmed (rows left are sent by the next start)."""
        if self._stopping.ready():
            return
        self._stopping.send(True)
        if self._loop is not None:
            self._loop.wait()
            self._loop = None
        if self._to_delete and self._deleter is None:
            self._deleter = eventlet.spawn(self._delete_confirmed)
        if self._deleter is not None:
            with eventlet.Timeout(timeout, False):
                self._deleter.wait()

    def _relay_loop(self) -> None:
        while self._stopping.wait(self.sweep_interval) is not True:
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - the next sweep tries again
                LOG.exception("Outbox sweep of %s failed", self.writer)

    def sweep(self) -> None:
        """One round: re-send stalled casts, renew this writer's leases, take over expired rows."""
        for key in list(self._stalled):
            self._stalled.discard(key)
            eventlet.spawn_n(self._run, key)
        if self._held:
            with self.db.begin() as session:
                session.execute(sa.update(OutboxCast).where(OutboxCast.writer == self.writer)
                                .values(lease_until=utcnow() + datetime.timedelta(seconds=self.lease)))
        self._take_over(every=False)

    def _take_over(self, *, every: bool) -> None:
        """Make this relay the writer of its kind's rows (all, or those whose lease ran out) and queue them."""
        now = utcnow()
        condition = [OutboxCast.kind == self.kind, OutboxCast.writer != self.writer]
        if not every:
            condition.append(OutboxCast.lease_until < now)
        with self.db.begin() as session:
            moved = session.execute(sa.update(OutboxCast).where(*condition).values(
                writer=self.writer, lease_until=now + datetime.timedelta(seconds=self.lease))
                .execution_options(synchronize_session=False)).rowcount
            if not moved:
                return
            rows = session.execute(sa.select(OutboxCast.id, OutboxCast.cast, OutboxCast.key, OutboxCast.payload)
                                   .where(OutboxCast.writer == self.writer).order_by(OutboxCast.id)).all()
        self.taken_over += moved
        LOG.warning("%s took over %d outbox cast(s) whose writer is gone; sending them", self.writer, moved)
        entries = [StagedCast(row.id, row.cast, row.key, row.payload) for row in rows
                   if row.id not in self._held and row.id not in self._to_delete and row.cast in CASTS]
        self._enqueue(entries)


def pending(db: Database, kinds: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The outbox rows not yet confirmed (oldest first), for operators and tests."""
    query = sa.select(OutboxCast).order_by(OutboxCast.id)
    if kinds is not None:
        query = query.where(OutboxCast.kind.in_(kinds))
    with db.begin() as session:
        return [{"id": row.id, "kind": row.kind, "writer": row.writer, "cast": row.cast, "key": row.key,
                 "payload": row.payload, "created_at": row.created_at, "lease_until": row.lease_until}
                for row in session.scalars(query)]
