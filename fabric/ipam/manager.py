"""The ipam worker's RPC endpoint: addresses, subnet pools and the L3 topology.

Handlers are called as ``method(ctx, **kwargs)`` with JSON arguments and
return JSON. Every handler is safe to repeat: allocations are idempotent by
request token, releases and removals of what is already gone succeed, and
adding what exists returns it. Errors are FabricErrors that cross RPC as
themselves (AddressExhausted, AddressInUse, NumberExhausted,
NumberOutOfRange, LayoutInvalid, InvalidAddress, NotFound, Conflict).

IPAM owns the topology, so it is the one that announces a host added or
removed to every network worker (``host_joined``/``host_left`` fanout casts
through :class:`fabric.network.rpcapi.NetworkAPI`), after the change is
committed.
"""

from __future__ import annotations

import logging
from typing import Any

from fabric import config, metrics
from fabric.context import RequestContext
from fabric.db import Database
from fabric.db.models import Subnet
from fabric.exception import AddressExhausted, FabricError, Invalid, NotFound
from fabric.ipam import pools
from fabric.ipam.allocator import Allocator
from fabric.ipam.layout import Layout
from fabric.ipam.topology import DEFAULT_DATACENTER, Topology
from fabric.manager import Manager, callers_table
from fabric.network.model import HostSpec
from fabric.network.rpcapi import NetworkAPI
from fabric.reconcile import Fixes, report
from fabric.reconcile import addresses as address_drift
from fabric.rpc import idempotent

LOG = logging.getLogger(__name__)


def segment_pool_id(segment_id: int, host_id: int, block: str) -> str:
    """The pool of one routed segment's block on one host.

    The block is part of the id, so a pool id always means the same addresses
    (a host removed and numbered again gets a new pool, never a stale one).
    """
    return f"s{segment_id}-h{host_id}-{block}"


