"""Host aggregates as placement reads them: the one home of what an aggregate means for a host.

A host's availability zone is the ``availability_zone`` metadata of an aggregate it belongs
to, else the zone its compute node reports (``[compute] availability_zone``), as Nova's is
(there the default zone plays the node's part). A host is in at most one zone: the API
refuses an aggregate change that would put a host into two (:func:`zone_conflicts`).
Flavor extra specs scoped ``aggregate_instance_extra_specs:`` are matched against the
metadata of the host's aggregates (fabric.scheduler.filters.aggregates).
"""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa

from fabric.db.models import Aggregate, AggregateHost

#: The aggregate metadata key that names its availability zone.
ZONE_KEY = "availability_zone"
#: The flavor extra-spec scope matched against aggregate metadata.
EXTRA_SPECS_SCOPE = "aggregate_instance_extra_specs"


@dataclasses.dataclass(frozen=True)
class HostAggregates:
    """What the aggregates say about each host that is in one."""

    #: host -> the availability zone an aggregate gives it
    zones: dict[str, str] = dataclasses.field(default_factory=dict)
    #: host -> metadata key -> the values its aggregates give that key
    metadata: dict[str, dict[str, set[str]]] = dataclasses.field(default_factory=dict)

    def zone_of(self, host: str, node_zone: str) -> str:
        """``host``'s availability zone, its node reporting ``node_zone``."""
        return self.zones.get(host, node_zone)


def read(conn: sa.Connection | sa.orm.Session) -> HostAggregates:
    """Every aggregate's hosts and metadata, in one query."""
    zones: dict[str, str] = {}
    metadata: dict[str, dict[str, set[str]]] = {}
    rows = conn.execute(sa.select(AggregateHost.host, Aggregate.metadata_items)
                        .join(Aggregate, Aggregate.id == AggregateHost.aggregate_id)
                        .order_by(Aggregate.id))
    for host, items in rows:
        for key, value in (items or {}).items():
            metadata.setdefault(host, {}).setdefault(key, set()).add(str(value))
            if key == ZONE_KEY and value:
                zones.setdefault(host, str(value))
    return HostAggregates(zones, metadata)


def zone_conflicts(session: sa.orm.Session, hosts: list[str], zone: str | None,
                   aggregate_id: int | None) -> dict[str, str]:
    """host -> the other zone it already has through another aggregate than ``aggregate_id``,
    for the ``hosts`` that giving them ``zone`` would put into two zones."""
    if not zone or not hosts:
        return {}
    query = (sa.select(AggregateHost.host, Aggregate.metadata_items)
             .join(Aggregate, Aggregate.id == AggregateHost.aggregate_id)
             .where(AggregateHost.host.in_(hosts)))
    if aggregate_id is not None:
        query = query.where(Aggregate.id != aggregate_id)
    conflicts = {}
    for host, items in session.execute(query):
        other = (items or {}).get(ZONE_KEY)
        if other and other != zone:
            conflicts[host] = other
    return conflicts
