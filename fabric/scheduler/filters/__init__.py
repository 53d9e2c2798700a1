"""Host filters, one small module per group, selected by name from ``[scheduler] filters``."""

from __future__ import annotations

from fabric import exception
from fabric.db import Database
from fabric.scheduler.filters.aggregates import AggregateAvailabilityZoneFilter, AggregateInstanceExtraSpecsFilter
from fabric.scheduler.filters.base import HostFilter, describe_removals, run_filters
from fabric.scheduler.filters.compute import ComputeFilter, RetryFilter
from fabric.scheduler.filters.groups import AffinityFilter, AntiAffinityFilter
from fabric.scheduler.filters.placement import AvailabilityZoneFilter
from fabric.scheduler.filters.requirements import ExtraSpecsFilter, ImagePropertiesFilter
from fabric.scheduler.filters.resources import CoreFilter, DiskFilter, RamFilter

#: Every filter fabric has, by the name the settings use.
FILTERS: dict[str, type[HostFilter]] = {
    cls.name: cls
    for cls in (RetryFilter, ComputeFilter, AvailabilityZoneFilter, RamFilter, CoreFilter,
                DiskFilter, ImagePropertiesFilter, ExtraSpecsFilter, AffinityFilter,
                AntiAffinityFilter, AggregateAvailabilityZoneFilter, AggregateInstanceExtraSpecsFilter)
}


def load_filters(names: str, db: Database | None = None) -> list[HostFilter]:
    """Instantiate filters from a comma-separated list (those that read the database, such as
    the aggregate filters, over ``db``); raises InvalidSetting on an unknown name."""
    chosen = []
    for name in (n.strip() for n in names.split(",")):
        if not name:
            continue
        if name not in FILTERS:
            raise exception.InvalidSetting(source="settings", section="scheduler", option="filters",
                                           value=name, reason=f"unknown filter; known: {', '.join(FILTERS)}")
        cls = FILTERS[name]
        chosen.append(cls(db) if getattr(cls, "needs_db", False) else cls())
    return chosen


__all__ = ["FILTERS", "HostFilter", "describe_removals", "load_filters", "run_filters"]
