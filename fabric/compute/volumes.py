"""Volumes on this host's guests: attach, detach, and what a server's delete does to them.

The API reserves the volume (``attachment_create``: the volume ``reserved``),
starts the server's action and casts here; the steps are those of Cinder's v3
attachments, through :class:`fabric.volume.api.VolumeService`:
``attachment_update`` with this host's connector (the volume host exports the
volume and answers its connection_info), the driver hot-plugs the disk, then
``attachment_complete`` (volume ``in-use``). A failure at any step undoes the
earlier ones (the disk unplugged, ``attachment_delete``: the volume
``available`` again), records a fault and ends the server's action in error.
Every step is safe to run again, so a redelivered cast finishes the work.

The guest's definition keeps its volumes (libvirt's persistent config), so a
reboot or a stop and start keeps them; a guest defined again from scratch
(rebuild, a move) gets them from :meth:`VolumesMixin._volume_disks`.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from fabric.compute import instance_actions, states
from fabric.compute.faults import record_fault
from fabric.context import RequestContext
from fabric.exception import FabricError, GuestNotFound, Invalid, NotFound
from fabric.virt.driver import BootImage, VolumeDisk

LOG = logging.getLogger(__name__)

#: Guest disk names in the order they are handed out; vda is the image's disk when there is one.
DEVICE_NAMES = tuple(f"vd{letter}" for letter in "abcdefghijklmnopqrstuvwxyz")
#: The instance action of each handler, as Nova names them.
ATTACH, DETACH = "attach_volume", "detach_volume"


def choose_device(used: list[str | None], has_image_disk: bool, requested: str | None = None) -> str:
    """The guest disk name a new volume takes: ``requested`` (``/dev/vdc`` or ``vdc``) when given
    and free, else the first free one. ``used``: the server's attachments' devices.

    Raises Invalid naming a requested name that is malformed or taken, or when none is left.
    """
    taken = {(device or "").removeprefix("/dev/") for device in used} | ({"vda"} if has_image_disk else set())
    if requested is not None:
        name = requested.removeprefix("/dev/") if isinstance(requested, str) else requested
        if name not in DEVICE_NAMES:
            raise Invalid(reason=f"device {requested!r} is not a virtio disk name (/dev/vdb ... /dev/vdz)")
        if name in taken:
            raise Invalid(reason=f"device {requested!r} is in use on the server; free: "
                                 f"{', '.join(n for n in DEVICE_NAMES if n not in taken)[:60]}")
        return name
    for name in DEVICE_NAMES:
        if name not in taken:
            return name
    raise Invalid(reason=f"the server has no free disk name left ({len(DEVICE_NAMES)} in use)")


def attached_disks(attachments: list[dict[str, Any]]) -> tuple[VolumeDisk, ...]:
    """The guest disks of a server's attachments that are connected (attached, with a
    connection_info and a device), in the order given."""
    return tuple(VolumeDisk(volume_id=a["volume_id"], device=a["device"].removeprefix("/dev/"),
                            connection_info=a["connection_info"])
                 for a in attachments
                 if a.get("status") == "attached" and a.get("connection_info") and a.get("device"))


def _as_system(ctx: RequestContext) -> RequestContext:
    """``ctx`` (its request id kept) with the rights of the system's own work: a server's volumes
    are read and released whoever deletes or rebuilds it (an admin of another project too)."""
    return dataclasses.replace(ctx, is_admin=True)


def volume_service(db: Any, transport: Any) -> Any:
    """The real volume collaborator: :class:`fabric.volume.api.VolumeService` over ``transport``."""
    from fabric.volume.api import VolumeService
    from fabric.volume.rpcapi import VolumeAPI

    return VolumeService(db, VolumeAPI(transport))


class VolumesMixin:
    """The compute manager's volume handlers (needs ``db``, ``driver``, ``host``, ``volumes``:
    a :class:`fabric.volume.api.VolumeService`, and ``settings``)."""

    def _connector(self) -> dict[str, str]:
        """What the volume host is told about this host: its name and the address it reaches
        the volume host from (the advertised address, else the underlay's, else the name)."""
        settings = self.settings
        address = (getattr(settings.service, "advertise_address", "")
                   or getattr(settings.network, "tunnel_address", "") or self.host)
        return {"host": self.host, "ip": address}

    def _attachments(self, ctx: RequestContext, instance_id: str) -> list[dict[str, Any]]:
        """The server's volume attachments (every status; none without a volume service)."""
        if self.volumes is None:
            return []
        return self.volumes.attachments_for_instance(_as_system(ctx), instance_id)

    def _volume_disks(self, ctx: RequestContext, instance_id: str,
                      attachments: list[dict[str, Any]] | None = None) -> tuple[VolumeDisk, ...]:
        """The server's connected volumes, as the guest's definition lists them (from
        ``attachments`` when given: the server's as just read)."""
        return attached_disks(self._attachments(ctx, instance_id) if attachments is None else attachments)

    # --- boot from volume ------------------------------------------------------------

    @staticmethod
    def _boot_attachment(attachments: list[dict[str, Any]]) -> dict[str, Any] | None:
        return next((a for a in attachments if a.get("boot_index") == 0), None)

    def _connect_boot_volume(self, ctx: RequestContext, instance_id: str) -> list[dict[str, Any]] | None:
        """Connect the server's boot volume (reserved by the API at create) as its vda, before
        the guest is defined. Safe to repeat. Raises what the volume service raises.

        Returns the server's attachments as they stand when nothing had to be connected (what
        the guest's definition is then made from: one read serves the build), else None."""
        attachments = self._attachments(ctx, instance_id)
        attachment = self._boot_attachment(attachments)
        if attachment is None or attachment["status"] == "attached":
            return attachments
        self.volumes.attachment_update(_as_system(ctx), attachment["id"], self._connector())
        self.volumes.attachment_complete(_as_system(ctx), attachment["id"], "/dev/vda")
        return None

    def _boot_volume_image(self, ctx: RequestContext, instance: dict,
                           attachments: list[dict[str, Any]]) -> BootImage | None:
        """What a server booted from a volume boots (None: it has no boot volume; ``attachments``:
        the server's). The guest's vda
        is the volume; a volume made from an image that boots a kernel directly (its
        ``kernel_id`` property, as the test guest's) boots that kernel and ramdisk with the
        volume as its vda, as Nova's libvirt driver does; any other boots the volume itself."""
        attachment = self._boot_attachment(attachments)
        if attachment is None:
            return None
        volume = self.volumes.get(_as_system(ctx), attachment["volume_id"])
        image_metadata = volume.get("image_metadata") or {}
        if image_metadata.get("kernel_id") and image_metadata.get("image_id"):
            image = self.images.boot_image(ctx, {**instance, "image_id": image_metadata["image_id"]})
            return BootImage(kernel=image.kernel, initrd=image.initrd, cmdline=image.cmdline)
        return BootImage()

    # --- attach and detach -----------------------------------------------------------

    def attach_volume(self, ctx: RequestContext, instance_id: str, volume_id: str, attachment_id: str,
                      device: str) -> None:
        """Connect the reserved attachment and hot-plug its disk into the guest as ``device``.

        Never raises (a cast): the outcome is on the attachment, the volume and the server's
        action (error: a fault on the server, the volume available again).
        """
        disk = None
        try:
            instance = states.get_instance(self.db, instance_id)
            if instance.get("host") != self.host or instance.get("task_state") == states.DELETING:
                raise Invalid(reason=f"server {instance_id} is not on {self.host} or is being deleted")
            connection_info = self.volumes.attachment_update(ctx, attachment_id, self._connector())
            disk = VolumeDisk(volume_id=volume_id, device=device, connection_info=connection_info)
            self.driver.attach_volume(instance_id, disk)
            self.volumes.attachment_complete(ctx, attachment_id, f"/dev/{device}")
        except Exception as exc:  # noqa: BLE001 - every failure must end in a resting state
            LOG.warning("attaching volume %s to instance %s failed: %s", volume_id, instance_id, exc,
                        exc_info=not isinstance(exc, FabricError))
            self._undo_attach(ctx, instance_id, disk, attachment_id)
            self._finish(ctx, instance_id, exc)
            return
        LOG.info("volume %s attached to instance %s as /dev/%s", volume_id, instance_id, device)
        self._finish(ctx, instance_id)

    def _undo_attach(self, ctx: RequestContext, instance_id: str, disk: VolumeDisk | None,
                     attachment_id: str) -> None:
        if disk is not None:
            try:
                self.driver.detach_volume(instance_id, disk.volume_id)
            except GuestNotFound:
                pass
            except Exception:  # noqa: BLE001 - the attachment is still undone below
                LOG.exception("could not unplug volume %s from instance %s", disk.volume_id, instance_id)
        try:
            self.volumes.attachment_delete(ctx, attachment_id)
        except Exception:  # noqa: BLE001
            LOG.exception("could not delete attachment %s of instance %s", attachment_id, instance_id)

    def detach_volume(self, ctx: RequestContext, instance_id: str, volume_id: str, attachment_id: str) -> None:
        """Unplug the volume's disk from the guest (waiting until the guest lets go), then delete
        the attachment (the volume available again once no server has it). Never raises: a
        failure leaves the volume attached, with a fault on the server."""
        try:
            try:
                self.driver.detach_volume(instance_id, volume_id)
            except GuestNotFound:
                pass  # no guest here holds it (e.g. deleted meanwhile): only the record remains
            self.volumes.attachment_delete(ctx, attachment_id)
        except Exception as exc:  # noqa: BLE001
            LOG.warning("detaching volume %s from instance %s failed: %s", volume_id, instance_id, exc,
                        exc_info=not isinstance(exc, FabricError))
            self._finish(ctx, instance_id, exc)
            return
        LOG.info("volume %s detached from instance %s", volume_id, instance_id)
        self._finish(ctx, instance_id)

    def _finish(self, ctx: RequestContext, instance_id: str, exc: Exception | None = None) -> None:
        try:
            if exc is not None:
                record_fault(self.db, instance_id, exc, self.host)
            instance_actions.finish(self.db, ctx, instance_id,
                                    instance_actions.ERROR if exc else instance_actions.SUCCESS,
                                    None if exc is None else str(exc))
        except NotFound:
            pass

    def _release_volumes(self, ctx: RequestContext, instance_id: str) -> None:
        """On a server's delete (its guest destroyed): delete each attachment, and the volumes
        marked delete_on_termination. Best effort: a failure is logged (reconciliation and the
        volume reaper settle what is left), never fails the delete."""
        if self.volumes is None:
            return
        admin = _as_system(ctx)
        try:
            attachments = self.volumes.attachments_for_instance(admin, instance_id)
        except Exception:  # noqa: BLE001
            LOG.exception("could not list the volumes of deleted instance %s", instance_id)
            return
        for attachment in attachments:
            try:
                self.volumes.attachment_delete(admin, attachment["id"])
                if attachment.get("delete_on_termination"):
                    self.volumes.delete(admin, attachment["volume_id"])
            except Exception:  # noqa: BLE001
                LOG.exception("could not release volume %s of deleted instance %s",
                              attachment.get("volume_id"), instance_id)
