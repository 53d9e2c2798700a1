"""Flavors, images, keypairs, instances and their faults, server groups."""

from __future__ import annotations

import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from fabric.db.models.base import Base, Timestamps
from fabric.db.types import Json, Timestamp, new_uuid


class Flavor(Timestamps, Base):
    __tablename__ = "flavors"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(sa.String(255), unique=True)
    vcpus: Mapped[int]
    memory_mb: Mapped[int]
    disk_gb: Mapped[int] = mapped_column(default=0)
    is_public: Mapped[bool] = mapped_column(default=True)
    extra_specs: Mapped[dict] = mapped_column(Json, default=dict)
    #: Compute 2.55's free-text description (up to 65535 characters, as Nova's).
    description: Mapped[str | None] = mapped_column(sa.Text)


class Image(Timestamps, Base):
    """An image record; its bytes live in the image store under ``id``."""

    __tablename__ = "images"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(sa.String(255), default="")
    owner: Mapped[str | None] = mapped_column(sa.String(36), index=True)
    status: Mapped[str] = mapped_column(sa.String(32), default="queued")
    visibility: Mapped[str] = mapped_column(sa.String(16), default="private")
    disk_format: Mapped[str | None] = mapped_column(sa.String(32))
    container_format: Mapped[str | None] = mapped_column(sa.String(32))
    size: Mapped[int | None] = mapped_column(sa.BigInteger)
    checksum: Mapped[str | None] = mapped_column(sa.String(32))
    os_hash_algo: Mapped[str | None] = mapped_column(sa.String(16))
    os_hash_value: Mapped[str | None] = mapped_column(sa.String(128))
    min_disk: Mapped[int] = mapped_column(default=0)
    min_ram: Mapped[int] = mapped_column(default=0)
    properties: Mapped[dict] = mapped_column(Json, default=dict)
    #: While the API streams an upload into the image (``saving``): when the upload's lease runs
    #: out unless the uploading process renews it (:mod:`fabric.api.image_uploads`). NULL
    #: otherwise, and for images other writers fill (snapshots, volume uploads).
    upload_expires_at: Mapped[datetime.datetime | None] = mapped_column(Timestamp)


