"""Server-group affinity and anti-affinity.

These filters see the group's hosts as read before the decision; under
concurrency the claim enforces the policy for real (a unique slot per group
in ``server_group_hosts``), so a filter pass is a hint, never a guarantee.
"""

from __future__ import annotations

from fabric.scheduler.filters.base import HostFilter
from fabric.scheduler.host_state import HostState
from fabric.scheduler.request import AFFINITY, ANTI_AFFINITY, RequestSpec


class AffinityFilter(HostFilter):
    """For an affinity group already pinned to a host, passes only that host."""

    def applies(self, spec: RequestSpec) -> bool:
        return spec.group_policy == AFFINITY and bool(spec.group_hosts)

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return host.host in spec.group_hosts


class AntiAffinityFilter(HostFilter):
    """For an anti-affinity group, removes hosts that already hold a member."""

    def applies(self, spec: RequestSpec) -> bool:
        return spec.group_policy == ANTI_AFFINITY and bool(spec.group_hosts)

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return host.host not in spec.group_hosts
