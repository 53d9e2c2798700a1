"""The client side of the network workers: the one place that chooses cast or call.

Work on one host's data plane is a ``call`` to ``network.<host>`` (the caller
needs to know the device exists before it starts a guest); topology changes
are fanout casts to every network worker. All host calls are idempotent and
re-sent after a broker reconnect. Remote FabricErrors arrive as themselves.
"""

from __future__ import annotations

from typing import Any

from fabric import rpc
from fabric.context import RequestContext

#: The envelope version of the release that added ``security_members_changed_many``: a worker
#: writing an older one (a rolling upgrade) sends its changes one by one.
MEMBERS_MANY_SINCE = 3


class NetworkAPI:
    """Calls and casts to the network workers over one transport."""

    def __init__(self, transport: Any, timeout: float | None = None) -> None:
        self.client = rpc.RPCClient(transport, rpc.Target(topic="network"), timeout=timeout, idempotent=True)

    def _host(self, host: str) -> rpc.RPCClient:
        return self.client.prepare(server=host)

    # --- one host ------------------------------------------------------------------------

    def setup_network(self, ctx: RequestContext, host: str, network: dict[str, Any]) -> dict[str, Any]:
        return self._host(host).call(ctx, "setup_network", network=network)

    def teardown_network(self, ctx: RequestContext, host: str, network_id: str) -> None:
        self._host(host).call(ctx, "teardown_network", network_id=network_id)

    def plug(self, ctx: RequestContext, host: str, endpoint: dict[str, Any],
             network: dict[str, Any] | None = None) -> dict[str, Any]:
        """Plug an endpoint on ``host``; returns ``{"device": name}``."""
        return self._host(host).call(ctx, "plug", endpoint=endpoint, network=network)

    def unplug(self, ctx: RequestContext, host: str, endpoint_id: str) -> None:
        self._host(host).call(ctx, "unplug", endpoint_id=endpoint_id)

    def associate_floating(self, ctx: RequestContext, host: str, address: str, fixed_address: str) -> None:
        self._host(host).call(ctx, "associate_floating", address=address, fixed_address=fixed_address)

    def disassociate_floating(self, ctx: RequestContext, host: str, address: str) -> None:
        self._host(host).call(ctx, "disassociate_floating", address=address)

    def set_routed(self, ctx: RequestContext, host: str, routed: dict[str, Any] | None) -> None:
        self._host(host).call(ctx, "set_routed", routed=routed)

    def sync(self, ctx: RequestContext, host: str, state: dict[str, Any]) -> dict[str, Any]:
        return self._host(host).call(ctx, "sync", state=state)

    def describe_host_networking(self, ctx: RequestContext, host: str) -> dict[str, Any]:
        return self._host(host).call(ctx, "describe_host_networking")

    def reconcile_networks(self, ctx: RequestContext, host: str, fixes: dict[str, bool] | None = None) -> dict[str, Any]:
        """``host``'s network drift, repairing the kinds ``fixes`` names (see
        :meth:`fabric.network.manager.NetworkManager.reconcile_networks`)."""
        return self._host(host).call(ctx, "reconcile_networks", fixes=fixes or {})

    # --- every host (fanout casts) ------------------------------------------------------------

    def host_joined(self, ctx: RequestContext, host: dict[str, Any]) -> None:
        """A host joined the topology (a HostSpec dict); sent by IPAM after it committed the host."""
        self.client.fanout_cast(ctx, "host_joined", host=host)

    def host_left(self, ctx: RequestContext, name: str) -> None:
        """A host left the topology; sent by IPAM after it removed the host."""
        self.client.fanout_cast(ctx, "host_left", name=name)

    def network_created(self, ctx: RequestContext, network: dict[str, Any]) -> None:
        self.client.fanout_cast(ctx, "network_created", network=network)

    def network_deleted(self, ctx: RequestContext, network_id: str) -> None:
        self.client.fanout_cast(ctx, "network_deleted", network_id=network_id)

    def network_changed(self, ctx: RequestContext, network_id: str) -> None:
        """A network's settings that hosts realise changed (committed: a subnet's DHCP turned on or
        off): every host carrying it re-reads it from the database and applies it."""
        self.client.fanout_cast(ctx, "network_changed", network_id=network_id)

    def security_groups_changed(self, ctx: RequestContext) -> None:
        """Security groups, rules or port memberships changed (committed): every host
        re-reads what it enforces from the database and applies it at once."""
        self.client.fanout_cast(ctx, "security_groups_changed")

    def security_members_changed(self, ctx: RequestContext, port_id: str, groups: list[str],
                                 addresses: list[str]) -> None:
        """Port ``port_id`` (committed) is now a member of exactly ``groups`` with ``addresses``
        (no groups: it left them all): every host holding one of those groups (or the port) as a
        remote group's members changes that port's addresses alone, reading nothing. (Every
        release this one speaks with has the method: it came with envelope version 2.)"""
        self.client.fanout_cast(ctx, "security_members_changed", port_id=port_id, groups=groups,
                                addresses=addresses)

    def security_members_changed_many(self, ctx: RequestContext, changes: list[dict[str, Any]]) -> None:
        """Each of ``changes`` (``{"port_id", "groups", "addresses"}``) as
        :meth:`security_members_changed` says it, in arrival order, in one fanout (the
        announcements of one process's plugs and unplugs over a moment).

        While this worker writes an envelope older than :data:`MEMBERS_MANY_SINCE` (``[rpc]
        envelope_version`` lowered for a rolling upgrade), hosts of the previous release, which
        lack the method, may be listening: each change goes as its own
        :meth:`security_members_changed`, in the same order."""
        if self.client.transport.settings.envelope_version < MEMBERS_MANY_SINCE:
            for change in changes:
                self.security_members_changed(ctx, **change)
            return
        self.client.fanout_cast(ctx, "security_members_changed_many", changes=changes)

    def routers_changed(self, ctx: RequestContext) -> None:
        """Routers, their interfaces or gateways changed (committed): every host re-reads the
        routers of the networks it carries and realises them."""
        self.client.fanout_cast(ctx, "routers_changed")
