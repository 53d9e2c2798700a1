"""The volume worker (``fabric-volume``): the server side of fabric.volume.rpcapi.

One per volume host. It makes, changes and removes the host's volume files through
its driver (:class:`fabric.volume.driver.QcowFileDriver`) and serves them over NBD
(:class:`fabric.volume.exports.NbdExports`). Every handler checks the row's status
first and ends with a compare-and-swap from the status the API set, so a
redelivered message (the worker was killed mid-task) redoes or skips the work
without harm, and a transition the reaper already ended stays ended. A failure
ends in the status Cinder names (error, error_extending, error_deleting) with the
reason in ``status_reason``; nothing is left in a transient status: what a dead
worker left behind, the reaper ends (:mod:`fabric.volume.reaper`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fabric import config, periodic
from fabric.context import RequestContext
from fabric.db import Database
from fabric.db.models import Image, Volume, VolumeSnapshot
from fabric.exception import FabricError, Invalid, NotFound, VolumeBackendError
from fabric.manager import Manager, callers_table
from fabric.reconcile import Fixes, log_findings, report
from fabric.rpc import idempotent
from fabric.volume import reaper, states, uploads
from fabric.volume.api import finish_delete, finish_snapshot_delete, row_dict
from fabric.volume.driver import QcowFileDriver
from fabric.volume.exports import NbdExports, connection_info

LOG = logging.getLogger(__name__)

#: Image disk formats a volume can be made from (``qemu-img convert -f``).
IMAGE_FORMATS = ("qcow2", "raw")


def export_address(settings: config.Settings) -> str:
    """Where this host's exports listen: [volume] export_address, else the advertised address, else loopback."""
    return settings.volume.export_address or settings.service.advertise_address or "127.0.0.1"


