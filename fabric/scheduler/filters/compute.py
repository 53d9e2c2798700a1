"""Hosts that can take work at all, and hosts a build already failed on."""

from __future__ import annotations

from fabric.scheduler.filters.base import HostFilter
from fabric.scheduler.host_state import HostState
from fabric.scheduler.request import RequestSpec


class ComputeFilter(HostFilter):
    """Passes hosts whose compute service is up (recent heartbeat) and not disabled."""

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return host.up and not host.disabled

    def filter_all(self, hosts: list[HostState], spec: RequestSpec) -> list[HostState]:
        return [h for h in hosts if h.up and not h.disabled]


class RetryFilter(HostFilter):
    """Removes the hosts this instance's build already failed on."""

    def applies(self, spec: RequestSpec) -> bool:
        return bool(spec.ignore_hosts)

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return host.host not in spec.ignore_hosts
