"""Filters that read host aggregates (fabric.scheduler.aggregates): availability zones and
flavor extra specs scoped ``aggregate_instance_extra_specs:``, as Nova's
AvailabilityZoneFilter and AggregateInstanceExtraSpecsFilter decide.

Aggregates are read from the database once per decision that asks for them (a zone or
such an extra spec), never cached: an operator's ``aggregate add host`` counts for the
next server created.
"""

from __future__ import annotations

from typing import Any

from fabric.db import Database
from fabric.scheduler import aggregates
from fabric.scheduler.filters.base import HostFilter
from fabric.scheduler.filters.requirements import match_requirement
from fabric.scheduler.host_state import HostState, read_connection
from fabric.scheduler.request import RequestSpec


class AggregateFilter(HostFilter):
    """A filter that reads aggregates; without a database (unit tests) no host is in one."""

    needs_db = True

    def __init__(self, db: Database | None = None) -> None:
        self.db = db

    def _read(self) -> aggregates.HostAggregates:
        if self.db is None:
            return aggregates.HostAggregates()
        with read_connection(self.db) as conn:
            return aggregates.read(conn)

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return bool(self.filter_all([host], spec))


class AggregateAvailabilityZoneFilter(AggregateFilter):
    """Passes hosts in the requested zone: their aggregate's zone, else their node's."""

    def applies(self, spec: RequestSpec) -> bool:
        return bool(spec.availability_zone)

    def filter_all(self, hosts: list[HostState], spec: RequestSpec) -> list[HostState]:
        if not self.applies(spec):
            return hosts
        known = self._read()
        return [h for h in hosts if known.zone_of(h.host, h.availability_zone) == spec.availability_zone]


class AggregateInstanceExtraSpecsFilter(AggregateFilter):
    """Passes hosts whose aggregates' metadata meet every ``aggregate_instance_extra_specs:KEY``
    extra spec of the flavor (one value of the key meeting it suffices; a host with no
    aggregate giving the key fails)."""

    @staticmethod
    def _requirements(spec: RequestSpec) -> list[tuple[str, Any]]:
        prefix = aggregates.EXTRA_SPECS_SCOPE + ":"
        return [(key[len(prefix):], value) for key, value in spec.extra_specs.items() if key.startswith(prefix)]

    def applies(self, spec: RequestSpec) -> bool:
        return bool(self._requirements(spec))

    def filter_all(self, hosts: list[HostState], spec: RequestSpec) -> list[HostState]:
        requirements = self._requirements(spec)
        if not requirements:
            return hosts
        metadata = self._read().metadata

        def meets(host: HostState) -> bool:
            own = metadata.get(host.host, {})
            return all(any(match_requirement(value, wanted) for value in own.get(key, ()))
                       for key, wanted in requirements)

        return [h for h in hosts if meets(h)]
