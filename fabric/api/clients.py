"""The API's view of the workers: small client interfaces, injectable.

The API only ever casts (or, for console output, calls) through these. In a
deployment they are backed by the workers' ``rpcapi`` modules over fabric.rpc
(:func:`rpc_clients`); tests inject :class:`RecordingClients`, which keeps
every cast so a test can assert what the API asked for.

Method names and keyword arguments here are the contract with the workers'
managers (same names there).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

from fabric.compute.rpcapi import ComputeAPI
from fabric.context import RequestContext
from fabric.ipam.rpcapi import IpamAPI
from fabric.network.rpcapi import NetworkAPI
from fabric.scheduler.rpcapi import SchedulerAPI


class SchedulerClient(Protocol):
    def build_instances(self, ctx: RequestContext, instance_ids: list[str], request_spec: dict) -> None:
        """Cast: place and build these committed instance rows."""


class ComputeClient(Protocol):
    def instance_action(self, ctx: RequestContext, host: str, action: str, instance_id: str, **kwargs: Any) -> None:
        """Cast ``action`` (reboot_instance with ``hard``, stop_instance, start_instance, pause_instance,
        unpause_instance, suspend_instance, resume_instance, terminate_instance) to ``host``."""

    def get_console_output(self, ctx: RequestContext, host: str, instance_id: str, length: int | None) -> str:
        """Call: the last ``length`` lines of the guest's console (all of it for None)."""


class NetworkClient(Protocol):
    def network_created(self, ctx: RequestContext, network: dict) -> None:
        """Cast (fanout): a network row was committed; workers set up what they host.
        ``network`` carries id, network_type, project_id, segmentation_id, physical_bridge, mtu."""

    def network_deleted(self, ctx: RequestContext, network_id: str) -> None:
        """Cast (fanout): a network row was deleted."""

    def subnet_created(self, ctx: RequestContext, subnet_id: str) -> None:
        """Cast: the subnet's pool may be prepared by IPAM."""


@dataclasses.dataclass
class Clients:
    scheduler: SchedulerClient
    compute: ComputeClient
    network: NetworkClient


class RecordingClients:
    """Clients that record every request instead of sending it (tests, API-only runs).

    ``casts`` is a list of (client, method, kwargs); ``console`` is what
    get_console_output answers.
    """

    def __init__(self) -> None:
        self.casts: list[tuple[str, str, dict]] = []
        self.console = "fabric console\n"
        self.clients = Clients(scheduler=_Recorder(self, "scheduler"), compute=_Recorder(self, "compute"),
                               network=_Recorder(self, "network"))

    def named(self, method: str) -> list[dict]:
        return [kwargs for _, name, kwargs in self.casts if name == method]


class _Recorder:
    def __init__(self, owner: RecordingClients, client: str) -> None:
        self._owner = owner
        self._client = client

    def __getattr__(self, method: str):
        def record(ctx: RequestContext, **kwargs: Any) -> Any:
            kwargs["request_id"] = ctx.request_id
            self._owner.casts.append((self._client, method, kwargs))
            if method == "get_console_output":
                return self._owner.console
            return None
        return record


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


class _NetworkAdapter:
    """Network fanouts through the network workers' rpcapi; subnet pools through IPAM's."""

    def __init__(self, transport) -> None:
        self._network = NetworkAPI(transport)
        self._ipam = IpamAPI(transport)

    def network_created(self, ctx, network):
        self._network.network_created(ctx, network)

    def network_deleted(self, ctx, network_id):
        self._network.network_deleted(ctx, network_id)

    def subnet_created(self, ctx, subnet_id):
        self._ipam.subnet_created(ctx, subnet_id)


def rpc_clients(transport, call_timeout: float = 30.0) -> Clients:
    """The clients over fabric.rpc, through each worker's ``rpcapi`` module."""
    return Clients(scheduler=_SchedulerAdapter(transport), compute=_ComputeAdapter(transport, call_timeout),
                   network=_NetworkAdapter(transport))