class IpamManager(Manager):
    """Owns every address fabric hands out."""

    topic = "ipam"
    #: Who may call each handler (checked on the message's signature before dispatch):
    #: the topology and subnets are the API's; addresses are asked for by compute hosts (for
    #: guests' ports) and by the API (for floating IPs).
    rpc_callers = callers_table(
        configure_datacenter=("api",), describe_datacenter=("api",), add_host=("api",),
        remove_host=("api",), list_hosts=("api",), add_tenant=("api",), remove_tenant=("api",),
        list_tenants=("api",), add_segment=("api",), remove_segment=("api",), list_segments=("api",),
        describe_segment=("api", "compute", "network"), subnet_created=("api",), subnet_updated=("api",),
        subnet_deleted=("api",),
        allocate=("api", "compute"), release=("api", "compute"), lookup=("api", "compute"),
        list_allocations=("api", "compute"), pool_usage=("api",), reconcile_addresses=("api",))

    def __init__(self, settings: config.Settings, host: str | None = None,
                 db: Database | None = None, transport: Any = None) -> None:
        super().__init__(settings, host=host, db=db, transport=transport)
        if self.db is None:
            self.db = Database.from_settings(settings)
        self.allocator = Allocator(self.db, settings.ipam.max_retries, settings.ipam.batch_size)
        self.topology = Topology(self.db, settings.database.max_retries)
        #: (segment id, host name) -> pool id; pools never change, hosts may be re-added.
        self._segment_pools: dict[tuple[int, str], str] = {}
        self._network: NetworkAPI | None = None

    def cleanup_host(self) -> None:
        """Close the allocator's own connections when the service stops."""
        self.allocator.close()

    def capabilities(self) -> dict[str, Any]:
        return {"pools": [pools.SUBNET_POOL, pools.SEGMENT_POOL], "ip_versions": [4, 6]}

    # --- topology -------------------------------------------------------------------

    def configure_datacenter(self, ctx: RequestContext, prefix: str, host_bits: int, tenant_bits: int,
                             segment_bits: int, endpoint_bits: int,
                             name: str = DEFAULT_DATACENTER) -> dict[str, Any]:
        """Set the datacenter's address layout (validated: widths must fill the address)."""
        return self.topology.configure_datacenter(name, prefix, host_bits, tenant_bits, segment_bits,
                                                  endpoint_bits)

    @idempotent
    def describe_datacenter(self, ctx: RequestContext, name: str = DEFAULT_DATACENTER) -> dict[str, Any]:
        """The layout, capacities and every host with its block and gateway."""
        return self.topology.describe_datacenter(name)

    def add_host(self, ctx: RequestContext, name: str, datacenter: str = DEFAULT_DATACENTER,
                 number: int | None = None, tunnel_address: str | None = None,
                 agent_address: str | None = None) -> dict[str, Any]:
        """Number a host; returns its number, block (one aggregatable route) and gateway.

        Once the row is committed, every network worker is told (``host_joined``
        fanout) when the host has a tunnel address, so each adds its tunnel
        peer and its route to the host's block.
        """
        host = self.topology.add_host(name, datacenter, number, tunnel_address, agent_address)
        if host["tunnel_address"]:
            spec = HostSpec(host["name"], host["tunnel_address"], host["block"])
            self._announce("host_joined", ctx, host=spec.to_dict())
        return host

    def remove_host(self, ctx: RequestContext, name: str, datacenter: str = DEFAULT_DATACENTER) -> dict[str, Any]:
        """Remove a host that holds no addresses; every network worker is told (``host_left``).

        Told again when the host was already gone, so repeating a removal whose
        announcement was lost still converges the network workers.
        """
        removed = self.topology.remove_host(name, datacenter)
        self._segment_pools = {k: v for k, v in self._segment_pools.items() if k[1] != name}
        self._announce("host_left", ctx, name=name)
        return {"removed": removed}

    def _announce(self, method: str, ctx: RequestContext, **kwargs: Any) -> None:
        """Fanout ``method`` to every network worker (through their rpcapi)."""
        if self.transport is None:  # a bare manager (tests, tools): nobody to tell
            return
        if self._network is None:
            self._network = NetworkAPI(self.transport)
        try:
            getattr(self._network, method)(ctx, **kwargs)
        except FabricError as exc:
            # The topology row stands either way: a network worker reads the whole
            # topology from the database when it starts.
            LOG.warning("ipam: %s %s committed, but the network workers were not told: %s", method, kwargs,
                        exc.message)

    @idempotent
    def list_hosts(self, ctx: RequestContext, datacenter: str = DEFAULT_DATACENTER) -> list[dict[str, Any]]:
        return self.topology.list_hosts(datacenter)

    def add_tenant(self, ctx: RequestContext, project_id: str, datacenter: str = DEFAULT_DATACENTER,
                   number: int | None = None) -> dict[str, Any]:
        return self.topology.add_tenant(project_id, datacenter, number)

    def remove_tenant(self, ctx: RequestContext, project_id: str,
                      datacenter: str = DEFAULT_DATACENTER) -> dict[str, Any]:
        return {"removed": self.topology.remove_tenant(project_id, datacenter)}

    @idempotent
    def list_tenants(self, ctx: RequestContext, datacenter: str = DEFAULT_DATACENTER) -> list[dict[str, Any]]:
        return self.topology.list_tenants(datacenter)

    def add_segment(self, ctx: RequestContext, project_id: str, name: str,
                    datacenter: str = DEFAULT_DATACENTER, number: int | None = None) -> dict[str, Any]:
        """Number a segment of a tenant (the tenant is numbered first if new)."""
        return self.topology.add_segment(project_id, name, datacenter, number)

    def remove_segment(self, ctx: RequestContext, project_id: str, name: str,
                       datacenter: str = DEFAULT_DATACENTER) -> dict[str, Any]:
        return {"removed": self.topology.remove_segment(project_id, name, datacenter)}

    @idempotent
    def list_segments(self, ctx: RequestContext, project_id: str | None = None,
                      datacenter: str = DEFAULT_DATACENTER) -> list[dict[str, Any]]:
        return self.topology.list_segments(project_id, datacenter)

    @idempotent
    def describe_segment(self, ctx: RequestContext, segment_id: int, host: str) -> dict[str, Any]:
        """A segment's block on ``host``: block, gateway, service address, endpoint range."""
        segment, tenant, dc, layout = self.topology.segment(segment_id)
        host_row, _ = self.topology.host(host, dc.name)
        return self._segment_info(layout, host_row.number, tenant.number, segment.number) | {
            "segment_id": segment_id, "host": host}

    @staticmethod
    def _segment_info(layout: Layout, host: int, tenant: int, segment: int) -> dict[str, Any]:
        block = layout.segment_block(host, tenant, segment)
        first, last = layout.endpoint_range(host, tenant, segment)
        return {"kind": pools.SEGMENT_POOL, "ip_version": layout.version, "cidr": str(block), "prefixlen": block.prefixlen,
                "gateway": str(layout.gateway(host, tenant, segment)),
                "service_address": str(layout.service_address(host, tenant, segment)),
                "host_block": str(layout.host_block(host)),
                "first_endpoint": pools.address_text(first, layout.version),
                "last_endpoint": pools.address_text(last, layout.version)}

    # --- subnet pools ----------------------------------------------------------------

    def subnet_created(self, ctx: RequestContext, subnet_id: str) -> dict[str, Any]:
        """Prepare the pool of a committed subnet row (idempotent)."""
        definition = self._subnet_pool(subnet_id)
        return definition.info | {"pool": subnet_id, "size": definition.size}

    def subnet_updated(self, ctx: RequestContext, subnet_id: str) -> None:
        """A subnet's pool definition changed (its gateway moved, committed by the API through
        :func:`fabric.ipam.gateways.move_subnet_gateway`): forget this worker's copy, so the next
        allocation reads and reports the stored one. Sent to every ipam worker (fanout)."""
        self.allocator.forget(subnet_id)

    def subnet_deleted(self, ctx: RequestContext, subnet_id: str) -> dict[str, Any]:
        """Drop a subnet's pool and its allocations (idempotent)."""
        return {"removed": self.allocator.delete_pool(subnet_id)}

    def _subnet_pool(self, subnet_id: str) -> pools.PoolDefinition:
        known = self.allocator.definition(subnet_id, missing_ok=True)
        if known is not None:
            return known
        with self.db.begin() as session:
            subnet = session.get(Subnet, subnet_id)
            if subnet is None:
                raise NotFound(kind="subnet", ident=subnet_id)
            definition = pools.subnet_pool(subnet.id, subnet.cidr, subnet.gateway_ip,
                                           subnet.allocation_pools, subnet.reserved)
        return self.allocator.ensure_pool(definition, pools.SUBNET_POOL, subnet_id=subnet_id)

    def _segment_pool(self, segment_id: int, host: str) -> str:
        key = (segment_id, host)
        pool_id = self._segment_pools.get(key)
        if pool_id is not None:
            return pool_id
        segment, tenant, dc, layout = self.topology.segment(segment_id)
        host_row, _ = self.topology.host(host, dc.name)
        first, last = layout.endpoint_range(host_row.number, tenant.number, segment.number)
        block = layout.segment_block(host_row.number, tenant.number, segment.number)
        pool_id = segment_pool_id(segment_id, host_row.id, str(block))
        info = self._segment_info(layout, host_row.number, tenant.number, segment.number) | {
            "segment_id": segment_id, "host": host}
        definition = pools.segment_pool(pool_id, layout.version, first, last, info)
        self.allocator.ensure_pool(definition, pools.SEGMENT_POOL, segment_id=segment_id, host_id=host_row.id)
        self._segment_pools[key] = pool_id
        return pool_id

    def _resolve_pool(self, subnet_id: str | None, segment_id: int | None, host: str | None) -> str:
        if subnet_id is not None and segment_id is None:
            self._subnet_pool(subnet_id)
            return subnet_id
        if segment_id is not None and subnet_id is None:
            if not host:
                raise Invalid(reason=f"segment {segment_id}: a host is needed (endpoint addresses are per host)")
            return self._segment_pool(segment_id, host)
        raise Invalid(reason="give either subnet_id or segment_id (with host), not both or neither")

    # --- allocations -------------------------------------------------------------------

    def _with_info(self, allocation: dict[str, Any] | None) -> dict[str, Any] | None:
        if allocation is None:
            return None
        definition = self.allocator.definition(allocation["pool"], missing_ok=True)
        info = definition.info if definition is not None else {}
        allocation = dict(allocation)
        allocation.pop("ordinal", None)
        return info | allocation

    @idempotent
    def allocate(self, ctx: RequestContext, request_token: str, subnet_id: str | None = None,
                 segment_id: int | None = None, host: str | None = None, address: str | None = None,
                 port_id: str | None = None) -> dict[str, Any]:
        """An address from a subnet's pool, or from a routed segment's block on ``host``.

        The lowest free address unless ``address`` names one. Idempotent by
        ``request_token``. The result carries the pool id (for release), the
        address, and the pool's cidr, prefixlen and gateway (plus service
        address and host block for segments).
        """
        if not isinstance(request_token, str) or not 0 < len(request_token) <= 128:
            raise Invalid(reason=f"request_token {request_token!r}: a string of 1 to 128 characters is accepted")
        pool_id = self._resolve_pool(subnet_id, segment_id, host)
        try:
            if address is None:
                result = self.allocator.allocate(pool_id, request_token, port_id)
            else:
                result = self.allocator.allocate_address(pool_id, address, request_token, port_id)
        except AddressExhausted:
            metrics.IPAM_ALLOCATIONS.labels("exhausted").inc()
            raise
        except NotFound as exc:
            if exc.fields.get("kind") != "address pool":
                raise
            if subnet_id is not None:
                raise NotFound(kind="subnet", ident=subnet_id) from None
            # The host or segment was removed (and perhaps added again with a new id).
            self._segment_pools.pop((segment_id, host), None)
            raise
        metrics.IPAM_ALLOCATIONS.labels("allocated").inc()
        return self._with_info(result)

    @idempotent
    def release(self, ctx: RequestContext, pool: str | None = None, request_token: str | None = None,
                address: str | None = None, port_id: str | None = None) -> list[dict[str, Any]]:
        """Free addresses: by (pool, request_token), (pool, address) or every one of ``port_id``.

        Idempotent: releasing what is not held returns an empty list.
        """
        if port_id is not None and pool is None and request_token is None and address is None:
            released = self.allocator.release_port(port_id)
        elif pool is not None and (request_token is None) != (address is None) and port_id is None:
            one = self.allocator.release(pool, request_token=request_token, address=address)
            released = [one] if one else []
        else:
            raise Invalid(reason="release takes pool with request_token or address, or port_id alone")
        metrics.IPAM_RELEASES.inc(len(released))
        return [self._with_info(r) for r in released]

    @idempotent
    def lookup(self, ctx: RequestContext, pool: str, request_token: str | None = None,
               address: str | None = None) -> dict[str, Any]:
        """The allocation of a token or an address; NotFound if none."""
        if (request_token is None) == (address is None):
            raise Invalid(reason="lookup takes exactly one of request_token or address")
        found = self.allocator.lookup(pool, request_token=request_token, address=address)
        if found is None:
            raise NotFound(kind="address allocation", ident=f"{request_token or address} in pool {pool}")
        return self._with_info(found)

    @idempotent
    def list_allocations(self, ctx: RequestContext, pool: str | None = None,
                         port_id: str | None = None) -> list[dict[str, Any]]:
        """Allocations of a pool and/or a port (lowest first)."""
        return [self._with_info(r) for r in self.allocator.list(pool, port_id)]

    def reconcile_addresses(self, ctx: RequestContext, fixes: dict[str, bool] | None = None) -> dict[str, Any]:
        """Allocations without ports and ports without allocations (:mod:`fabric.reconcile.addresses`),
        repairing the kinds ``fixes`` names through :meth:`allocate` and :meth:`release`.
        Returns ``{"host": None, "findings"}``. Raises Invalid for a bad ``fixes``."""
        wanted = Fixes.from_dict(fixes)
        findings = address_drift.find(self.db)
        if wanted:
            address_drift.fix(self.db, ctx, findings, wanted, self.allocate, self.release)
        return report(None, findings)

    @idempotent
    def pool_usage(self, ctx: RequestContext, pool: str) -> dict[str, Any]:
        """Size and use of a pool."""
        definition = self.allocator.definition(pool)
        return {"pool": pool, "size": definition.size, "in_use": self.allocator.in_use(pool)}
