"""What other services import to act on volumes: state checks, quota and intent, then a
cast (or, for exports, a call) to the volume's host.

The Block Storage API (``fabric.api.block_storage``) calls :class:`VolumeService` for
every change; Compute's ``os-volume_attachments`` and boot from volume call its
``attachment_*`` methods (modelled on Cinder's v3 attachments API). Every status
change is a compare-and-swap (:func:`fabric.volume.states.swap`), so two requests
cannot both start, and a refused one changes nothing. Quotas (``volumes``,
``gigabytes``, ``snapshots``) are taken with :func:`fabric.api.quota.reserve` in the
transaction that writes the intent, and given back exactly once, in the transaction
whose compare-and-swap ends the volume or snapshot (:func:`finish_delete`,
:func:`finish_snapshot_delete`).

Callers pass the caller's context: a volume of another project is NotFound to
anyone but an admin (Cinder's answer), whatever the operation.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Protocol

import sqlalchemy as sa

from fabric import servicegroup
from fabric.api import in_doubt, quota
from fabric.context import RequestContext
from fabric.db import Database
from fabric.db.models import Image, Volume, VolumeAttachment, VolumeSnapshot
from fabric.db.types import utcnow
from fabric.exception import (
    Conflict,
    FabricError,
    Invalid,
    NotFound,
    Unroutable,
    VolumeStateInvalid,
)
from fabric.images import project_may_see
from fabric.volume import states, uploads
from fabric.volume.rpcapi import BINARY, TOPIC

LOG = logging.getLogger(__name__)

#: The one volume type: Cinder's default type, with a fixed id.
DEFAULT_TYPE_NAME = "__DEFAULT__"
DEFAULT_TYPE_ID = "5f1e0d3c-0000-4000-8000-000000000001"
#: Largest volume, in GiB (the database's 32-bit integer bounds every size).
MAX_SIZE_GB = 2**31 - 1
GIB = 1024**3
#: Attempts of a metadata compare-and-swap before giving up (each miss means a concurrent change).
_METADATA_ATTEMPTS = 5


class VolumeRPC(Protocol):
    """How a request reaches the volume worker on a host (:class:`fabric.volume.rpcapi.VolumeAPI`);
    called with keyword arguments after ``ctx``."""

    def create_volume(self, ctx: RequestContext, host: str, volume_id: str) -> None: ...
    def delete_volume(self, ctx: RequestContext, host: str, volume_id: str) -> None: ...
    def extend_volume(self, ctx: RequestContext, host: str, volume_id: str, new_size: int) -> None: ...
    def create_snapshot(self, ctx: RequestContext, host: str, snapshot_id: str) -> None: ...
    def delete_snapshot(self, ctx: RequestContext, host: str, snapshot_id: str) -> None: ...
    def upload_to_image(self, ctx: RequestContext, host: str, volume_id: str, image_id: str) -> None: ...
    def export_volume(self, ctx: RequestContext, host: str, volume_id: str) -> dict[str, Any]: ...
    def unexport_volume(self, ctx: RequestContext, host: str, volume_id: str) -> None: ...


def row_dict(row: Any) -> dict[str, Any]:
    """A model row's columns as a plain dict."""
    return {column.key: getattr(row, column.key) for column in sa.inspect(type(row)).column_attrs}


def attachment_dict(row: VolumeAttachment) -> dict[str, Any]:
    """An attachment as callers see it: every column (contract of issue 21)."""
    return row_dict(row)


def finish_delete(session: Any, volume_id: str) -> bool:
    """deleting -> deleted, giving the volume's quota back, inside the caller's transaction;
    True when this call ended it (so the quota is given back exactly once)."""
    volume = session.get(Volume, volume_id)
    if volume is None or not states.swap(session, Volume, volume_id, states.DELETING, states.DELETED,
                                         deleted_at=utcnow(), status_reason=None):
        return False
    quota.release(session, volume.project_id, {"volumes": 1, "gigabytes": volume.size})
    return True


