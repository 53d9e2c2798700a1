"""The scheduler worker's RPC endpoint: place instances, reschedule failed builds.

``schedule_and_build`` (a cast) places one instance and casts the chosen
compute host's ``build_instance``; a compute worker whose build failed casts
it again with ``failed_host``, which gives the host's claim back, records
the failure and tries another host, up to ``[scheduler] max_attempts``.
Every outcome is on the instance row: a host, or ``error`` with a fault.
Handlers are idempotent: a redelivered message for an instance that already
has a host (or is no longer building) changes nothing.

First placements that arrive while a decision runs are decided together
next, up to ``[scheduler] batch_size`` at once: one read of their instances,
one claim transaction (their build casts written in one INSERT) and one
commit for all (a reschedule, a member of a server group other than
anti-affinity, and anything the batch cannot place are decided one by one).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from fabric import exception, heap, metrics
from fabric.compute import states
from fabric.config import Settings
from fabric.context import RequestContext
from fabric.db import Database
from fabric.manager import Manager, callers_table
from fabric.rpc.outbox import Outbox, StagedCast
from fabric.scheduler import claims
from fabric.scheduler.request import ANTI_AFFINITY, RequestSpec, load_instance_request, load_instance_requests
from fabric.scheduler.scheduler import Scheduler

LOG = logging.getLogger(__name__)

#: Decision latencies kept for ``decision_stats`` (the most recent ones).
_LATENCIES_KEPT = 100_000

#: Writes the build cast of one instance, chosen ``host``, in the claim's transaction on ``conn``.
Stage = Callable[[Any, str], StagedCast]


class _Waiting:
    """A first placement waiting for its batch: what it needs, then what came of it."""

    __slots__ = ("instance_id", "ctx", "wake", "done", "host", "staged", "error")

    def __init__(self, instance_id: str, ctx: RequestContext) -> None:
        self.instance_id = instance_id
        #: The request's context, which its build cast carries.
        self.ctx = ctx
        #: Set when done, or to lead the next batch (not done then).
        self.wake = threading.Event()
        self.done = False
        self.host: str | None = None
        self.staged: list[StagedCast] = []
        self.error: BaseException | None = None

    def finish(self, host: str | None = None, staged: list[StagedCast] | None = None,
               error: BaseException | None = None) -> None:
        self.done, self.host, self.staged, self.error = True, host, staged or [], error
        self.wake.set()


class ComputeBuildClient(Protocol):
    """How the scheduler asks a compute host to build a placed instance."""

    def build_instance(self, ctx: RequestContext, host: str, instance_id: str) -> None:
        """Ask ``host`` to build ``instance_id``; raises MessagingError (e.g. Unroutable) if it cannot be asked."""


class SchedulerManager(Manager):
    """Server side of :mod:`fabric.scheduler.rpcapi`; same method names."""

    topic = "scheduler"
    #: Who may call each handler (checked on the message's signature before dispatch).
    rpc_callers = callers_table(schedule_and_build=("api", "compute"), select_destinations=("api",),
                                decision_stats=("api",), claim_move_destination=("compute",))

    def __init__(self, settings: Settings, host: str | None = None, db: Database | None = None,
                 transport: Any = None, *, compute: ComputeBuildClient | None = None) -> None:
        super().__init__(settings, host=host, db=db, transport=transport)
        if db is None:
            self.db = Database.from_settings(settings)
        self.scheduler = Scheduler(settings, self.db)
        self._compute = compute
        # However many messages are in flight, only this many decisions run at once:
        # that bounds the pool (and the database's connections), and more concurrent
        # decisions only lose more claims to each other (see the option's help).
        self._decision_slots = threading.BoundedSemaphore(settings.scheduler.max_concurrent_decisions)
        # First placements waiting for a batch, oldest first, and whether one is being decided.
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._batch_lock = threading.Lock()
        self._batch_running = False
        self.latencies_ms: collections.deque[float] = collections.deque(maxlen=_LATENCIES_KEPT)
        self.outcomes: collections.Counter[str] = collections.Counter()
        #: The build casts, committed with their claims; its ``compute`` sender is :attr:`compute`.
        self.outbox = Outbox(self.db, "scheduler", self, host=self.host)

    @property
    def compute(self) -> ComputeBuildClient:
        if self._compute is None:
            # The RPC layer is only needed once a real compute host is asked.
            from fabric.compute.rpcapi import ComputeAPI

            self._compute = ComputeAPI(self.transport)
        return self._compute

    def init_host(self) -> None:
        """Read every host before the first message, then move what lives as long as the process
        out of the collector's generations.

        The first decision then does not pay the full read (1,000 hosts: tens of ms, inside its
        latency), only a read of what changed since: a host that came up after this read (a cloud
        starting, workers in any order) is seen by the first decision, not refused as down by a
        read up to ``host_refresh_interval`` old. And without the freeze every full collection walks again the modules, SQLAlchemy's
        statements and the host states: 90-450 ms of a decision's wall time each, twice per worker
        in a scheduler benchmark's run of 10,000 decisions (load 11-17).
        """
        try:
            self.scheduler.cache.hosts()
            self.scheduler.cache.due()
        except Exception:  # noqa: BLE001 - the first decision reads them again, and says why it cannot
            LOG.exception("Could not read the compute hosts at start; the first decision will")
        heap.freeze_startup_objects()

    def capabilities(self) -> dict[str, Any]:
        return {"filters": [f.name for f in self.scheduler.filters],
                "weighers": [w.name for w in self.scheduler.weighers]}

    # --- handlers -------------------------------------------------------------

    def schedule_and_build(self, ctx: RequestContext, instance_id: str,
                           failed_host: str | None = None, reason: str | None = None) -> None:
        """Place ``instance_id`` and ask its host to build it.

        With ``failed_host`` the build failed there (``reason`` says why): the
        claim on that host is given back and another host is tried, unless
        ``max_attempts`` hosts were tried already, in which case the instance
        goes to error with a fault naming them. No valid host: error with a
        fault saying how many hosts each filter removed.

        A repeated request for an instance placed but not yet taken up by its
        compute host (a worker died between its claim and its cast) asks that
        host again; any other repeat changes nothing.
        """
        while True:
            if failed_host is not None:
                claims.release(self.db, instance_id, failed_host, failed_build=True)
                LOG.info("instance %s: build failed on %s (%s); rescheduling", instance_id, failed_host, reason)
            if failed_host is None:
                host, staged = self._decide_in_batch(_Waiting(instance_id, ctx))
            else:
                host, staged = self._decide(instance_id, reason=reason, stage=self._stage_one(ctx, instance_id))
            if host is None:
                return
            try:
                if staged:
                    self.outbox.send(*staged)
                else:  # an older claim: this redelivered request is its durable copy
                    self.compute.build_instance(ctx, host, instance_id)
                return
            except exception.MessagingError as exc:
                # Nobody consumes compute.<host> (or the broker refused): a failed build like any other.
                failed_host, reason = host, f"could not reach compute on {host}: {exc.message}"

    def select_destinations(self, ctx: RequestContext, request_spec: dict[str, Any],
                            limit: int | None = None) -> list[dict[str, Any]]:
        """The hosts that fit ``request_spec`` (a RequestSpec as a dict), best first; claims nothing.

        Raises Invalid for a malformed spec and NoValidHost (with per-filter
        counts) when nothing fits.
        """
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise exception.Invalid(reason=f"limit {limit!r}: expected a whole number >= 1 or none")
        spec = RequestSpec.from_dict(request_spec)
        return [{"host": host, "weight": weight} for weight, host in self.scheduler.select(spec, limit=limit)]

    def claim_move_destination(self, ctx: RequestContext, migration_id: str) -> str:
        """Choose and claim the destination of a resize or cold migration; its host name.

        The migration's new flavor is claimed on a host that passes the filters, other
        than the source unless ``allow_resize_to_same_host`` (a migration with a requested
        host tries that host only). Idempotent: a migration that has its destination
        already answers it. Raises NoValidHost (naming why) when nothing fits,
        InstanceStateConflict when the migration no longer waits for a destination.
        """
        from fabric.compute import migrations

        move = migrations.get(self.db, migration_id)
        if move["dest_host"] is not None:
            return move["dest_host"]
        if move["status"] != migrations.PRE_MIGRATING:
            raise exception.InstanceStateConflict(instance=move["instance_id"], attr="migration status",
                                                  actual=move["status"], expected=[migrations.PRE_MIGRATING])
        with self.db.engine.connect() as conn:
            spec = load_instance_request(conn, move["instance_id"]).spec
        new = move["new_flavor"]
        spec.vcpus, spec.memory_mb, spec.disk_gb = new["vcpus"], new["memory_mb"], new["disk_gb"]
        spec.ignore_hosts = set()
        spec.group_id = spec.group_policy = None  # a move keeps its group's slot (not re-checked)
        if not self.settings.scheduler.allow_resize_to_same_host:
            spec.ignore_hosts.add(move["source_host"])
        with self._decision_slots:
            ranked = [host for _weight, host in self.scheduler.select(spec)]
            wanted = move["requested_host"]
            if wanted is not None:
                ranked = [host for host in ranked if host == wanted]
                if not ranked:
                    raise exception.NoValidHost(reason=f"the requested host {wanted} does not pass the filters "
                                                       f"(down, disabled, full, or the server's own host)")
            for host in ranked:
                try:
                    if not claims.claim_move(self.db, migration_id, host, new, self.scheduler.ratios):
                        return migrations.get(self.db, migration_id)["dest_host"] or host
                except claims.ClaimLost:
                    self.scheduler.claims_lost += 1
                    self.scheduler.cache.refresh_host(host)
                    continue
                self.scheduler.cache.refresh_host(host)
                LOG.info("migration %s of instance %s: destination %s", migration_id, move["instance_id"], host)
                return host
        raise exception.NoValidHost(reason="every fitting host was claimed by others first")

    def decision_stats(self, ctx: RequestContext, reset: bool = False) -> dict[str, Any]:
        """This worker's decision latencies (ms), outcome counts, lost claims and cache reads."""
        stats = {"host": self.host, "latencies_ms": list(self.latencies_ms),
                 "outcomes": dict(self.outcomes), "claims_lost": self.scheduler.claims_lost,
                 "rows_read": self.scheduler.cache.rows_read}
        if reset:
            self.latencies_ms.clear()
            self.outcomes.clear()
        return stats

    # --- the decision -----------------------------------------------------------

    def _decide_in_batch(self, me: _Waiting) -> tuple[str | None, list[StagedCast]]:
        """:meth:`_decide` for a first placement, together with those waiting beside it.

        The first to arrive while no batch runs leads one: it takes the oldest
        waiting (itself first), decides them, and hands the lead to the next in line.
        """
        with self._batch_lock:
            self._waiting.append(me)
            leading = not self._batch_running
            self._batch_running = True
        if not leading:
            me.wake.wait()
        if not me.done:  # leading: first in line
            try:
                with self._decision_slots:
                    count = min(self.settings.scheduler.batch_size, len(self._waiting))
                    self._decide_batch([self._waiting.popleft() for _ in range(count)])
            finally:
                with self._batch_lock:
                    if self._waiting:
                        self._waiting[0].wake.set()
                    else:
                        self._batch_running = False
        if me.error is not None:
            raise me.error
        return me.host, me.staged

    def _decide_batch(self, batch: list[_Waiting]) -> None:
        """Decide every waiting placement of ``batch``; each finishes with its host (None: nothing
        to build) or with the error that stopped the batch (re-raised in its own handler)."""
        started = time.perf_counter()
        try:
            self._decide_batch_now(batch, started)
        except BaseException as exc:
            for waiting in batch:
                if not waiting.done:
                    waiting.finish(error=exc)
            raise

    def _decide_batch_now(self, batch: list[_Waiting], started: float) -> None:
        one_by_one: list[_Waiting] = []
        together: dict[str, _Waiting] = {}
        with self.db.engine.connect() as conn:
            requests = load_instance_requests(conn, list({waiting.instance_id for waiting in batch}))
            for waiting in batch:
                request = requests.get(waiting.instance_id)
                if (request is None or waiting.instance_id in together
                        or request.spec.group_id is not None and request.spec.group_policy != ANTI_AFFINITY
                        or not self._waiting_for_host(request)
                        or request.spec.attempts >= self.settings.scheduler.max_attempts):
                    one_by_one.append(waiting)  # whatever it is, the decision of one says it
                else:
                    together[waiting.instance_id] = waiting
            if together:
                # Kept here until the claim commits: a claim rolled back leaves nothing to send.
                staged: dict[str, StagedCast] = {}

                def stage(conn: Any, claimed: list[claims.Placement]) -> None:
                    ids = [placement.spec.instance_id or "" for placement in claimed]
                    casts = self._stage_builds(conn, [(together[iid].ctx, iid, placement.host.host)
                                                      for iid, placement in zip(ids, claimed, strict=True)])
                    staged.update(zip(ids, casts, strict=True))

                def unstage(conn: Any, dropped: list[claims.Placement]) -> None:
                    self.outbox.unstage(conn, [staged.pop(placement.spec.instance_id or "") for placement in dropped])

                def finish(placed: dict[str, str]) -> None:
                    # Committed with their casts: done, whatever later rounds of the batch bring.
                    elapsed = time.perf_counter() - started
                    for instance_id, host in placed.items():
                        self._placed(elapsed)
                        LOG.info("instance %s placed on %s (one of %d decided together)",
                                 instance_id, host, len(together))
                        together[instance_id].finish(host, [staged[instance_id]])

                _placed, left = self.scheduler.place_many(
                    [requests[instance_id].spec for instance_id in together], conn, stage, finish, unstage)
                one_by_one += [together[spec.instance_id or ""] for spec in left]
        for waiting in one_by_one:
            waiting.finish(*self._decide_now(waiting.instance_id, reason=None,
                                             stage=self._stage_one(waiting.ctx, waiting.instance_id),
                                             started=started))

    def _stage_builds(self, conn: Any, builds: list[tuple[RequestContext, str, str]]) -> list[StagedCast]:
        """Write the build cast of each (context, instance id, chosen host) in the claim's
        transaction on ``conn``, in one INSERT: a crash before the broker confirms them
        leaves them for the next scheduler to send (fabric.rpc.outbox), never a stranded claim."""
        return self.outbox.stage_many(conn, [("scheduler.build", ctx, {"host": host, "instance_id": instance_id})
                                             for ctx, instance_id, host in builds])

    def _stage_one(self, ctx: RequestContext, instance_id: str) -> Stage:
        """The :data:`Stage` of one instance's build cast (a decision of one)."""
        return lambda conn, host: self._stage_builds(conn, [(ctx, instance_id, host)])[0]

    @staticmethod
    def _waiting_for_host(request: Any) -> bool:
        return (request.host is None and not request.deleted and request.vm_state == states.BUILDING
                and request.task_state == states.SCHEDULING)

    def _placed(self, elapsed: float) -> None:
        self.latencies_ms.append(elapsed * 1000.0)
        self.outcomes["placed"] += 1
        metrics.SCHEDULER_DECISIONS.labels("placed").inc()
        metrics.SCHEDULER_DECISION_SECONDS.observe(elapsed)

    def _decide(self, instance_id: str, *, reason: str | None,
                stage: Stage) -> tuple[str | None, list[StagedCast]]:
        """Claim a host for the instance, or put it in error: the host (None when there is
        nothing to build) and the build cast ``stage(conn, host)`` wrote with the claim, if any."""
        with self._decision_slots:
            return self._decide_now(instance_id, reason=reason, stage=stage)

    def _decide_now(self, instance_id: str, *, reason: str | None, stage: Stage,
                    started: float | None = None) -> tuple[str | None, list[StagedCast]]:
        # The latency recorded is the decision's own: from its turn (``started``: its batch's) to its outcome.
        if started is None:
            started = time.perf_counter()
        staged: list[StagedCast] = []

        def also(conn: Any, host: str) -> None:
            staged.append(stage(conn, host))

        # One connection for the read and the claim: one pool checkout per decision.
        with self.db.engine.connect() as conn:
            try:
                request = load_instance_request(conn, instance_id)
            except exception.NotFound:
                LOG.info("instance %s is gone; nothing to schedule", instance_id)
                self.outcomes["gone"] += 1
                return None, []
            if (request.host is not None and not request.deleted and request.task_state == states.SCHEDULING
                    and request.vm_state == states.BUILDING):
                LOG.info("instance %s already holds a claim on %s; asking that host to build it again",
                         instance_id, request.host)
                self.outcomes["build_resent"] += 1
                return request.host, []
            if request.deleted or request.vm_state != states.BUILDING or request.host is not None:
                LOG.info("instance %s needs no host (vm_state %s, host %s); ignoring a repeated request",
                         instance_id, request.vm_state, request.host)
                self.outcomes["not_waiting"] += 1
                return None, []
            spec = request.spec
            max_attempts = self.settings.scheduler.max_attempts
            if spec.attempts >= max_attempts:
                error: exception.FabricError = exception.BuildAttemptsExhausted(
                    instance=instance_id, attempts=len(request.failed_hosts),
                    hosts=", ".join(request.failed_hosts) or "none", max_attempts=max_attempts,
                    reason=reason or "unknown")
            else:
                try:
                    host = self.scheduler.place(spec, conn, also)
                except exception.NoValidHost as no_host:
                    metrics.SCHEDULER_DECISIONS.labels("no_valid_host").inc()
                    error = no_host
                    if request.failed_hosts:
                        error = exception.NoValidHost(
                            reason=f"{no_host.fields.get('reason')}; builds failed before on "
                                   f"{', '.join(request.failed_hosts)}: {reason or 'unknown'}")
                except exception.InstanceStateConflict:
                    self.outcomes["not_waiting"] += 1
                    return None, []
                else:
                    self._placed(time.perf_counter() - started)
                    LOG.info("instance %s placed on %s (attempt %d)", instance_id, host, spec.attempts + 1)
                    return host, staged
        self._fail(instance_id, error, started)
        return None, []

    def _fail(self, instance_id: str, error: exception.FabricError, started: float) -> None:
        if claims.fail_instance(self.db, instance_id, error):
            LOG.warning("instance %s: %s", instance_id, error.message)
            self.outcomes["error"] += 1
        else:
            self.outcomes["not_waiting"] += 1
        self.latencies_ms.append((time.perf_counter() - started) * 1000.0)
