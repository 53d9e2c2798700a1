"""One placement decision: filter, weigh, then claim the best host that still fits.

The host list comes from the process's :class:`HostStateCache`; the claim
in the database decides. A claim lost to another scheduler refreshes that
host and moves on to the next candidate; a lost group slot re-reads the
group and filters again. Many requests may be decided together
(:meth:`Scheduler.place_many`): each chooses in turn, counting the choices
before it, and all are claimed in one transaction.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from fabric import exception
from fabric.config import Settings
from fabric.db import Database
from fabric.scheduler import claims
from fabric.scheduler.filters import describe_removals, load_filters, run_filters
from fabric.scheduler.filters.resources import fitting_hosts
from fabric.scheduler.host_state import HostState, HostStateCache, read_connection
from fabric.scheduler.request import RequestSpec, load_group_hosts
from fabric.scheduler.weighers import load_weighers, weigh_hosts

LOG = logging.getLogger(__name__)

#: Candidates tried per round before the host list is filtered again.
CLAIM_TRIES_PER_ROUND = 8
#: Rounds of filter-weigh-claim before giving up on a request that keeps losing races.
MAX_ROUNDS = 6
#: Claim transactions of one batch (:meth:`Scheduler.place_many`) at most: a placement
#: the first leaves out is chosen again with fresh rows rather than decided alone (one
#: transaction, one request read and one commit of its own each: ~8% of placements).
BATCH_ROUNDS = 3


class Scheduler:
    """Filters, weighers and the host cache of one scheduler process."""

    def __init__(self, settings: Settings, db: Database, *, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.db = db
        self.filters = load_filters(settings.scheduler.filters, db)
        self.weighers = load_weighers(settings.scheduler)
        self.cache = HostStateCache(db, settings.scheduler, settings.service.service_down_time)
        self.ratios = claims.Ratios(ram=settings.scheduler.ram_allocation_ratio,
                                    cpu=settings.scheduler.cpu_allocation_ratio,
                                    disk=settings.scheduler.disk_allocation_ratio)
        self.rng = rng
        #: Claims lost to other schedulers since start (a measure of contention).
        self.claims_lost = 0

    def select(self, spec: RequestSpec, *, limit: int | None = None) -> list[tuple[float, str]]:
        """The hosts that fit ``spec``, best first, with their weights; nothing is claimed.

        Raises NoValidHost saying how many hosts each filter removed.
        """
        return [(weight, host.host) for weight, host in self._ranked(spec, limit)]

    def _ranked(self, spec: RequestSpec, limit: int | None,
                hosts: list[HostState] | None = None) -> list[tuple[float, HostState]]:
        """Filter then weigh ``hosts`` (the cached ones, refreshed if due, when not given);
        raises NoValidHost when no host passes."""
        if hosts is None:
            hosts = self.cache.hosts()
        passed = self._resources_only(hosts, spec)
        if not passed:  # other filters apply, or none passed: each filter in turn, counting what it removes
            passed, removed = run_filters(self.filters, hosts, spec)
            if not passed:
                raise exception.NoValidHost(reason=describe_removals(len(hosts), removed))
        return weigh_hosts(self.weighers, passed, spec, rng=self.rng, limit=limit)

    def _resources_only(self, hosts: list[HostState], spec: RequestSpec) -> list[HostState] | None:
        """The hosts passing the filters in one pass, when every filter that applies to ``spec``
        is one of :func:`fitting_hosts`' conditions (ComputeFilter and the RAM, vCPU and disk
        filters: no group, zone, requirement or failed host, as most requests); None otherwise.

        The same hosts as :func:`run_filters` (a conjunction does not depend on its order), in
        about half the CPU of its passes (cProfile, 1,000 hosts); a batch chooses 8 times."""
        wanted: dict[str, Any] = {}
        for host_filter in self.filters:
            if host_filter.applies(spec):
                thresholds = host_filter.thresholds(spec)
                if thresholds is None:
                    return None
                wanted.update(thresholds)
        return fitting_hosts(hosts, **wanted)

    def place(self, spec: RequestSpec, conn: sa.Connection | None = None,
              also: Callable[[sa.Connection, str], None] | None = None) -> str:
        """Claim a host for ``spec.instance_id`` and return its name.

        ``conn``: a connection to claim on (its open transaction, if any, is
        ended by the claim); one is checked out when not given. ``also(conn,
        host)`` runs in the winning claim's transaction (:func:`claims.claim_on`). Raises
        NoValidHost (with per-filter removal counts) when no host fits, and
        InstanceStateConflict when the instance stopped waiting for a host.
        """
        if conn is None:
            with self.db.engine.connect() as own:
                return self.place(spec, own, also)
        lost_everywhere = 0
        for round_number in range(MAX_ROUNDS):
            group_changed = False
            for _weight, host in self._ranked(spec, CLAIM_TRIES_PER_ROUND):
                try:
                    row = claims.claim_on(conn, spec, host, self.ratios, also)
                except claims.ClaimLost as lost:
                    self.claims_lost += 1
                    LOG.debug("instance %s: %s (round %d)", spec.instance_id, lost, round_number)
                    if spec.group_id is not None and lost.what != claims.RESOURCES_LOST:
                        with read_connection(self.db) as reader:
                            spec.group_hosts = load_group_hosts(reader, spec.group_id, spec.group_policy)
                        group_changed = True
                        break
                    self.cache.refresh_host(host.host)
                    continue
                self.cache.apply_rows([row])
                return host.host
            if not group_changed:
                lost_everywhere += 1
        raise exception.NoValidHost(
            reason=f"every fitting host was claimed by other schedulers first "
                   f"({MAX_ROUNDS} rounds, {lost_everywhere} lost on resources)")

    def place_many(self, specs: list[RequestSpec], conn: sa.Connection,
                   also: Callable[[sa.Connection, list[claims.Placement]], None] | None = None,
                   committed: Callable[[dict[str, str]], None] | None = None,
                   unstage: Callable[[sa.Connection, list[claims.Placement]], None] | None = None,
                   ) -> tuple[dict[str, str], list[RequestSpec]]:
        """Claim a host for each of ``specs`` (instances in no server group or in an
        anti-affinity one: :func:`claims.claim_many`) in one transaction on ``conn`` (its
        open transaction, if any, is ended), choosing for each in turn with the choices
        before it counted against their hosts (and their groups). The placements the claim
        leaves out (their host or group slot was taken meanwhile: the cache may be half a
        second old) are chosen again, with the hosts' rows the claim locked, and claimed in a
        transaction of their own: up to :data:`BATCH_ROUNDS` transactions in all.

        Returns instance id -> host for the instances placed, and the specs left
        to :meth:`place` one by one: those no host fitted, those still left out
        after the last round, and all of a round's when its claim changed nothing
        (an instance had stopped waiting for a host) or failed after an earlier
        round committed. ``also(conn, claimed)`` runs in each round's transaction,
        once, with the placements it claims, and ``unstage(conn, dropped)`` in the same
        transaction for those of them the claim then left out (their host no longer took
        them: what ``also`` wrote for them must go); ``committed(placed)`` runs after each
        round's commit with what that round placed (instance id -> host), so that they
        need not wait for the rounds after theirs.
        """
        placed: dict[str, str] = {}
        left: list[RequestSpec] = []
        pending = specs
        for round_number in range(BATCH_ROUNDS):
            chosen = self._choose_each(pending, left)
            if not chosen:
                return placed, left
            try:
                rows, claimed, lost = claims.claim_many(conn, chosen, self.ratios, also, unstage)
            except (claims.ClaimLost, exception.InstanceStateConflict) as failed:  # nothing changed
                LOG.debug("%d placements left to be decided one by one: %s", len(chosen), failed)
                if isinstance(failed, claims.ClaimLost):
                    self.claims_lost += 1
                self.cache.refresh_hosts(placement.host.host for placement in chosen)
                return placed, left + [placement.spec for placement in chosen]
            except BaseException as error:
                self.cache.expire()  # the cache may hold what was reserved and never claimed
                if not placed or not isinstance(error, Exception):
                    raise
                # Earlier rounds committed (with their casts): theirs are placed; the rest
                # go one by one, where their own errors surface.
                LOG.exception("A batch's claim round %d failed; %d placements left to be decided "
                              "one by one", round_number + 1, len(chosen))
                return placed, left + [placement.spec for placement in chosen]
            # Every locked host's row as the claim left it: what was reserved there and not claimed is
            # forgotten. A host only lost slots on was not locked: read again (a rare extra read).
            self.cache.apply_rows(rows)
            unread = {placement.host.host for placement in lost} - {row["host"] for row in rows}
            if unread:
                self.cache.refresh_hosts(unread)
            self.claims_lost += len(lost)
            now_placed = {placement.spec.instance_id or "": placement.host.host for placement in claimed}
            placed.update(now_placed)
            if committed is not None and now_placed:
                committed(now_placed)
            for placement in lost:
                if placement.spec.group_id is not None:
                    placement.spec.group_hosts.add(placement.host.host)  # its slot there may be taken
            pending = [placement.spec for placement in lost]
        return placed, left + pending

    def _choose_each(self, specs: list[RequestSpec], left: list[RequestSpec]) -> list[claims.Placement]:
        """The best host for each spec in turn, each choice reserved in the cache before the
        next; a spec no host fits goes to ``left`` (place() says why, with every filter's count)."""
        hosts = self.cache.hosts()  # once: a refresh between choices would forget the ones before
        chosen: list[claims.Placement] = []
        group_hosts: dict[str, set[str]] = {}  # anti-affinity: the hosts chosen for each group so far
        for spec in specs:
            if spec.group_id is not None:
                spec.group_hosts |= group_hosts.setdefault(spec.group_id, set())
            try:
                [(_weight, host)] = self._ranked(spec, 1, hosts)
            except exception.NoValidHost:
                left.append(spec)
                continue
            self.cache.reserve(host, spec.vcpus, spec.memory_mb, spec.disk_gb)
            chosen.append(claims.Placement(spec, host))
            if spec.group_id is not None:
                group_hosts[spec.group_id].add(host.host)
        return chosen
