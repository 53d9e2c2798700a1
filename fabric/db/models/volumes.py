"""Block storage: volumes, their snapshots, attachments to servers and NBD exports.

Every status changes only by compare-and-swap on the expected statuses
(fabric.volume.states holds the one table of them).
"""

from __future__ import annotations

import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from fabric.db.models.base import Base, Timestamps
from fabric.db.types import Json, Timestamp, new_uuid


class Volume(Timestamps, Base):
    """A block device that outlives servers; its bytes live on ``host`` (a volume host)."""

    __tablename__ = "volumes"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_uuid)
    project_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    user_id: Mapped[str] = mapped_column(sa.String(64))
    name: Mapped[str | None] = mapped_column(sa.String(255))
    description: Mapped[str | None] = mapped_column(sa.String(255))
    size: Mapped[int]
    status: Mapped[str] = mapped_column(sa.String(32), default="creating", index=True)
    status_reason: Mapped[str | None] = mapped_column(sa.String(255))
    # When the current transient status began: the reaper ends transitions older than its limit.
    status_changed_at: Mapped[datetime.datetime | None] = mapped_column(Timestamp)
    host: Mapped[str | None] = mapped_column(sa.String(255), index=True)
    availability_zone: Mapped[str] = mapped_column(sa.String(255), default="nova")
    volume_type: Mapped[str] = mapped_column(sa.String(255), default="__DEFAULT__")
    bootable: Mapped[bool] = mapped_column(default=False)
    multiattach: Mapped[bool] = mapped_column(default=False)
    source_volid: Mapped[str | None] = mapped_column(sa.String(36))
    snapshot_id: Mapped[str | None] = mapped_column(sa.String(36))
    image_id: Mapped[str | None] = mapped_column(sa.String(36))
    # Cinder's "metadata" (user key/values) and "volume_image_metadata" (the image's
    # properties copied at create, which boot from volume reads).
    metadata_items: Mapped[dict] = mapped_column(Json, default=dict)
    image_metadata: Mapped[dict] = mapped_column(Json, default=dict)
    deleted_at: Mapped[datetime.datetime | None] = mapped_column(Timestamp)


class VolumeSnapshot(Timestamps, Base):
    """A point-in-time copy of a volume, kept on the volume's host."""

    __tablename__ = "volume_snapshots"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_uuid)
    volume_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("volumes.id", ondelete="RESTRICT"), index=True)
    project_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    user_id: Mapped[str] = mapped_column(sa.String(64))
    name: Mapped[str | None] = mapped_column(sa.String(255))
    description: Mapped[str | None] = mapped_column(sa.String(255))
    size: Mapped[int]
    status: Mapped[str] = mapped_column(sa.String(32), default="creating", index=True)
    status_reason: Mapped[str | None] = mapped_column(sa.String(255))
    status_changed_at: Mapped[datetime.datetime | None] = mapped_column(Timestamp)
    metadata_items: Mapped[dict] = mapped_column(Json, default=dict)
    deleted_at: Mapped[datetime.datetime | None] = mapped_column(Timestamp)


class VolumeAttachment(Timestamps, Base):
    """One volume attached (or being attached) to one server.

    status: reserved, attaching, attached, detaching, error_attaching, error_detaching.
    """

    __tablename__ = "volume_attachments"
    __table_args__ = (sa.UniqueConstraint("volume_id", "instance_uuid"),)

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_uuid)
    volume_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("volumes.id", ondelete="CASCADE"), index=True)
    instance_uuid: Mapped[str] = mapped_column(sa.String(36), index=True)
    attached_host: Mapped[str | None] = mapped_column(sa.String(255))
    device: Mapped[str | None] = mapped_column(sa.String(64))
    connection_info: Mapped[dict | None] = mapped_column(Json)
    connector: Mapped[dict | None] = mapped_column(Json)
    status: Mapped[str] = mapped_column(sa.String(32), default="reserved")
    boot_index: Mapped[int | None]
    delete_on_termination: Mapped[bool] = mapped_column(default=False)


class VolumeExport(Timestamps, Base):
    """A running ``qemu-nbd`` serving one volume from its host.

    Recorded so that a restarted worker finds its exports (same pid and command
    line) or starts them again, and so that reconciliation can compare exports
    with attachments.
    """

    __tablename__ = "volume_exports"

    volume_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("volumes.id", ondelete="CASCADE"),
                                           primary_key=True)
    host: Mapped[str] = mapped_column(sa.String(255), index=True)
    address: Mapped[str] = mapped_column(sa.String(64))
    port: Mapped[int]
    export_name: Mapped[str] = mapped_column(sa.String(64))
    pid: Mapped[int | None]
    shared: Mapped[int] = mapped_column(default=1)
