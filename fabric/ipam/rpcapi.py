"""The client side of the ipam worker: the one place that chooses cast or call.

Everything whose answer the caller needs is a ``call`` to any ipam worker
(the shared ``ipam`` queue); ``subnet_created`` is a cast, ``subnet_updated`` a fanout
cast (every worker caches pool definitions). Calls that are
safe to repeat (all of them: allocations are idempotent by request token)
are marked idempotent, so they are re-sent after a broker reconnect. Remote
FabricErrors (AddressExhausted, AddressInUse, NumberExhausted, ...) are
raised here as themselves.
"""

from __future__ import annotations

from typing import Any

from fabric import rpc
from fabric.context import RequestContext
from fabric.ipam.topology import DEFAULT_DATACENTER


class IpamAPI:
    """Calls to the ipam workers over one transport."""

    def __init__(self, transport: Any, timeout: float | None = None) -> None:
        self.client = rpc.RPCClient(transport, rpc.Target(topic="ipam"), timeout=timeout, idempotent=True)

    def _call(self, ctx: RequestContext, method: str, **kwargs: Any) -> Any:
        return self.client.call(ctx, method, **kwargs)

    # --- addresses -------------------------------------------------------------------

    def allocate(self, ctx: RequestContext, request_token: str, *, subnet_id: str | None = None,
                 segment_id: int | None = None, host: str | None = None, address: str | None = None,
                 port_id: str | None = None) -> dict[str, Any]:
        """An address from a subnet, or from a routed segment on ``host``; see IpamManager.allocate."""
        return self._call(ctx, "allocate", request_token=request_token, subnet_id=subnet_id,
                          segment_id=segment_id, host=host, address=address, port_id=port_id)

    def release(self, ctx: RequestContext, *, pool: str | None = None, request_token: str | None = None,
                address: str | None = None, port_id: str | None = None) -> list[dict[str, Any]]:
        return self._call(ctx, "release", pool=pool, request_token=request_token, address=address,
                          port_id=port_id)

    def lookup(self, ctx: RequestContext, pool: str, *, request_token: str | None = None,
               address: str | None = None) -> dict[str, Any]:
        return self._call(ctx, "lookup", pool=pool, request_token=request_token, address=address)

    def list_allocations(self, ctx: RequestContext, *, pool: str | None = None,
                         port_id: str | None = None) -> list[dict[str, Any]]:
        return self._call(ctx, "list_allocations", pool=pool, port_id=port_id)

    def pool_usage(self, ctx: RequestContext, pool: str) -> dict[str, Any]:
        return self._call(ctx, "pool_usage", pool=pool)

    def reconcile_addresses(self, ctx: RequestContext, fixes: dict[str, bool] | None = None) -> dict[str, Any]:
        """Address drift, repairing the kinds ``fixes`` names; see IpamManager.reconcile_addresses."""
        return self._call(ctx, "reconcile_addresses", fixes=fixes or {})

    # --- subnets ------------------------------------------------------------------------

    def subnet_created(self, ctx: RequestContext, subnet_id: str) -> None:
        """Cast: prepare the pool of a committed subnet."""
        self.client.cast(ctx, "subnet_created", subnet_id=subnet_id)

    def subnet_updated(self, ctx: RequestContext, subnet_id: str) -> None:
        """Fanout cast: a subnet's committed pool definition changed (its gateway moved); every
        ipam worker forgets its cached copy."""
        self.client.fanout_cast(ctx, "subnet_updated", subnet_id=subnet_id)

    def subnet_deleted(self, ctx: RequestContext, subnet_id: str) -> dict[str, Any]:
        return self._call(ctx, "subnet_deleted", subnet_id=subnet_id)

    # --- topology -----------------------------------------------------------------------

    def configure_datacenter(self, ctx: RequestContext, prefix: str, host_bits: int, tenant_bits: int,
                             segment_bits: int, endpoint_bits: int,
                             name: str = DEFAULT_DATACENTER) -> dict[str, Any]:
        return self._call(ctx, "configure_datacenter", prefix=prefix, host_bits=host_bits,
                          tenant_bits=tenant_bits, segment_bits=segment_bits, endpoint_bits=endpoint_bits,
                          name=name)

    def describe_datacenter(self, ctx: RequestContext, name: str = DEFAULT_DATACENTER) -> dict[str, Any]:
        return self._call(ctx, "describe_datacenter", name=name)

    def add_host(self, ctx: RequestContext, name: str, *, datacenter: str = DEFAULT_DATACENTER,
                 number: int | None = None, tunnel_address: str | None = None,
                 agent_address: str | None = None) -> dict[str, Any]:
        return self._call(ctx, "add_host", name=name, datacenter=datacenter, number=number,
                          tunnel_address=tunnel_address, agent_address=agent_address)

    def remove_host(self, ctx: RequestContext, name: str, *, datacenter: str = DEFAULT_DATACENTER) -> dict[str, Any]:
        return self._call(ctx, "remove_host", name=name, datacenter=datacenter)

    def list_hosts(self, ctx: RequestContext, *, datacenter: str = DEFAULT_DATACENTER) -> list[dict[str, Any]]:
        return self._call(ctx, "list_hosts", datacenter=datacenter)

    def add_tenant(self, ctx: RequestContext, project_id: str, *, datacenter: str = DEFAULT_DATACENTER,
                   number: int | None = None) -> dict[str, Any]:
        return self._call(ctx, "add_tenant", project_id=project_id, datacenter=datacenter, number=number)

    def remove_tenant(self, ctx: RequestContext, project_id: str, *,
                      datacenter: str = DEFAULT_DATACENTER) -> dict[str, Any]:
        return self._call(ctx, "remove_tenant", project_id=project_id, datacenter=datacenter)

    def list_tenants(self, ctx: RequestContext, *, datacenter: str = DEFAULT_DATACENTER) -> list[dict[str, Any]]:
        return self._call(ctx, "list_tenants", datacenter=datacenter)

    def add_segment(self, ctx: RequestContext, project_id: str, name: str, *,
                    datacenter: str = DEFAULT_DATACENTER, number: int | None = None) -> dict[str, Any]:
        return self._call(ctx, "add_segment", project_id=project_id, name=name, datacenter=datacenter,
                          number=number)

    def remove_segment(self, ctx: RequestContext, project_id: str, name: str, *,
                       datacenter: str = DEFAULT_DATACENTER) -> dict[str, Any]:
        return self._call(ctx, "remove_segment", project_id=project_id, name=name, datacenter=datacenter)

    def list_segments(self, ctx: RequestContext, *, project_id: str | None = None,
                      datacenter: str = DEFAULT_DATACENTER) -> list[dict[str, Any]]:
        return self._call(ctx, "list_segments", project_id=project_id, datacenter=datacenter)

    def describe_segment(self, ctx: RequestContext, segment_id: int, host: str) -> dict[str, Any]:
        return self._call(ctx, "describe_segment", segment_id=segment_id, host=host)

