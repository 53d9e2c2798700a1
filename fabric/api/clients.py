"""The API's view of the workers: small client interfaces, injectable.

The API only ever casts (or, for console output, topology changes, routed
segments and floating addresses, calls) through these. In a
deployment they are backed by the workers' ``rpcapi`` modules over fabric.rpc
(:func:`rpc_clients`); tests inject recording ones
(``tests/fixtures/recording_clients.py``).

Method names and keyword arguments here are the contract with the workers'
managers (same names there).
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from fabric.compute.api import ComputeCaster
from fabric.compute.rpcapi import ComputeAPI
from fabric.context import RequestContext
from fabric.ipam.rpcapi import IpamAPI
from fabric.network.rpcapi import NetworkAPI
from fabric.scheduler.rpcapi import SchedulerAPI
from fabric.volume.rpcapi import VolumeAPI


class SchedulerClient(Protocol):
    def build_instances(self, ctx: RequestContext, instance_ids: list[str], request_spec: dict) -> None:
        """Cast: place and build these committed instance rows."""


#: How the API reaches a compute host: one definition, in compute's api.
ComputeClient = ComputeCaster


class NetworkClient(Protocol):
    def network_created(self, ctx: RequestContext, network: dict) -> None:
        """Cast (fanout): a network row was committed; workers set up what they host.
        ``network`` carries id, network_type, project_id, segmentation_id, physical_bridge, mtu."""

    def network_deleted(self, ctx: RequestContext, network_id: str) -> None:
        """Cast (fanout): a network row was deleted."""

    def network_changed(self, ctx: RequestContext, network_id: str) -> None:
        """Cast (fanout): what hosts realise of the network changed (a subnet's DHCP); the hosts
        carrying it apply it."""

    def subnet_created(self, ctx: RequestContext, subnet_id: str) -> None:
        """Cast: the subnet's pool may be prepared by IPAM."""

    def subnet_updated(self, ctx: RequestContext, subnet_id: str) -> None:
        """Cast (fanout): the subnet's pool definition was committed changed (its gateway moved);
        every ipam worker forgets its cached copy."""

    def security_groups_changed(self, ctx: RequestContext) -> None:
        """Cast (fanout): security groups, rules or memberships were committed; hosts re-apply."""

    def allocate_floating_address(self, ctx: RequestContext, subnet_id: str, request_token: str,
                                  address: str | None) -> dict:
        """Call IPAM: an address of the (external) subnet for a floating IP, ``address`` or the
        lowest free one; idempotent by ``request_token``. Returns the allocation (``address``)."""

    def release_floating_address(self, ctx: RequestContext, subnet_id: str, request_token: str) -> None:
        """Call IPAM: give a floating IP's address back (nothing when it is not held)."""

    def routers_changed(self, ctx: RequestContext) -> None:
        """Cast (fanout): routers, their interfaces or gateways were committed; hosts realise them."""

    def allocate_port_address(self, ctx: RequestContext, subnet_id: str, request_token: str, address: str | None,
                              port_id: str) -> dict:
        """Call IPAM: an address of the subnet for port ``port_id`` (linked to it), ``address`` or the
        lowest free one; idempotent by ``request_token``. Returns the allocation (``address``)."""

    def release_port_address(self, ctx: RequestContext, subnet_id: str, request_token: str) -> None:
        """Call IPAM: give a port's address of the subnet back (nothing when it is not held)."""

    def associate_floating(self, ctx: RequestContext, host: str, address: str, fixed_address: str) -> None:
        """Call ``host``'s network worker: translate ``address`` to ``fixed_address`` there."""

    def disassociate_floating(self, ctx: RequestContext, host: str, address: str) -> None:
        """Call ``host``'s network worker: stop translating ``address``."""


class TopologyClient(Protocol):
    def add_host(self, ctx: RequestContext, name: str, tunnel_address: str | None, agent_address: str | None,
                 number: int | None, datacenter: str) -> dict:
        """Call IPAM: number the host (idempotent by name); it announces the host to every network
        worker. Returns the host with its number, block and gateway."""

    def remove_host(self, ctx: RequestContext, name: str, datacenter: str) -> dict:
        """Call IPAM: remove the host (``{"removed": bool}``); it announces that the host left."""

    def add_segment(self, ctx: RequestContext, project_id: str, name: str) -> dict:
        """Call IPAM: the project's segment ``name`` (numbered if new; the tenant too), with its ``id``."""

    def remove_segment(self, ctx: RequestContext, project_id: str, name: str) -> dict:
        """Call IPAM: remove the segment (``{"removed": bool}``); Conflict while it holds addresses."""


@dataclasses.dataclass
class Clients:
    scheduler: SchedulerClient
    compute: ComputeClient
    network: NetworkClient
    topology: TopologyClient
    #: The volume workers (fabric.volume.api.VolumeRPC); None where a test gives the API none.
    volume: object = None


class _SchedulerAdapter:
    """build_instances over the scheduler's rpcapi (one cast per instance)."""

    def __init__(self, transport) -> None:
        self._api = SchedulerAPI(transport)

    def build_instances(self, ctx, instance_ids, request_spec):
        for instance_id in instance_ids:
            self._api.schedule_and_build(ctx, instance_id)


class _ComputeAdapter:
    """Compute casts and the console call through the compute workers' rpcapi."""

    def __init__(self, transport, call_timeout: float) -> None:
        self._api = ComputeAPI(transport, timeout=call_timeout)

    def instance_action(self, ctx, host, action, instance_id, **kwargs):
        getattr(self._api, action)(ctx, host, instance_id, **kwargs)

    def get_console_output(self, ctx, host, instance_id, length):
        text = self._api.get_console_output(ctx, host, instance_id)
        if length is None:
            return text
        return "".join(text.splitlines(keepends=True)[-length:]) if length else ""

    def get_diagnostics(self, ctx, host, instance_id):
        return self._api.get_diagnostics(ctx, host, instance_id)


class _NetworkAdapter:
    """Network fanouts and floating-address calls through the network workers' rpcapi; subnet pools
    and floating addresses through IPAM's."""

    def __init__(self, transport, call_timeout: float) -> None:
        self._network = NetworkAPI(transport, timeout=call_timeout)
        self._ipam = IpamAPI(transport, timeout=call_timeout)

    def network_created(self, ctx, network):
        self._network.network_created(ctx, network)

    def network_deleted(self, ctx, network_id):
        self._network.network_deleted(ctx, network_id)

    def network_changed(self, ctx, network_id):
        self._network.network_changed(ctx, network_id)

    def subnet_created(self, ctx, subnet_id):
        self._ipam.subnet_created(ctx, subnet_id)

    def subnet_updated(self, ctx, subnet_id):
        self._ipam.subnet_updated(ctx, subnet_id)

    def security_groups_changed(self, ctx):
        self._network.security_groups_changed(ctx)

    def allocate_floating_address(self, ctx, subnet_id, request_token, address):
        return self._ipam.allocate(ctx, request_token, subnet_id=subnet_id, address=address)

    def release_floating_address(self, ctx, subnet_id, request_token):
        self._ipam.release(ctx, pool=subnet_id, request_token=request_token)

    def routers_changed(self, ctx):
        self._network.routers_changed(ctx)

    def allocate_port_address(self, ctx, subnet_id, request_token, address, port_id):
        return self._ipam.allocate(ctx, request_token, subnet_id=subnet_id, address=address, port_id=port_id)

    def release_port_address(self, ctx, subnet_id, request_token):
        self._ipam.release(ctx, pool=subnet_id, request_token=request_token)

    def associate_floating(self, ctx, host, address, fixed_address):
        self._network.associate_floating(ctx, host, address, fixed_address)

    def disassociate_floating(self, ctx, host, address):
        self._network.disassociate_floating(ctx, host, address)


class _TopologyAdapter:
    """Topology changes through IPAM's rpcapi (IPAM owns the topology and announces changes)."""

    def __init__(self, transport, call_timeout: float) -> None:
        self._ipam = IpamAPI(transport, timeout=call_timeout)

    def add_host(self, ctx, name, tunnel_address, agent_address, number, datacenter):
        return self._ipam.add_host(ctx, name, datacenter=datacenter, number=number, tunnel_address=tunnel_address,
                                   agent_address=agent_address)

    def remove_host(self, ctx, name, datacenter):
        return self._ipam.remove_host(ctx, name, datacenter=datacenter)

    def add_segment(self, ctx, project_id, name):
        return self._ipam.add_segment(ctx, project_id, name)

    def remove_segment(self, ctx, project_id, name):
        return self._ipam.remove_segment(ctx, project_id, name)


def rpc_clients(transport, call_timeout: float = 30.0) -> Clients:
    """The clients over fabric.rpc, through each worker's ``rpcapi`` module."""
    return Clients(scheduler=_SchedulerAdapter(transport), compute=_ComputeAdapter(transport, call_timeout),
                   network=_NetworkAdapter(transport, call_timeout), topology=_TopologyAdapter(transport, call_timeout),
                   volume=VolumeAPI(transport, timeout=call_timeout))
