"""The network driver interface and the bookkeeping every driver shares.

A driver holds the :class:`~fabric.network.model.HostState` it has been asked
to make real and converges the host to it. Every public method is idempotent:
calling it again with the same arguments changes nothing. Subclasses implement
the ``_apply_*``/``_remove_*`` hooks; the bookkeeping (what is desired) lives here
so the fake and the real driver agree on semantics.
"""

from __future__ import annotations

import abc
from typing import Any

from fabric import exception
from fabric.config import Settings
from fabric.network.model import EndpointSpec, FloatingSpec, HostSpec, HostState, NetworkSpec, RoutedSpec, RouterSpec
from fabric.network.naming import Names
from fabric.network.secgroups import MemberChange, SecurityState


class NetworkDriver(abc.ABC):
    """Converges one host's data plane to a desired :class:`HostState`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.host = settings.default.host
        self.names = Names(settings.network.prefix)
        self.state = HostState()
        self.security = SecurityState()

    # --- the interface -----------------------------------------------------------

    def sync(self, state: HostState) -> dict[str, Any]:
        """Make the host hold exactly ``state``: create what is missing, remove fabric's
        leftovers, touch nothing that is not fabric's. Returns what changed.
        """
        self.state = HostState(networks=dict(state.networks), endpoints=dict(state.endpoints),
                               remote_hosts={n: h for n, h in state.remote_hosts.items() if self._is_remote(h)},
                               floating=dict(state.floating), routed=state.routed, routers=dict(state.routers))
        for endpoint in self.state.endpoints.values():
            self._network_of(endpoint)
        return self._sync()

    def setup_network(self, network: NetworkSpec) -> None:
        """The network exists on this host (its bridge, tunnel, DHCP server)."""
        self.state.networks[network.id] = network
        self._apply_network(network)

    def teardown_network(self, network_id: str) -> None:
        """Every endpoint and kernel object of the network is gone from this host."""
        for endpoint in self.state.endpoints_of(network_id):
            del self.state.endpoints[endpoint.id]
            self._remove_endpoint(endpoint.id, endpoint)
        network = self.state.networks.pop(network_id, None)
        self._remove_network(network_id, network)

    def plug(self, endpoint: EndpointSpec) -> dict[str, Any]:
        """The endpoint's device exists and is attached; returns ``{"device": name}``.

        Raises NotFound when its network has not been set up on this host.
        """
        self._network_of(endpoint)
        self.state.endpoints[endpoint.id] = endpoint
        self._apply_endpoint(endpoint)
        return {"device": self.names.endpoint(endpoint.id)}

    def unplug(self, endpoint_id: str) -> None:
        """The endpoint's device is gone (no error when it already is); when it was the last
        endpoint of its network here, the network's devices and DHCP server are gone too
        (a network exists only on the hosts that have ports on it; the next plug brings it back).
        """
        endpoint = self.state.endpoints.pop(endpoint_id, None)
        self._remove_endpoint(endpoint_id, endpoint)
        if endpoint is not None and not self.state.endpoints_of(endpoint.network_id):
            network = self.state.networks.pop(endpoint.network_id, None)
            if network is not None:
                self._remove_network(endpoint.network_id, network)

    def set_routed(self, routed: RoutedSpec | None) -> None:
        """This host's routed-mode layout (None: no routed mode here)."""
        self.state.routed = routed
        self._apply_topology()

    def set_remote_hosts(self, hosts: list[HostSpec]) -> None:
        """The other hosts of the topology are exactly ``hosts`` (this host is ignored)."""
        self.state.remote_hosts = {h.name: h for h in hosts if self._is_remote(h)}
        self._apply_topology()

    def host_joined(self, host: HostSpec) -> None:
        if self._is_remote(host):
            self.state.remote_hosts[host.name] = host
            self._apply_topology()

    def host_left(self, name: str) -> None:
        if self.state.remote_hosts.pop(name, None) is not None:
            self._apply_topology()

    def associate_floating(self, floating: FloatingSpec) -> None:
        """Traffic to the floating address reaches its fixed address, and back."""
        self.state.floating[floating.address] = floating
        self._apply_floating()

    def disassociate_floating(self, address: str) -> None:
        """No translation for ``address`` remains (no error when there was none)."""
        if self.state.floating.pop(address, None) is not None:
            self._apply_floating()

    def set_routers(self, routers: list[RouterSpec]) -> None:
        """Realise exactly ``routers`` on this host (forwarding between their legs, their SNAT)."""
        self.state.routers = {r.id: r for r in routers}
        self._apply_floating()  # the NAT and forward rules are one table

    def set_security(self, security: SecurityState) -> None:
        """Enforce exactly ``security`` on this host's endpoints (see :mod:`fabric.network.secgroups`).

        Endpoints plugged later are filtered by it as soon as they are plugged.
        """
        self.security = security
        self._apply_security()

    def change_members(self, changes: dict[str, MemberChange]) -> None:
        """``self.security``'s remote groups changed members as ``changes`` says (group -> the
        addresses that came into its set and left it; :meth:`SecurityState.change_members`):
        enforce it. Same end as :meth:`set_security` with the changed state, which drivers may
        reach by touching only those addresses."""
        self._apply_members(changes)

    def _apply_members(self, changes: dict[str, MemberChange]) -> None:
        """Make the host's remote sets match ``self.security`` after ``changes``; by default by
        :meth:`_apply_security`."""
        self._apply_security()

    def _apply_security(self) -> None:  # noqa: B027 - a driver with no kernel enforces nothing
        """Make the host's filtering match ``self.security`` and ``self.state``."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """This host's networking as the driver sees it (JSON-able)."""

    def serve_metadata(self, db: Any) -> None:  # noqa: B027 - a driver with no kernel serves nothing
        """From now on, guests on this host's networks get their metadata (looked up in
        ``db``) at 169.254.169.254; see :mod:`fabric.metadata`.
        """

    def stop(self) -> None:  # noqa: B027 - most drivers run nothing to release
        """Release what the driver runs (DHCP servers, threads); kernel objects stay."""

    # --- helpers and hooks ---------------------------------------------------------------

    def _is_remote(self, host: HostSpec) -> bool:
        return host.name != self.host and host.tunnel_address != (self.settings.network.tunnel_address or None)

    def _network_of(self, endpoint: EndpointSpec) -> NetworkSpec:
        network = self.state.networks.get(endpoint.network_id)
        if network is None:
            raise exception.NotFound(kind="network on host " + self.host, ident=endpoint.network_id)
        return network

    @abc.abstractmethod
    def _sync(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def _apply_network(self, network: NetworkSpec) -> None: ...

    @abc.abstractmethod
    def _remove_network(self, network_id: str, network: NetworkSpec | None) -> None: ...

    @abc.abstractmethod
    def _apply_endpoint(self, endpoint: EndpointSpec) -> None: ...

    @abc.abstractmethod
    def _remove_endpoint(self, endpoint_id: str, endpoint: EndpointSpec | None) -> None: ...

    @abc.abstractmethod
    def _apply_topology(self) -> None: ...

    @abc.abstractmethod
    def _apply_floating(self) -> None: ...
