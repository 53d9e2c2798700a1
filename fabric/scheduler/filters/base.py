"""The filter interface and the runner that counts what each filter removed."""

from __future__ import annotations

from typing import Any, ClassVar

from fabric.scheduler.host_state import HostState
from fabric.scheduler.request import RequestSpec


class HostFilter:
    """Decides whether one host can take one request.

    Subclasses implement :meth:`host_passes`; :meth:`applies` lets a filter
    skip the whole host list when the request asks nothing of it (no zone, no
    group ...), which keeps a decision over 1,000 hosts cheap.
    """

    name: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.name = cls.__name__

    def applies(self, spec: RequestSpec) -> bool:
        return True

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        raise NotImplementedError

    def thresholds(self, spec: RequestSpec) -> dict[str, Any] | None:
        """What this filter asks of ``spec``'s host as keyword arguments of
        :func:`fabric.scheduler.filters.resources.fitting_hosts` (where its condition lives), so
        that the filters that apply are run in one pass; None when it is not one of those."""
        return None

    def filter_all(self, hosts: list[HostState], spec: RequestSpec) -> list[HostState]:
        """The hosts that pass, in their order."""
        if not self.applies(spec):
            return hosts
        passes = self.host_passes
        return [host for host in hosts if passes(host, spec)]


def run_filters(filters: list[HostFilter], hosts: list[HostState],
                spec: RequestSpec) -> tuple[list[HostState], dict[str, int]]:
    """Apply filters in order; returns the hosts left and how many each filter removed."""
    removed: dict[str, int] = {}
    for host_filter in filters:
        before = len(hosts)
        hosts = host_filter.filter_all(hosts, spec)
        removed[host_filter.name] = before - len(hosts)
    return hosts, removed


def describe_removals(total: int, removed: dict[str, int]) -> str:
    """``"12 hosts; RamFilter removed 10, AntiAffinityFilter removed 2"``: why nothing was left."""
    parts = [f"{name} removed {count}" for name, count in removed.items() if count]
    noun = "host" if total == 1 else "hosts"
    return f"{total} {noun}; " + (", ".join(parts) if parts else "no filter removed any")