class VolumeManager(Manager):
    """Volumes of this host: their files, snapshots and NBD exports."""

    topic = "volume"
    rpc_callers = callers_table(
        create_volume=("api",), delete_volume=("api",), extend_volume=("api",), create_snapshot=("api",),
        delete_snapshot=("api",), upload_to_image=("api",), export_volume=("api", "compute"),
        unexport_volume=("api", "compute"), reconcile_volumes=("api",))

    def __init__(self, settings: config.Settings, host: str | None = None, db: Database | None = None,
                 transport: Any = None, *, driver: QcowFileDriver | None = None,
                 exports: NbdExports | None = None, images: Any = None, disks: Any = None) -> None:
        """``images``: what fetches an image's file (default: the compute host's objectstore download);
        ``disks``: where an uploaded volume's image data goes (default: the compute hosts' objectstore
        upload, :class:`fabric.compute.collaborators.ObjectstoreDisks`)."""
        super().__init__(settings, host=host, db=db, transport=transport)
        if self.db is None:
            self.db = Database.from_settings(settings)
        root = Path(settings.volume.storage_dir or Path(settings.default.data_dir) / "volumes")
        self.driver = driver or QcowFileDriver(root, self.host, settings.volume.qemu_img)
        vol = settings.volume
        self.exports = exports or NbdExports(self.db, self.host, export_address(settings),
                                             range(vol.export_port_min, vol.export_port_max + 1), vol.qemu_nbd,
                                             root / "exports")
        self._images = images
        self._disks = disks

    def capabilities(self) -> dict[str, Any]:
        return {"storage": "qcow2-file", "exports": ["nbd"], "export_address": self.exports.address,
                "availability_zone": self.settings.volume.availability_zone}

    def init_host(self) -> None:
        """Start again the exports attached volumes need, stop those nobody needs (a restart or a
        reboot of the host), and report the rest of the drift."""
        findings = self._reconcile(Fixes(stale=True, orphans=True))
        log_findings(LOG, "volumes", self.host, findings)

    # --- helpers ----------------------------------------------------------------------

    def _volume(self, volume_id: str) -> dict[str, Any] | None:
        with self.db.begin() as session:
            row = session.get(Volume, volume_id)
            return row_dict(row) if row is not None and row.host == self.host else None

    def _fail(self, model: Any, row_id: str, transient: str, failed: str, error: Exception) -> None:
        reason = error.message if isinstance(error, FabricError) else f"{type(error).__name__}: {error}"
        LOG.warning("volume: %s %s failed (%s -> %s): %s", model.__tablename__, row_id, transient, failed, reason)
        with self.db.begin() as session:
            states.swap(session, model, row_id, transient, failed, status_reason=reason[:255])

    def _image_file(self, image_id: str) -> tuple[str, str]:
        """(path of the image's verified bytes on this host, its disk format)."""
        with self.db.begin() as session:
            image = session.get(Image, image_id)
            if image is None:
                raise NotFound(kind="Image", ident=image_id)
            if image.disk_format not in IMAGE_FORMATS:
                raise Invalid(reason=f"image {image_id} has disk_format {image.disk_format!r}; a volume is made "
                                     f"from {', '.join(IMAGE_FORMATS)}")
            session.expunge(image)
        if self._images is None:
            # The compute host's way: a signed GET from the objectstore, checked against the
            # recorded size and checksums, kept in this host's image cache (fabric.images).
            from fabric.compute.collaborators import ObjectstoreImages
            self._images = ObjectstoreImages.from_settings(self.settings, self.db)
        return self._images._file(image), image.disk_format

    # --- volumes ----------------------------------------------------------------------

    @idempotent
    def create_volume(self, ctx: RequestContext, volume_id: str) -> None:
        """creating -> available once the file holds its source; error (with the reason) if not."""
        volume = self._volume(volume_id)
        if volume is None or volume["status"] != states.CREATING:
            return
        try:
            size = volume["size"]
            if volume["snapshot_id"]:
                with self.db.begin() as session:
                    parent_id = session.get(VolumeSnapshot, volume["snapshot_id"]).volume_id
                self.driver.create_from_snapshot(volume_id, size, parent_id, volume["snapshot_id"])
            elif volume["source_volid"]:
                self.driver.clone(volume_id, size, volume["source_volid"])
            elif volume["image_id"]:
                path, disk_format = self._image_file(volume["image_id"])
                self.driver.create_from_file(volume_id, size, path, disk_format)
            else:
                self.driver.create_empty(volume_id, size)
        except Exception as error:  # noqa: BLE001 - every failure must end in a resting status
            self._fail(Volume, volume_id, states.CREATING, states.ERROR, error)
            return
        with self.db.begin() as session:
            states.swap(session, Volume, volume_id, states.CREATING, states.AVAILABLE, status_reason=None)

    @idempotent
    def delete_volume(self, ctx: RequestContext, volume_id: str) -> None:
        """deleting -> deleted (quota given back) once its export and file are gone."""
        volume = self._volume(volume_id)
        if volume is None or volume["status"] != states.DELETING:
            return
        try:
            self.exports.stop(volume_id)
            self.driver.delete(volume_id)
        except Exception as error:  # noqa: BLE001 - every failure must end in a resting status
            self._fail(Volume, volume_id, states.DELETING, states.ERROR_DELETING, error)
            return
        with self.db.begin() as session:
            finish_delete(session, volume_id)

    @idempotent
    def extend_volume(self, ctx: RequestContext, volume_id: str, new_size: int) -> None:
        """extending -> available once the file is ``new_size`` GiB; error_extending if not."""
        volume = self._volume(volume_id)
        if volume is None or volume["status"] != states.EXTENDING:
            return
        try:
            self.driver.extend(volume_id, max(new_size, volume["size"]))
        except Exception as error:  # noqa: BLE001 - every failure must end in a resting status
            self._fail(Volume, volume_id, states.EXTENDING, states.ERROR_EXTENDING, error)
            return
        with self.db.begin() as session:
            states.swap(session, Volume, volume_id, states.EXTENDING, states.AVAILABLE, status_reason=None)

    # --- snapshots --------------------------------------------------------------------

    def _snapshot(self, snapshot_id: str, status: str) -> dict[str, Any] | None:
        with self.db.begin() as session:
            snapshot = session.get(VolumeSnapshot, snapshot_id)
            if snapshot is None or snapshot.status != status:
                return None
            volume = session.get(Volume, snapshot.volume_id)
            return row_dict(snapshot) if volume is not None and volume.host == self.host else None

    @idempotent
    def create_snapshot(self, ctx: RequestContext, snapshot_id: str) -> None:
        """A snapshot's creating -> available once taken; error if not."""
        snapshot = self._snapshot(snapshot_id, states.CREATING)
        if snapshot is None:
            return
        try:
            live = self.exports.record(snapshot["volume_id"]) is not None  # served: qemu-nbd holds its lock
            self.driver.create_snapshot(snapshot["volume_id"], snapshot_id, live=live)
        except Exception as error:  # noqa: BLE001 - every failure must end in a resting status
            self._fail(VolumeSnapshot, snapshot_id, states.CREATING, states.ERROR, error)
            return
        with self.db.begin() as session:
            states.swap(session, VolumeSnapshot, snapshot_id, states.CREATING, states.AVAILABLE, status_reason=None)

    @idempotent
    def delete_snapshot(self, ctx: RequestContext, snapshot_id: str) -> None:
        """A snapshot's deleting -> deleted (quota given back) once dropped; error_deleting if not."""
        snapshot = self._snapshot(snapshot_id, states.DELETING)
        if snapshot is None:
            return
        try:
            self.driver.delete_snapshot(snapshot["volume_id"], snapshot_id)
        except Exception as error:  # noqa: BLE001 - every failure must end in a resting status
            self._fail(VolumeSnapshot, snapshot_id, states.DELETING, states.ERROR_DELETING, error)
            return
        with self.db.begin() as session:
            finish_snapshot_delete(session, snapshot_id)

    # --- uploads to images ----------------------------------------------------------

    @idempotent
    def upload_to_image(self, ctx: RequestContext, volume_id: str, image_id: str) -> None:
        """uploading -> available (in-use while attached) once the queued image ``image_id`` holds
        the volume's bytes and is active; a failure kills the image and names the reason in the
        volume's status_reason. A message for a volume no longer uploading kills the image."""
        volume = self._volume(volume_id)
        if volume is None or volume["status"] != states.UPLOADING:
            uploads.abandon(self.db, image_id)
            return
        if self._disks is None:
            # The compute hosts' way to store a snapshot's disk: the Image API's upload, over HTTP.
            from fabric.compute.collaborators import ObjectstoreDisks
            self._disks = ObjectstoreDisks(self.settings, self.db)
        reason = None
        try:
            uploads.upload(self.db, self.driver, self._disks, volume_id, image_id, self._remove_image_data)
        except Exception as error:  # noqa: BLE001 - every failure must end in a resting status
            reason = error.message if isinstance(error, FabricError) else f"{type(error).__name__}: {error}"
            LOG.warning("volume: upload of %s to image %s failed: %s", volume_id, image_id, reason)
            uploads.abandon(self.db, image_id)
        with self.db.begin() as session:
            states.settle(session, volume_id, states.UPLOADING,
                          status_reason=f"upload to image {image_id} failed: {reason}"[:255] if reason else None)

    def _remove_image_data(self, image_id: str) -> None:
        from fabric.api import image_store

        image_store.remove(self.settings, self.db, image_id)

    # --- exports ----------------------------------------------------------------------

    @idempotent
    def export_volume(self, ctx: RequestContext, volume_id: str) -> dict[str, Any]:
        """Serve the volume over NBD (started if it is not running); answers its connection_info.
        Raises NotFound (no such volume on this host, or no file), VolumeBackendError."""
        volume = self._volume(volume_id)
        if volume is None or volume["status"] in (states.DELETED, states.DELETING, states.CREATING):
            raise NotFound(kind=f"Volume on host {self.host}", ident=volume_id)
        if not self.driver.exists(volume_id):
            raise VolumeBackendError(host=self.host, action="export", ident=volume_id,
                                     reason="its file is missing")
        export = self.exports.ensure(volume_id, self.driver.path(volume_id), multiattach=volume["multiattach"])
        return connection_info(export)

    @idempotent
    def unexport_volume(self, ctx: RequestContext, volume_id: str) -> None:
        """Stop serving the volume (nothing when it is not served)."""
        self.exports.stop(volume_id, self.driver.path(volume_id))

    # --- housekeeping -----------------------------------------------------------------

    @periodic.periodic_task(lambda self: self.settings.volume.reap_interval)
    def reap_stuck_volumes(self, ctx: RequestContext) -> None:
        """End volumes and snapshots left in a transient status by a dead worker or a lost message."""
        for line in reaper.reap(self.db, self.settings.volume.transient_timeout):
            LOG.warning("volume reaper: %s", line)

    def reconcile_volumes(self, ctx: RequestContext, fixes: dict[str, bool] | None = None) -> dict[str, Any]:
        """This host's volume and export drift, repairing the kinds ``fixes`` names."""
        return report(self.host, self._reconcile(Fixes.from_dict(fixes)))

    def _reconcile(self, fixes: Fixes) -> list:
        from fabric.reconcile import volumes

        return volumes.reconcile(self.db, self.host, self.driver, self.exports, fixes)