def finish_snapshot_delete(session: Any, snapshot_id: str) -> bool:
    """A snapshot's deleting -> deleted, giving its quota back, inside the caller's transaction."""
    snapshot = session.get(VolumeSnapshot, snapshot_id)
    if snapshot is None or not states.swap(session, VolumeSnapshot, snapshot_id, states.DELETING,
                                           states.DELETED, deleted_at=utcnow()):
        return False
    quota.release(session, snapshot.project_id, {"snapshots": 1, "gigabytes": snapshot.size})
    return True


def _size(value: Any, what: str = "size") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIZE_GB:
        raise Invalid(reason=f"{what} {value!r} is not a whole number of GiB from 1 to {MAX_SIZE_GB}")
    return value


def _metadata(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise Invalid(reason=f"metadata {value!r} is not an object of string keys and values")
    for key, item in value.items():
        if not isinstance(key, str) or not 1 <= len(key) <= 255:
            raise Invalid(reason=f"metadata key {key!r} must be a string of 1 to 255 characters")
        if not isinstance(item, str) or len(item) > 255:
            raise Invalid(reason=f"metadata value {item!r} of key {key!r} must be a string of at most 255 "
                                 "characters")
    return dict(value)


class VolumeService:
    """Volumes, snapshots and attachments over ``db`` and ``rpc`` (see :class:`VolumeRPC`)."""

    def __init__(self, db: Database, rpc: VolumeRPC, *, down_time: float = servicegroup.DEFAULT_DOWN_TIME,
                 availability_zone: str = "nova") -> None:
        self.db = db
        self.rpc = rpc
        self.down_time = down_time
        self.availability_zone = availability_zone

    # --- reads -----------------------------------------------------------------------

    def _visible_volume(self, session: Any, ctx: RequestContext, volume_id: str) -> Volume:
        volume = session.get(Volume, volume_id) if isinstance(volume_id, str) else None
        if volume is None or volume.status == states.DELETED or not (
                ctx.is_admin or volume.project_id == ctx.project_id):
            raise NotFound(kind="Volume", ident=volume_id)
        return volume

    def _visible_snapshot(self, session: Any, ctx: RequestContext, snapshot_id: str) -> VolumeSnapshot:
        snapshot = session.get(VolumeSnapshot, snapshot_id) if isinstance(snapshot_id, str) else None
        if snapshot is None or snapshot.status == states.DELETED or not (
                ctx.is_admin or snapshot.project_id == ctx.project_id):
            raise NotFound(kind="Snapshot", ident=snapshot_id)
        return snapshot

    def get(self, ctx: RequestContext, volume_id: str) -> dict[str, Any]:
        """The volume with its ``attachments`` (list of dicts); NotFound when the caller may not see it."""
        with self.db.begin() as session:
            volume = row_dict(self._visible_volume(session, ctx, volume_id))
            volume["attachments"] = [attachment_dict(a) for a in session.scalars(
                sa.select(VolumeAttachment).where(VolumeAttachment.volume_id == volume_id)
                .order_by(VolumeAttachment.created_at))]
        return volume

    def get_snapshot(self, ctx: RequestContext, snapshot_id: str) -> dict[str, Any]:
        with self.db.begin() as session:
            return row_dict(self._visible_snapshot(session, ctx, snapshot_id))

    def volume_hosts(self) -> list[str]:
        """Hosts whose volume worker is up and enabled."""
        return [s.host for s in servicegroup.list_services(self.db, topic=TOPIC, binary=BINARY, up_only=True,
                                                           down_time=self.down_time) if not s.disabled]

    def _choose_host(self, session: Any) -> str:
        hosts = self.volume_hosts()
        if not hosts:
            raise Conflict(reason="no volume service is up to hold the volume (start fabric-volume)")
        counts = dict(session.execute(sa.select(Volume.host, sa.func.count()).where(
            Volume.host.in_(hosts), Volume.status != states.DELETED).group_by(Volume.host)).all())
        return min(hosts, key=lambda host: (counts.get(host, 0), host))

    # --- volumes ---------------------------------------------------------------------

    def create(self, ctx: RequestContext, *, size: int | None = None, name: str | None = None,
               description: str | None = None, metadata: dict | None = None, image_id: str | None = None,
               snapshot_id: str | None = None, source_volid: str | None = None,
               availability_zone: str | None = None, volume_type: str | None = None,
               bootable: bool = False, multiattach: bool = False) -> dict[str, Any]:
        """Record a volume in ``creating`` (quota taken), then cast its making to its host.

        Raises Invalid (bad size, more than one source, a size below the source's, an unknown
        zone or type), NotFound (a source the caller may not see), QuotaExceeded, Conflict (no
        volume host up). A volume whose host does not consume its queue ends in ``error``.
        """
        sources = [name for name, value in (("imageRef", image_id), ("snapshot_id", snapshot_id),
                                            ("source_volid", source_volid)) if value is not None]
        if len(sources) > 1:
            raise Invalid(reason=f"a volume has at most one source; got {', '.join(sources)}")
        if size is not None:
            size = _size(size)
        metadata = _metadata(metadata or {})
        if availability_zone not in (None, self.availability_zone):
            raise Invalid(reason=f"availability zone {availability_zone!r} is unknown; known: "
                                 f"{self.availability_zone}")
        if volume_type not in (None, DEFAULT_TYPE_NAME, DEFAULT_TYPE_ID):
            raise NotFound(kind="Volume type", ident=volume_type)
        project_id = ctx.project_id
        if not project_id:
            raise Invalid(reason="a volume belongs to a project; the token has none")
        quota.ensure_usage_rows(self.db, project_id, ("volumes", "gigabytes"))
        with in_doubt.creating(self.db, "the create of a volume") as session:
            host, image_metadata = None, {}
            if snapshot_id is not None:
                snapshot = self._visible_snapshot(session, ctx, snapshot_id)
                if snapshot.status != states.AVAILABLE:
                    raise VolumeStateInvalid(kind="Snapshot", ident=snapshot_id, actual=snapshot.status,
                                             action="creating a volume from it", expected=[states.AVAILABLE])
                size = size or snapshot.size
                if size < snapshot.size:
                    raise Invalid(reason=f"size {size} GiB is smaller than snapshot {snapshot_id}'s "
                                         f"{snapshot.size} GiB")
                parent = session.get(Volume, snapshot.volume_id)
                host, bootable = parent.host, bootable or parent.bootable
                image_metadata = dict(parent.image_metadata or {})
            elif source_volid is not None:
                source = self._visible_volume(session, ctx, source_volid)
                if source.status not in (states.AVAILABLE, states.IN_USE):
                    raise VolumeStateInvalid(kind="Volume", ident=source_volid, actual=source.status,
                                             action="cloning", expected=[states.AVAILABLE, states.IN_USE])
                size = size or source.size
                if size < source.size:
                    raise Invalid(reason=f"size {size} GiB is smaller than source volume {source_volid}'s "
                                         f"{source.size} GiB")
                host, bootable = source.host, bootable or source.bootable
                image_metadata = dict(source.image_metadata or {})
            elif image_id is not None:
                image = self._usable_image(session, ctx, image_id)
                needed = max(math.ceil((image.size or 0) / GIB), image.min_disk or 0, 1)
                size = size or needed
                if size < needed:
                    raise Invalid(reason=f"size {size} GiB is smaller than image {image_id}'s {needed} GiB "
                                         "(its size or min_disk)")
                bootable = True
                image_metadata = {**{k: str(v) for k, v in (image.properties or {}).items()
                                     if not k.startswith("__")},  # the Image API's own (tags, protected)
                                  "image_id": image.id, "image_name": image.name or "",
                                  "disk_format": image.disk_format or "", "container_format":
                                      image.container_format or "", "min_disk": str(image.min_disk or 0),
                                  "min_ram": str(image.min_ram or 0), "size": str(image.size or 0),
                                  "checksum": image.checksum or ""}
            if size is None:
                raise Invalid(reason="size is required for a volume without a source (a whole number of GiB)")
            host = host or self._choose_host(session)
            quota.reserve(session, project_id, {"volumes": 1, "gigabytes": size})
            volume = Volume(project_id=project_id, user_id=ctx.user_id or "", name=name, description=description,
                            size=size, status=states.CREATING, status_changed_at=utcnow(), host=host,
                            availability_zone=self.availability_zone, volume_type=DEFAULT_TYPE_NAME,
                            bootable=bool(bootable), multiattach=bool(multiattach), source_volid=source_volid,
                            snapshot_id=snapshot_id, image_id=image_id, metadata_items=metadata,
                            image_metadata=image_metadata)
            session.add(volume)
            session.flush()
            result = row_dict(volume)
        self._cast_or_fail(ctx, "create_volume", host, result["id"], states.CREATING, states.ERROR,
                           lambda: self.rpc.create_volume(ctx, host=host, volume_id=result["id"]))
        result["attachments"] = []
        return result

    def _usable_image(self, session: Any, ctx: RequestContext, image_id: Any) -> Image:
        image = session.get(Image, image_id) if isinstance(image_id, str) else None
        if image is None or not (ctx.is_admin or project_may_see(image, ctx.project_id)):
            raise NotFound(kind="Image", ident=image_id)
        if image.status != "active":
            raise Invalid(reason=f"image {image_id} is {image.status}; a volume is made from an active image")
        return image

    def _cast_or_fail(self, ctx: RequestContext, method: str, host: str, row_id: str, transient: str,
                      failed: str, send: Any, model: Any = Volume) -> None:
        """Send the cast; when no worker takes it, the row goes from ``transient`` to ``failed``
        with the reason (the caller already answered: the user sees the status)."""
        try:
            send()
        except Unroutable:
            LOG.warning("volume: %s of %s: no volume worker serves host %s", method, row_id, host)
            with self.db.begin() as session:
                states.swap(session, model, row_id, transient, failed,
                            status_reason=f"{method}: no volume worker serves host {host}")

    def delete(self, ctx: RequestContext, volume_id: str, *, cascade: bool = False, force: bool = False) -> None:
        """available/error -> deleting, then cast the removal of its bytes. Refused (400) while
        attached or with snapshots (unless ``cascade``, which is not supported: Invalid)."""
        if cascade:
            raise Invalid(reason="cascade=True is not supported; delete the volume's snapshots first")
        with self.db.begin() as session:
            volume = self._visible_volume(session, ctx, volume_id)
            attached = session.scalar(sa.select(sa.func.count()).select_from(VolumeAttachment)
                                      .where(VolumeAttachment.volume_id == volume_id))
            expected = states.DELETABLE + ((states.CREATING, states.DELETING) if force and ctx.is_admin else ())
            if attached or not states.swap(session, Volume, volume_id, expected, states.DELETING,
                                           status_reason=None):
                raise VolumeStateInvalid(kind="Volume", ident=volume_id,
                                         actual=states.IN_USE if attached else volume.status,
                                         action="delete", expected=list(states.DELETABLE))
            snapshots = session.scalar(sa.select(sa.func.count()).select_from(VolumeSnapshot).where(
                VolumeSnapshot.volume_id == volume_id, VolumeSnapshot.status != states.DELETED))
            if snapshots:
                raise Invalid(reason=f"volume {volume_id} still has {snapshots} dependent snapshot(s); "
                                     "delete them first")
            host = volume.host
            if host is None:
                finish_delete(session, volume_id)
                return
        self._cast_or_fail(ctx, "delete_volume", host, volume_id, states.DELETING, states.ERROR_DELETING,
                           lambda: self.rpc.delete_volume(ctx, host=host, volume_id=volume_id))

    def extend(self, ctx: RequestContext, volume_id: str, new_size: int) -> None:
        """available -> extending at ``new_size`` with the extra gigabytes reserved, then cast the resize."""
        new_size = _size(new_size, "new_size")
        with self.db.begin() as session:
            project_id = self._visible_volume(session, ctx, volume_id).project_id
        quota.ensure_usage_rows(self.db, project_id, ("gigabytes",))
        with self.db.begin() as session:
            volume = self._visible_volume(session, ctx, volume_id)
            if new_size <= volume.size:
                raise Invalid(reason=f"new_size {new_size} GiB must be larger than the volume's {volume.size} GiB")
            quota.reserve(session, volume.project_id, {"gigabytes": new_size - volume.size})
            # The row takes the new size at once, so the quota taken always matches it: a failed or
            # reaped extend leaves error_extending at that size, and the delete gives it all back.
            if not states.swap(session, Volume, volume_id, states.AVAILABLE, states.EXTENDING,
                               status_reason=None, size=new_size):
                raise VolumeStateInvalid(kind="Volume", ident=volume_id, actual=volume.status, action="extend",
                                         expected=[states.AVAILABLE])
            host = volume.host
        self._cast_or_fail(ctx, "extend_volume", host, volume_id, states.EXTENDING, states.ERROR_EXTENDING,
                           lambda: self.rpc.extend_volume(ctx, host=host, volume_id=volume_id, new_size=new_size))

    def upload_to_image(self, ctx: RequestContext, volume_id: str, args: dict[str, Any]) -> dict[str, Any]:
        """Cinder's os-volume_upload_image with body ``args``: available (in-use with ``force``) ->
        uploading, and a queued image of the volume's project, in one transaction; then cast the
        upload to the volume's host (:mod:`fabric.volume.uploads`). Returns the volume and, under
        ``image``, the image row. Raises Invalid (a bad parameter), Forbidden (public by a
        non-admin), VolumeStateInvalid (not available; in-use without force)."""
        request = uploads.check_request(args, is_admin=ctx.is_admin)
        allowed = states.UPLOADABLE + ((states.IN_USE,) if request["force"] else ())
        with self.db.begin() as session:
            volume = self._visible_volume(session, ctx, volume_id)
            if not states.swap(session, Volume, volume_id, allowed, states.UPLOADING, status_reason=None):
                raise VolumeStateInvalid(kind="Volume", ident=volume_id, actual=volume.status,
                                         action="an upload to an image (force for in-use)", expected=list(allowed))
            image = uploads.queued_image(session, volume, request)
            session.refresh(volume)
            result, image_id, host = row_dict(volume), image.id, volume.host
            result["image"] = row_dict(image)
        try:
            self.rpc.upload_to_image(ctx, host=host, volume_id=volume_id, image_id=image_id)
        except Unroutable:
            LOG.warning("volume: upload of %s: no volume worker serves host %s", volume_id, host)
            uploads.abandon(self.db, image_id)
            with self.db.begin() as session:
                states.settle(session, volume_id, states.UPLOADING,
                              status_reason=f"upload_to_image: no volume worker serves host {host}")
        return result

    def update(self, ctx: RequestContext, volume_id: str, **changes: Any) -> dict[str, Any]:
        """Change ``name``, ``description`` or ``bootable`` (others: Invalid)."""
        unknown = sorted(set(changes) - {"name", "description", "bootable"})
        if unknown:
            raise Invalid(reason=f"volume fields {unknown} cannot be changed; changeable: name, description, "
                                 "bootable")
        if "bootable" in changes and not isinstance(changes["bootable"], bool):
            raise Invalid(reason=f"bootable {changes['bootable']!r} is not a boolean")
        for key in ("name", "description"):
            value = changes.get(key)
            if value is not None and (not isinstance(value, str) or len(value) > 255):
                raise Invalid(reason=f"{key} {value!r} is not a string of at most 255 characters")
        with self.db.begin() as session:
            self._visible_volume(session, ctx, volume_id)
            if changes:
                session.execute(sa.update(Volume).where(Volume.id == volume_id, Volume.status != states.DELETED)
                                .values(updated_at=utcnow(), **changes))
        return self.get(ctx, volume_id)

    def update_metadata(self, ctx: RequestContext, volume_id: str, items: dict | None = None, *,
                        replace: bool = False, remove: tuple[str, ...] = (), snapshot: bool = False) -> dict:
        """Merge ``items`` into the metadata (or replace it), drop the ``remove`` keys; returns the
        new metadata. NotFound for a key to remove that is absent. ``snapshot``: of a snapshot."""
        items = _metadata(items or {})
        model, find = (VolumeSnapshot, self._visible_snapshot) if snapshot else (Volume, self._visible_volume)
        for _ in range(_METADATA_ATTEMPTS):
            with self.db.begin() as session:
                row = find(session, ctx, volume_id)
                seen = row.updated_at
                current = {} if replace else dict(row.metadata_items or {})
                for key in remove:
                    if key not in current:
                        raise NotFound(kind="Metadata key", ident=f"{key} of {volume_id}")
                    del current[key]
                current.update(items)
                stamp = sa.and_(model.updated_at.is_(None)) if seen is None else model.updated_at == seen
                if session.execute(sa.update(model).where(model.id == volume_id, stamp)
                                   .values(metadata_items=current, updated_at=utcnow())
                                   .execution_options(synchronize_session=False)).rowcount == 1:
                    return current
        raise Conflict(reason=f"metadata of {volume_id} kept changing; try again")

    # --- snapshots -------------------------------------------------------------------

    def create_snapshot(self, ctx: RequestContext, volume_id: str, *, name: str | None = None,
                        description: str | None = None, force: bool = False,
                        metadata: dict | None = None) -> dict[str, Any]:
        """Record a snapshot in ``creating`` (snapshots and gigabytes quota taken) of an available
        volume (in-use too with ``force``), then cast its making to the volume's host."""
        metadata = _metadata(metadata or {})
        with self.db.begin() as session:
            volume = self._visible_volume(session, ctx, volume_id)
            project_id = volume.project_id
        quota.ensure_usage_rows(self.db, project_id, ("snapshots", "gigabytes"))
        allowed = states.SNAPSHOTTABLE + ((states.IN_USE,) if force else ())
        with self.db.begin() as session:
            volume = self._visible_volume(session, ctx, volume_id)
            # Touch the volume under the same guard, so a delete that lands meanwhile is serialised.
            if not states.swap(session, Volume, volume_id, allowed, volume.status,
                               status_changed_at=volume.status_changed_at) or volume.status not in allowed:
                raise VolumeStateInvalid(kind="Volume", ident=volume_id, actual=volume.status,
                                         action="a snapshot (force for in-use)", expected=list(allowed))
            quota.reserve(session, project_id, {"snapshots": 1, "gigabytes": volume.size})
            snapshot = VolumeSnapshot(volume_id=volume_id, project_id=project_id, user_id=ctx.user_id or "",
                                      name=name, description=description, size=volume.size,
                                      status=states.CREATING, status_changed_at=utcnow(),
                                      metadata_items=metadata)
            session.add(snapshot)
            session.flush()
            result, host = row_dict(snapshot), volume.host
        self._cast_or_fail(ctx, "create_snapshot", host, result["id"], states.CREATING, states.ERROR,
                           lambda: self.rpc.create_snapshot(ctx, host=host, snapshot_id=result["id"]), VolumeSnapshot)
        return result

    def update_snapshot(self, ctx: RequestContext, snapshot_id: str, **changes: Any) -> dict[str, Any]:
        unknown = sorted(set(changes) - {"name", "description"})
        if unknown:
            raise Invalid(reason=f"snapshot fields {unknown} cannot be changed; changeable: name, description")
        with self.db.begin() as session:
            self._visible_snapshot(session, ctx, snapshot_id)
            if changes:
                session.execute(sa.update(VolumeSnapshot).where(VolumeSnapshot.id == snapshot_id)
                                .values(updated_at=utcnow(), **changes))
        return self.get_snapshot(ctx, snapshot_id)

    def delete_snapshot(self, ctx: RequestContext, snapshot_id: str) -> None:
        """available/error -> deleting, then cast the removal to the volume's host. Refused while a
        volume is being made from it."""
        with self.db.begin() as session:
            snapshot = self._visible_snapshot(session, ctx, snapshot_id)
            if not states.swap(session, VolumeSnapshot, snapshot_id, states.SNAPSHOT_DELETABLE, states.DELETING):
                raise VolumeStateInvalid(kind="Snapshot", ident=snapshot_id, actual=snapshot.status,
                                         action="delete", expected=list(states.SNAPSHOT_DELETABLE))
            making = session.scalar(sa.select(sa.func.count()).select_from(Volume).where(
                Volume.snapshot_id == snapshot_id, Volume.status == states.CREATING))
            if making:
                raise VolumeStateInvalid(kind="Snapshot", ident=snapshot_id, actual="in use by a creating volume",
                                         action="delete", expected=list(states.SNAPSHOT_DELETABLE))
            host = session.get(Volume, snapshot.volume_id).host
        self._cast_or_fail(ctx, "delete_snapshot", host, snapshot_id, states.DELETING, states.ERROR_DELETING,
                           lambda: self.rpc.delete_snapshot(ctx, host=host, snapshot_id=snapshot_id), VolumeSnapshot)

    # --- attachments (what Compute calls) ---------------------------------------------

    def attachment_create(self, ctx: RequestContext, volume_id: str, instance_uuid: str, *,
                          boot_index: int | None = None, delete_on_termination: bool = False) -> dict[str, Any]:
        """Reserve the volume for the server: available -> reserved (a multiattach volume may also
        be reserved or in-use already). Returns the attachment (status ``reserved``).

        Raises NotFound (unknown or invisible volume), VolumeStateInvalid (400: not available,
        or already attached to another server and not multiattach), Conflict (409: already
        attached to this server).
        """
        with self.db.begin() as session:
            volume = self._visible_volume(session, ctx, volume_id)
            existing = session.scalar(sa.select(VolumeAttachment).where(
                VolumeAttachment.volume_id == volume_id, VolumeAttachment.instance_uuid == instance_uuid))
            if existing is not None:
                raise Conflict(reason=f"volume {volume_id} is already attached to server {instance_uuid}")
            shared = (states.RESERVED, states.ATTACHING, states.IN_USE) if volume.multiattach else ()
            if not (states.swap(session, Volume, volume_id, states.AVAILABLE, states.RESERVED, status_reason=None)
                    or (volume.status in shared and states.swap(session, Volume, volume_id, volume.status,
                                                                volume.status))):
                raise VolumeStateInvalid(kind="Volume", ident=volume_id, actual=volume.status,
                                         action="attach", expected=[states.AVAILABLE, *shared])
            attachment = VolumeAttachment(volume_id=volume_id, instance_uuid=instance_uuid,
                                          status=states.ATTACHMENT_RESERVED, boot_index=boot_index,
                                          delete_on_termination=bool(delete_on_termination))
            session.add(attachment)
            session.flush()
            return attachment_dict(attachment)

    def _attachment(self, session: Any, ctx: RequestContext, attachment_id: str) -> tuple[VolumeAttachment, Volume]:
        attachment = session.get(VolumeAttachment, attachment_id) if isinstance(attachment_id, str) else None
        if attachment is None:
            raise NotFound(kind="Volume attachment", ident=attachment_id)
        try:
            return attachment, self._visible_volume(session, ctx, attachment.volume_id)
        except NotFound:
            raise NotFound(kind="Volume attachment", ident=attachment_id) from None

    def attachment_update(self, ctx: RequestContext, attachment_id: str, connector: dict) -> dict[str, Any]:
        """Export the volume from its host (an RPC call) for the compute host ``connector``
        names, store connector, connection_info and attached_host; volume -> attaching.
        Answers connection_info. Safe to repeat (re-exports if the export died).

        A failed export leaves the attachment ``error_attaching`` and the volume ``reserved``
        (so the caller's attachment_delete makes it available again) and raises.
        """
        if not isinstance(connector, dict) or not isinstance(connector.get("host"), str):
            raise Invalid(reason=f"connector {connector!r} must be an object with the compute host's name in 'host'")
        with self.db.begin() as session:
            attachment, volume = self._attachment(session, ctx, attachment_id)
            if attachment.status == states.ATTACHMENT_RESERVED:
                states.swap(session, Volume, volume.id, states.RESERVED, states.ATTACHING)
                states.swap(session, VolumeAttachment, attachment_id, states.ATTACHMENT_RESERVED,
                            states.ATTACHMENT_ATTACHING, connector=connector, attached_host=connector["host"])
            host, volume_id = volume.host, volume.id
        try:
            connection_info = self.rpc.export_volume(ctx, host=host, volume_id=volume_id)
        except FabricError as error:
            with self.db.begin() as session:
                states.swap(session, VolumeAttachment, attachment_id, states.ATTACHMENT_ATTACHING,
                            states.ATTACHMENT_ERROR_ATTACHING)
                states.swap(session, Volume, volume_id, states.ATTACHING, states.RESERVED,
                            status_reason=f"export failed: {error.message}"[:255])
            raise
        with self.db.begin() as session:
            session.execute(sa.update(VolumeAttachment).where(VolumeAttachment.id == attachment_id)
                            .values(connection_info=connection_info, updated_at=utcnow()))
        return connection_info

    def attachment_complete(self, ctx: RequestContext, attachment_id: str, device: str | None = None) -> None:
        """The guest has the disk: attachment attached (with ``device``), volume in-use."""
        with self.db.begin() as session:
            attachment, volume = self._attachment(session, ctx, attachment_id)
            states.swap(session, VolumeAttachment, attachment_id,
                        (states.ATTACHMENT_RESERVED, states.ATTACHMENT_ATTACHING, states.ATTACHMENT_ATTACHED),
                        states.ATTACHMENT_ATTACHED, device=device)
            if not states.swap(session, Volume, volume.id, (states.RESERVED, states.ATTACHING), states.IN_USE,
                               status_reason=None) and volume.status != states.IN_USE:
                raise VolumeStateInvalid(kind="Volume", ident=volume.id, actual=volume.status,
                                         action="completing an attachment",
                                         expected=[states.RESERVED, states.ATTACHING, states.IN_USE])

    def attachment_delete(self, ctx: RequestContext, attachment_id: str) -> None:
        """Remove the attachment; when it was the volume's last one, end the export on the volume's
        host (an RPC call; a failure is logged and left to reconciliation) and make the volume
        available. Deleting an attachment that is gone already is fine (idempotent)."""
        with self.db.begin() as session:
            try:
                attachment, volume = self._attachment(session, ctx, attachment_id)
            except NotFound:
                return
            volume_id, host = volume.id, volume.host
            session.delete(attachment)
            session.flush()
            remaining = session.scalar(sa.select(sa.func.count()).select_from(VolumeAttachment)
                                       .where(VolumeAttachment.volume_id == volume_id))
            if remaining:
                return
        try:
            self.rpc.unexport_volume(ctx, host=host, volume_id=volume_id)
        except FabricError as error:
            LOG.warning("volume %s: ending its export on %s failed (reconcile repairs it): %s",
                        volume_id, host, error)
        with self.db.begin() as session:
            still = session.scalar(sa.select(sa.func.count()).select_from(VolumeAttachment)
                                   .where(VolumeAttachment.volume_id == volume_id))
            if not still:
                states.swap(session, Volume, volume_id,
                            (states.RESERVED, states.ATTACHING, states.IN_USE, states.DETACHING), states.AVAILABLE)

    def attachments_for_instance(self, ctx: RequestContext, instance_uuid: str) -> list[dict[str, Any]]:
        """The server's attachments (every status), boot disk first, then by creation."""
        with self.db.begin() as session:
            rows = session.scalars(sa.select(VolumeAttachment).where(VolumeAttachment.instance_uuid == instance_uuid)
                                   .order_by(VolumeAttachment.boot_index.is_(None), VolumeAttachment.boot_index,
                                             VolumeAttachment.created_at))
            return [attachment_dict(row) for row in rows]
