"""A driver that changes nothing in the kernel but keeps the exact bookkeeping.

Good for unit tests and scale runs: it names the devices the real driver would
create, counts the calls it received, and describes the host the same way.
"""

from __future__ import annotations

from typing import Any

from fabric.network.drivers.base import NetworkDriver
from fabric.network.model import EndpointSpec, NetworkSpec
from fabric.network.secgroups import MemberChange


class FakeDriver(NetworkDriver):
    def __init__(self, settings) -> None:
        super().__init__(settings)
        self.calls: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def _sync(self) -> dict[str, Any]:
        self._count("sync")
        return {"created": [], "removed": []}

    def _apply_network(self, network: NetworkSpec) -> None:
        self._count("apply_network")

    def _remove_network(self, network_id: str, network: NetworkSpec | None) -> None:
        self._count("remove_network")

    def _apply_endpoint(self, endpoint: EndpointSpec) -> None:
        self._count("apply_endpoint")

    def _remove_endpoint(self, endpoint_id: str, endpoint: EndpointSpec | None) -> None:
        self._count("remove_endpoint")

    def _apply_topology(self) -> None:
        self._count("apply_topology")

    def _apply_floating(self) -> None:
        self._count("apply_floating")

    def _apply_security(self) -> None:
        self._count("apply_security")

    def _apply_members(self, changes: dict[str, MemberChange]) -> None:
        self._count("apply_members")

    def describe(self) -> dict[str, Any]:
        routes = {f"{e.address}/32": self.names.endpoint(e.id) for e in self.state.endpoints.values()
                  if e.address and self.state.networks[e.network_id].network_type == "routed"}
        if self.state.routed is not None:
            routes.update({h.block: h.tunnel_address for h in self.state.remote_hosts.values() if h.block})
        return {
            "host": self.host,
            "driver": "fake",
            "networks": {n.id: {"type": n.network_type,
                                "endpoints": sorted(e.id for e in self.state.endpoints_of(n.id))}
                         for n in self.state.networks.values()},
            "endpoints": {e.id: self.names.endpoint(e.id) for e in self.state.endpoints.values()},
            "remote_hosts": sorted(self.state.remote_hosts),
            "routes": dict(sorted(routes.items())),
            "floating": {f.address: f.fixed_address for f in self.state.floating.values()},
            "security": self.security.to_dict(),
        }
