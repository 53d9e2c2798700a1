"""Client side of the compute workers' RPC interface: the one place that picks cast or call.

Work on an instance is a cast to ``compute.<host>`` (persistent, acked after
the handler, so a worker killed mid-task gets it again); reads that answer
a user are calls to the same queue.
"""

from __future__ import annotations

from typing import Any

from fabric import rpc
from fabric.context import RequestContext

TOPIC = "compute"


class ComputeAPI:
    """Ask the compute worker on an instance's host to act on it."""

    def __init__(self, transport: Any, *, timeout: float | None = None) -> None:
        self.client = rpc.RPCClient(transport, rpc.Target(topic=TOPIC), timeout=timeout)

    def _host(self, host: str) -> rpc.RPCClient:
        return self.client.prepare(server=host)

    def build_instance(self, ctx: RequestContext, host: str, instance_id: str) -> None:
        """Build a placed instance (cast). Raises Unroutable when no worker serves ``host``."""
        self._host(host).cast(ctx, "build_instance", instance_id=instance_id)

    def terminate_instance(self, ctx: RequestContext, host: str, instance_id: str) -> None:
        self._host(host).cast(ctx, "terminate_instance", instance_id=instance_id)

    def reboot_instance(self, ctx: RequestContext, host: str, instance_id: str, hard: bool = False) -> None:
        self._host(host).cast(ctx, "reboot_instance", instance_id=instance_id, hard=hard)

    def stop_instance(self, ctx: RequestContext, host: str, instance_id: str) -> None:
        self._host(host).cast(ctx, "stop_instance", instance_id=instance_id)

    def start_instance(self, ctx: RequestContext, host: str, instance_id: str) -> None:
        self._host(host).cast(ctx, "start_instance", instance_id=instance_id)

    def pause_instance(self, ctx: RequestContext, host: str, instance_id: str) -> None:
        self._host(host).cast(ctx, "pause_instance", instance_id=instance_id)

    def unpause_instance(self, ctx: RequestContext, host: str, instance_id: str) -> None:
        self._host(host).cast(ctx, "unpause_instance", instance_id=instance_id)

    def suspend_instance(self, ctx: RequestContext, host: str, instance_id: str) -> None:
        self._host(host).cast(ctx, "suspend_instance", instance_id=instance_id)

    def resume_instance(self, ctx: RequestContext, host: str, instance_id: str) -> None:
        self._host(host).cast(ctx, "resume_instance", instance_id=instance_id)

    def get_console_output(self, ctx: RequestContext, host: str, instance_id: str,
                           max_bytes: int = 65536) -> str:
        """The tail of the guest's serial console (call). Raises GuestNotFound."""
        return self._host(host).call(ctx, "get_console_output", instance_id=instance_id, max_bytes=max_bytes)

    def get_available_resource(self, ctx: RequestContext, host: str) -> dict[str, Any]:
        return self._host(host).call(ctx, "get_available_resource")

    def reconcile_servers(self, ctx: RequestContext, host: str, fixes: dict[str, bool] | None = None) -> dict[str, Any]:
        """``host``'s server drift, repairing the kinds ``fixes`` names (call; see
        :meth:`fabric.compute.manager.ComputeManager.reconcile_servers`)."""
        return self._host(host).call(ctx, "reconcile_servers", fixes=fixes or {})
