"""Client side of the volume workers' RPC interface: the one place that picks cast or call.

Work on a volume's bytes (create, delete, extend, snapshots, upload to an image) is a cast to
``volume.<host>``, the volume's host (persistent, acked after the handler, so a
worker killed mid-task gets it again; the handlers are idempotent). Exports are
calls to the same queue, because the caller needs the connection info back.
"""

from __future__ import annotations

from typing import Any

from fabric import rpc
from fabric.context import RequestContext

TOPIC = "volume"
BINARY = "fabric-volume"


class VolumeAPI:
    """Ask the volume worker on a volume's host to act on it."""

    def __init__(self, transport: Any, *, timeout: float | None = None) -> None:
        self.client = rpc.RPCClient(transport, rpc.Target(topic=TOPIC), timeout=timeout)

    def _host(self, host: str) -> rpc.RPCClient:
        return self.client.prepare(server=host)

    def create_volume(self, ctx: RequestContext, host: str, volume_id: str) -> None:
        """Make the volume's bytes (empty, from its image, snapshot or source volume); cast."""
        self._host(host).cast(ctx, "create_volume", volume_id=volume_id)

    def delete_volume(self, ctx: RequestContext, host: str, volume_id: str) -> None:
        self._host(host).cast(ctx, "delete_volume", volume_id=volume_id)

    def extend_volume(self, ctx: RequestContext, host: str, volume_id: str, new_size: int) -> None:
        self._host(host).cast(ctx, "extend_volume", volume_id=volume_id, new_size=new_size)

    def create_snapshot(self, ctx: RequestContext, host: str, snapshot_id: str) -> None:
        self._host(host).cast(ctx, "create_snapshot", snapshot_id=snapshot_id)

    def delete_snapshot(self, ctx: RequestContext, host: str, snapshot_id: str) -> None:
        self._host(host).cast(ctx, "delete_snapshot", snapshot_id=snapshot_id)

    def upload_to_image(self, ctx: RequestContext, host: str, volume_id: str, image_id: str) -> None:
        """Fill the queued image ``image_id`` with the volume's bytes; cast."""
        self._host(host).cast(ctx, "upload_to_image", volume_id=volume_id, image_id=image_id)

    def export_volume(self, ctx: RequestContext, host: str, volume_id: str) -> dict[str, Any]:
        """Call: make sure the volume is served over NBD; answers its connection_info."""
        return self._host(host).prepare(idempotent=True).call(ctx, "export_volume", volume_id=volume_id)

    def unexport_volume(self, ctx: RequestContext, host: str, volume_id: str) -> None:
        """Call: stop serving the volume (nothing when it is not served)."""
        self._host(host).prepare(idempotent=True).call(ctx, "unexport_volume", volume_id=volume_id)

    def reconcile_volumes(self, ctx: RequestContext, host: str, fixes: dict[str, bool] | None = None) -> dict[str, Any]:
        """Call: the host's volume and export drift, repairing the kinds ``fixes`` names
        (see fabric.reconcile.volumes); answers fabric.reconcile.report's form."""
        return self._host(host).call(ctx, "reconcile_volumes", fixes=fixes or {})
