"""Cinder's documents for volumes and snapshots, from fabric.volume.api's dicts."""

from __future__ import annotations

from typing import Any

from fabric.api import common
from fabric.api.block_storage.common import PREFIX


def _links(base: str, collection: str, ident: str) -> list[dict]:
    return [{"rel": "self", "href": f"{base}{PREFIX}/{collection}/{ident}"},
            {"rel": "bookmark", "href": f"{base}/volume/{collection}/{ident}"}]


def attachment(row: dict[str, Any]) -> dict[str, Any]:
    """An attachment as Cinder lists it inside its volume."""
    return {"id": row["volume_id"], "attachment_id": row["id"], "volume_id": row["volume_id"],
            "server_id": row["instance_uuid"], "host_name": row["attached_host"], "device": row["device"],
            "attached_at": common.isotime(row["created_at"], micro=True)}


def volume_summary(volume: dict[str, Any], base: str) -> dict[str, Any]:
    return {"id": volume["id"], "name": volume["name"], "links": _links(base, "volumes", volume["id"])}


def volume(volume: dict[str, Any], base: str, *, admin: bool, extended: bool = True) -> dict[str, Any]:
    """The detailed view (Cinder 3.0): ``bootable`` is the string "true"/"false", as Cinder's.

    ``extended``: with the attributes of Cinder's API extensions (tenant, image metadata, and for
    admins host and migration), which Cinder adds to a show or listing (GET) only: the answer to a
    create or an update is without them, and clients validating Cinder's schemas refuse them there.
    """
    doc = {
        **volume_summary(volume, base),
        "description": volume["description"], "status": volume["status"], "size": volume["size"],
        "availability_zone": volume["availability_zone"], "created_at": common.isotime(volume["created_at"], True),
        "updated_at": common.isotime(volume["updated_at"], True),
        "attachments": [attachment(a) for a in volume.get("attachments", []) if a["status"] == "attached"],
        "bootable": "true" if volume["bootable"] else "false", "encrypted": False,
        "multiattach": volume["multiattach"], "metadata": volume["metadata_items"] or {},
        "volume_type": volume["volume_type"], "snapshot_id": volume["snapshot_id"],
        "source_volid": volume["source_volid"], "user_id": volume["user_id"], "replication_status": None,
        "consistencygroup_id": None, "migration_status": None,
    }
    if not extended:
        return doc
    doc["os-vol-tenant-attr:tenant_id"] = volume["project_id"]
    if volume["image_metadata"]:
        doc["volume_image_metadata"] = volume["image_metadata"]
    if admin:
        doc["os-vol-host-attr:host"] = volume["host"]
        doc["os-vol-mig-status-attr:migstat"] = None
        doc["os-vol-mig-status-attr:name_id"] = None
        doc["status_reason"] = volume["status_reason"]
    return doc


def snapshot(snapshot: dict[str, Any], *, extended: bool = True) -> dict[str, Any]:
    """A snapshot; ``extended``: with the ExtendedSnapshotAttributes (project, progress), which
    Cinder shows on a GET only (not in the answer to a create or an update)."""
    doc = {"id": snapshot["id"], "name": snapshot["name"], "description": snapshot["description"],
            "status": snapshot["status"], "size": snapshot["size"], "volume_id": snapshot["volume_id"],
            "created_at": common.isotime(snapshot["created_at"], True),
            "updated_at": common.isotime(snapshot["updated_at"], True),
            "metadata": snapshot["metadata_items"] or {}}
    if extended:
        doc["os-extended-snapshot-attributes:project_id"] = snapshot["project_id"]
        doc["os-extended-snapshot-attributes:progress"] = "100%" if snapshot["status"] == "available" else "0%"
    return doc
