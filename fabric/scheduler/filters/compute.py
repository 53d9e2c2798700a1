"""Hosts that can take work at all, and hosts a build already failed on."""

from __future__ import annotations

from typing import Any

from fabric.scheduler.filters.base import HostFilter
from fabric.scheduler.filters.resources import ThresholdFilter
from fabric.scheduler.host_state import HostState
from fabric.scheduler.request import RequestSpec


class ComputeFilter(ThresholdFilter):
    """Passes hosts whose compute service is up (recent heartbeat) and not disabled."""

    def thresholds(self, spec: RequestSpec) -> dict[str, Any]:
        return {"in_service": True}


class RetryFilter(HostFilter):
    """Removes the hosts this instance's build already failed on."""

    def applies(self, spec: RequestSpec) -> bool:
        return bool(spec.ignore_hosts)

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return host.host not in spec.ignore_hosts
