"""Where a host is: availability zones."""

from __future__ import annotations

from fabric.scheduler.filters.base import HostFilter
from fabric.scheduler.host_state import HostState
from fabric.scheduler.request import RequestSpec


class AvailabilityZoneFilter(HostFilter):
    """Passes hosts in the requested availability zone (any host when none is requested)."""

    def applies(self, spec: RequestSpec) -> bool:
        return bool(spec.availability_zone)

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return host.availability_zone == spec.availability_zone
