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

    # --- rebuild, snapshot and moves (fabric.compute.moves) ------------------------------

    def rebuild_instance(self, ctx: RequestContext, host: str, instance_id: str, image_id: str) -> None:
        """Re-create the guest's disk from ``image_id`` and start it again (cast)."""
        self._host(host).cast(ctx, "rebuild_instance", instance_id=instance_id, image_id=image_id)

    def snapshot_instance(self, ctx: RequestContext, host: str, instance_id: str, image_id: str) -> None:
        """Upload the guest's disk as the data of the queued image ``image_id`` (cast)."""
        self._host(host).cast(ctx, "snapshot_instance", instance_id=instance_id, image_id=image_id)

    def resize_instance(self, ctx: RequestContext, host: str, instance_id: str, migration_id: str) -> None:
        """To the source host: claim a destination, power off, export the disk, hand over (cast)."""
        self._host(host).cast(ctx, "resize_instance", instance_id=instance_id, migration_id=migration_id)

    def finish_resize(self, ctx: RequestContext, host: str, instance_id: str, migration_id: str,
                      disk_sent: bool = True) -> None:
        """To the destination host: start the moved guest (on the disk the source shipped, when
        ``disk_sent``); the server then rests in VERIFY_RESIZE (cast)."""
        self._host(host).cast(ctx, "finish_resize", instance_id=instance_id, migration_id=migration_id,
                              disk_sent=disk_sent)

    def confirm_resize(self, ctx: RequestContext, host: str, instance_id: str, migration_id: str) -> None:
        """To the source host: drop the set-aside guest and give its claim back (cast)."""
        self._host(host).cast(ctx, "confirm_resize", instance_id=instance_id, migration_id=migration_id)

    def revert_resize(self, ctx: RequestContext, host: str, instance_id: str, migration_id: str) -> None:
        """To the destination host: destroy the moved guest, give its claim back, hand back (cast)."""
        self._host(host).cast(ctx, "revert_resize", instance_id=instance_id, migration_id=migration_id)

    def finish_revert_resize(self, ctx: RequestContext, host: str, instance_id: str, migration_id: str) -> None:
        """To the source host: restore the set-aside guest with its old flavor (cast)."""
        self._host(host).cast(ctx, "finish_revert_resize", instance_id=instance_id, migration_id=migration_id)

    def drop_set_aside(self, ctx: RequestContext, host: str, instance_id: str, migration_id: str) -> None:
        """To the source of a move whose server was deleted elsewhere: drop its set-aside guest (cast)."""
        self._host(host).cast(ctx, "drop_set_aside", instance_id=instance_id, migration_id=migration_id)

    # --- volumes (fabric.compute.volumes) ----------------------------------------------

    def attach_volume(self, ctx: RequestContext, host: str, instance_id: str, volume_id: str,
                      attachment_id: str, device: str) -> None:
        """Connect the reserved attachment and hot-plug its disk as ``device`` (cast)."""
        self._host(host).cast(ctx, "attach_volume", instance_id=instance_id, volume_id=volume_id,
                              attachment_id=attachment_id, device=device)

    def detach_volume(self, ctx: RequestContext, host: str, instance_id: str, volume_id: str,
                      attachment_id: str) -> None:
        """Unplug the volume's disk, then delete the attachment (cast)."""
        self._host(host).cast(ctx, "detach_volume", instance_id=instance_id, volume_id=volume_id,
                              attachment_id=attachment_id)

    def get_console_output(self, ctx: RequestContext, host: str, instance_id: str,
                           max_bytes: int = 65536) -> str:
        """The tail of the guest's serial console (call). Raises GuestNotFound."""
        return self._host(host).call(ctx, "get_console_output", instance_id=instance_id, max_bytes=max_bytes)

    def get_diagnostics(self, ctx: RequestContext, host: str, instance_id: str) -> dict[str, Any]:
        """The guest's counters from its host's driver (call). Raises GuestNotFound, NotSupported."""
        return self._host(host).call(ctx, "get_diagnostics", instance_id=instance_id)

    def get_available_resource(self, ctx: RequestContext, host: str) -> dict[str, Any]:
        return self._host(host).call(ctx, "get_available_resource")

    def reconcile_servers(self, ctx: RequestContext, host: str, fixes: dict[str, bool] | None = None) -> dict[str, Any]:
        """``host``'s server drift, repairing the kinds ``fixes`` names (call; see
        :meth:`fabric.compute.manager.ComputeManager.reconcile_servers`)."""
        return self._host(host).call(ctx, "reconcile_servers", fixes=fixes or {})