class Keypair(Timestamps, Base):
    __tablename__ = "keypairs"
    __table_args__ = (sa.UniqueConstraint("user_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(255))
    user_id: Mapped[str] = mapped_column(sa.String(36))
    fingerprint: Mapped[str] = mapped_column(sa.String(255))
    public_key: Mapped[str] = mapped_column(sa.Text)
    type: Mapped[str] = mapped_column(sa.String(16), default="ssh")


class Instance(Timestamps, Base):
    """A server. Its states change only by compare-and-swap on the expected states.

    vm_state is where it rests (building, active, stopped, paused, suspended,
    error, deleted); task_state what is being done to it right now (scheduling,
    spawning, rebooting, powering-off, deleting ...) or None.
    """

    __tablename__ = "instances"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_uuid)
    display_name: Mapped[str] = mapped_column(sa.String(255), default="")
    project_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    user_id: Mapped[str] = mapped_column(sa.String(36))
    flavor_id: Mapped[str | None] = mapped_column(sa.String(36), sa.ForeignKey("flavors.id", ondelete="SET NULL"))
    vcpus: Mapped[int] = mapped_column(default=0)
    memory_mb: Mapped[int] = mapped_column(default=0)
    disk_gb: Mapped[int] = mapped_column(default=0)
    image_id: Mapped[str | None] = mapped_column(sa.String(36))
    key_name: Mapped[str | None] = mapped_column(sa.String(255))
    host: Mapped[str | None] = mapped_column(sa.String(255), index=True)
    availability_zone: Mapped[str | None] = mapped_column(sa.String(255))
    vm_state: Mapped[str] = mapped_column(sa.String(32), default="building", index=True)
    task_state: Mapped[str | None] = mapped_column(sa.String(32))
    power_state: Mapped[int] = mapped_column(default=0)
    launched_at: Mapped[datetime.datetime | None] = mapped_column(Timestamp)
    terminated_at: Mapped[datetime.datetime | None] = mapped_column(Timestamp)
    task_started_at: Mapped[datetime.datetime | None] = mapped_column(Timestamp)
    deleted: Mapped[bool] = mapped_column(default=False, index=True)
    scheduling_attempts: Mapped[int] = mapped_column(default=0)
    failed_hosts: Mapped[list] = mapped_column(Json, default=list)
    requested_networks: Mapped[list] = mapped_column(Json, default=list)
    network_info: Mapped[list] = mapped_column(Json, default=list)
    server_group_id: Mapped[str | None] = mapped_column(
        sa.String(36), sa.ForeignKey("server_groups.id", ondelete="SET NULL"))
    metadata_items: Mapped[dict] = mapped_column(Json, default=dict)
    # What the metadata service gives the guest: user data as the API received it
    # (base64), the keypair's public key as it was at create time (a keypair deleted
    # or replaced later does not change a running server's keys), and the server's
    # position in a multi-create.
    user_data: Mapped[str | None] = mapped_column(sa.Text)
    key_data: Mapped[str | None] = mapped_column(sa.Text)
    launch_index: Mapped[int] = mapped_column(default=0, server_default="0")
    # server lock: a locked server refuses actions, delete and metadata changes from all
    # but admins (fabric.compute.api); locked_by is "owner" or "admin", as in Nova.
    locked: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    locked_by: Mapped[str | None] = mapped_column(sa.String(16))
    locked_reason: Mapped[str | None] = mapped_column(sa.String(255))
    # Compute 2.19's free-text description (shown from that microversion on).
    description: Mapped[str | None] = mapped_column(sa.String(255))
    # The addresses its owner says the server is reached at (accessIPv4/accessIPv6): given at
    # create, update or rebuild, shown as given; nothing routes to them.
    access_ip_v4: Mapped[str | None] = mapped_column(sa.String(39))
    access_ip_v6: Mapped[str | None] = mapped_column(sa.String(39))


class InstanceFault(Base):
    """Why an instance failed: the last one is shown as its ``fault``."""

    __tablename__ = "instance_faults"

    id: Mapped[int] = mapped_column(primary_key=True)
    instance_id: Mapped[str] = mapped_column(
        sa.String(36), sa.ForeignKey("instances.id", ondelete="CASCADE"), index=True)
    code: Mapped[int]
    message: Mapped[str] = mapped_column(sa.String(255))
    details: Mapped[str] = mapped_column(sa.Text, default="")
    host: Mapped[str | None] = mapped_column(sa.String(255))
    created_at: Mapped[datetime.datetime] = mapped_column(Timestamp)


class InstanceAction(Base):
    """One request's action on a server (``server event list``): started by the API in the
    transaction that accepts it, finished by the worker that carries it out (or at once,
    for what only the API does). Written by fabric.compute.instance_actions only."""

    __tablename__ = "instance_actions"
    __table_args__ = (sa.UniqueConstraint("instance_id", "request_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    instance_id: Mapped[str] = mapped_column(
        sa.String(36), sa.ForeignKey("instances.id", ondelete="CASCADE"), index=True)
    action: Mapped[str] = mapped_column(sa.String(32))
    request_id: Mapped[str] = mapped_column(sa.String(64))
    user_id: Mapped[str | None] = mapped_column(sa.String(36))
    project_id: Mapped[str | None] = mapped_column(sa.String(36))
    start_time: Mapped[datetime.datetime] = mapped_column(Timestamp)
    finish_time: Mapped[datetime.datetime | None] = mapped_column(Timestamp)
    #: "Success" or "Error" once finished (Nova's words), None while it runs.
    result: Mapped[str | None] = mapped_column(sa.String(16))
    message: Mapped[str | None] = mapped_column(sa.String(255))


class ServerGroup(Timestamps, Base):
    __tablename__ = "server_groups"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(sa.String(255))
    project_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    user_id: Mapped[str] = mapped_column(sa.String(36))
    policy: Mapped[str] = mapped_column(sa.String(32))


class InstanceTag(Base):
    """One tag of a server (Compute 2.26): at most 50 per server, each at most 60 characters,
    without "/" or "," (fabric.api.compute.tags holds the rules)."""

    __tablename__ = "instance_tags"

    instance_id: Mapped[str] = mapped_column(
        sa.String(36), sa.ForeignKey("instances.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(sa.String(60), primary_key=True, index=True)


class Aggregate(Timestamps, Base):
    """A host aggregate: a named set of compute hosts with metadata. Its availability zone is
    the metadata item ``availability_zone``, as in Nova (fabric.scheduler.aggregates reads it)."""

    __tablename__ = "aggregates"

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(sa.String(36), unique=True, default=new_uuid)
    name: Mapped[str] = mapped_column(sa.String(255), unique=True)
    metadata_items: Mapped[dict] = mapped_column(Json, default=dict)


class AggregateHost(Base):
    """A compute host's membership of an aggregate."""

    __tablename__ = "aggregate_hosts"
    __table_args__ = (sa.UniqueConstraint("aggregate_id", "host"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    aggregate_id: Mapped[int] = mapped_column(sa.ForeignKey("aggregates.id", ondelete="CASCADE"))
    host: Mapped[str] = mapped_column(sa.String(255), index=True)


class Migration(Timestamps, Base):
    """One resize or cold migration of a server (fabric.compute.migrations is the one writer).

    ``old_flavor`` and ``new_flavor`` are the flavors' resources as claimed (``id``, ``vcpus``,
    ``memory_mb``, ``disk_gb``): the source host holds the old, the destination the new, until
    the move is confirmed (the source's is given back) or reverted (the destination's is).
    """

    __tablename__ = "migrations"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_uuid)
    instance_id: Mapped[str] = mapped_column(
        sa.String(36), sa.ForeignKey("instances.id", ondelete="CASCADE"), index=True)
    #: "resize" or "migration" (Nova's names).
    migration_type: Mapped[str] = mapped_column(sa.String(16))
    #: pre-migrating, migrating, post-migrating, finished, confirming, confirmed, reverting,
    #: revert-finishing, reverted, error (fabric.compute.migrations).
    status: Mapped[str] = mapped_column(sa.String(32), index=True)
    source_host: Mapped[str] = mapped_column(sa.String(255))
    dest_host: Mapped[str | None] = mapped_column(sa.String(255))
    #: The host an admin asked for (cold migrate --host), or None: the scheduler's choice.
    requested_host: Mapped[str | None] = mapped_column(sa.String(255))
    old_flavor: Mapped[dict] = mapped_column(Json, default=dict)
    new_flavor: Mapped[dict] = mapped_column(Json, default=dict)
    #: vm_state of the server when the move started (it rests there again after a revert).
    old_vm_state: Mapped[str] = mapped_column(sa.String(32))
