"""RAM, vCPU and disk, under the allocation ratios."""

from __future__ import annotations

from fabric.scheduler.filters.base import HostFilter
from fabric.scheduler.host_state import HostState
from fabric.scheduler.request import RequestSpec


class RamFilter(HostFilter):
    """Passes hosts with at least the requested RAM free (memory_mb * ram ratio - used)."""

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return host.free_ram_mb >= spec.memory_mb

    def filter_all(self, hosts: list[HostState], spec: RequestSpec) -> list[HostState]:
        # Inlined: this runs over every host on every decision.
        need = spec.memory_mb
        return [h for h in hosts if h.free_ram_mb >= need]


class CoreFilter(HostFilter):
    """Passes hosts with at least the requested vCPUs free (vcpus * cpu ratio - used)."""

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return host.free_vcpus >= spec.vcpus

    def filter_all(self, hosts: list[HostState], spec: RequestSpec) -> list[HostState]:
        need = spec.vcpus
        return [h for h in hosts if h.free_vcpus >= need]


class DiskFilter(HostFilter):
    """Passes hosts with at least the requested disk free (disk_gb * disk ratio - used)."""

    def applies(self, spec: RequestSpec) -> bool:
        return spec.disk_gb > 0

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return host.free_disk_gb >= spec.disk_gb

    def filter_all(self, hosts: list[HostState], spec: RequestSpec) -> list[HostState]:
        if not self.applies(spec):
            return hosts
        need = spec.disk_gb
        return [h for h in hosts if h.free_disk_gb >= need]
