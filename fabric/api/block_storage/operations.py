"""The Block Storage operations in the OpenAPI document (fabric.api.openapi): (method, path,
summary, request body's JSON Schema or None, success status)."""

from __future__ import annotations

from fabric.api.block_storage.common import PREFIX as _V

_TEXT = {"type": "string", "maxLength": 255}
_META = {"type": "object", "additionalProperties": {"type": "string", "maxLength": 255}}
_SIZE = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}


def _wrapped(key: str, properties: dict, required: tuple[str, ...] = ()) -> dict:
    return {"type": "object", "required": [key], "properties": {key: {
        "type": "object", "properties": properties, "required": list(required)}}}


VOLUME_CREATE = _wrapped("volume", {"size": _SIZE, "name": _TEXT, "description": _TEXT, "metadata": _META,
                                    "imageRef": {"type": "string"}, "snapshot_id": {"type": "string"},
                                    "source_volid": {"type": "string"}, "availability_zone": _TEXT,
                                    "volume_type": _TEXT, "multiattach": {"type": "boolean"}})
VOLUME_UPDATE = _wrapped("volume", {"name": _TEXT, "description": _TEXT})
SNAPSHOT_CREATE = _wrapped("snapshot", {"volume_id": {"type": "string"}, "name": _TEXT, "description": _TEXT,
                                        "force": {"type": "boolean"}, "metadata": _META}, ("volume_id",))
SNAPSHOT_UPDATE = _wrapped("snapshot", {"name": _TEXT, "description": _TEXT})
METADATA = {"type": "object", "required": ["metadata"], "properties": {"metadata": _META}}
META = {"type": "object", "required": ["meta"], "properties": {"meta": _META}}
ACTION = {"type": "object", "minProperties": 1, "maxProperties": 1, "properties": {
    "os-extend": {"type": "object", "required": ["new_size"], "properties": {"new_size": _SIZE}},
    "os-set_bootable": {"type": "object", "required": ["bootable"], "properties": {"bootable": {"type": "boolean"}}},
    "os-volume_upload_image": {"type": "object", "required": ["image_name"], "properties": {
        "image_name": _TEXT, "force": {"type": "boolean"}, "disk_format": {"type": "string"},
        "container_format": {"type": "string"}, "visibility": {"type": "string"}, "protected": {"type": "boolean"}}},
    "os-reset_status": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
    "os-force_delete": {"type": "object"}}}
QUOTA_UPDATE = _wrapped("quota_set", {"volumes": {"type": "integer", "minimum": -1},
                                      "gigabytes": {"type": "integer", "minimum": -1},
                                      "snapshots": {"type": "integer", "minimum": -1}})

OPERATIONS = [
    ("get", "/volume", "Block Storage versions (300 Multiple Choices, as Cinder's root)", None, 300),
    ("get", _V, "Block Storage v3 versions", None, 200),
    ("get", f"{_V}/volumes", "List volumes", None, 200),
    ("get", f"{_V}/volumes/detail", "List volumes with details", None, 200),
    ("put", f"{_V}/volumes", "Update the volume with the empty id (/volumes/): there is none", None, 404),
    ("delete", f"{_V}/volumes", "Delete the volume with the empty id (/volumes/): there is none", None, 404),
    ("post", f"{_V}/volumes", "Create a volume (empty, or from imageRef, snapshot_id or source_volid)",
     VOLUME_CREATE, 202),
    ("get", f"{_V}/volumes/{{volume_id}}", "Show a volume", None, 200),
    ("put", f"{_V}/volumes/{{volume_id}}", "Update a volume's name or description", VOLUME_UPDATE, 200),
    ("delete", f"{_V}/volumes/{{volume_id}}", "Delete a volume (not while attached or with snapshots)", None, 202),
    ("post", f"{_V}/volumes/{{volume_id}}/action", "os-extend, os-set_bootable, os-update_readonly_flag, "
     "os-volume_upload_image, os-reset_status (admin), "
     "os-force_delete (admin)", ACTION, 202),
    ("get", f"{_V}/volumes/{{volume_id}}/metadata", "Show a volume's metadata", None, 200),
    ("post", f"{_V}/volumes/{{volume_id}}/metadata", "Add to a volume's metadata", METADATA, 200),
    ("put", f"{_V}/volumes/{{volume_id}}/metadata", "Replace a volume's metadata", METADATA, 200),
    ("get", f"{_V}/volumes/{{volume_id}}/metadata/{{key}}", "Show one metadata item", None, 200),
    ("put", f"{_V}/volumes/{{volume_id}}/metadata/{{key}}", "Set one metadata item", META, 200),
    ("delete", f"{_V}/volumes/{{volume_id}}/metadata/{{key}}", "Remove one metadata item", None, 200),
    ("get", f"{_V}/snapshots", "List snapshots", None, 200),
    ("get", f"{_V}/snapshots/detail", "List snapshots with details", None, 200),
    ("post", f"{_V}/snapshots", "Snapshot a volume", SNAPSHOT_CREATE, 202),
    ("get", f"{_V}/snapshots/{{snapshot_id}}", "Show a snapshot", None, 200),
    ("put", f"{_V}/snapshots/{{snapshot_id}}", "Update a snapshot's name or description", SNAPSHOT_UPDATE, 200),
    ("delete", f"{_V}/snapshots/{{snapshot_id}}", "Delete a snapshot", None, 202),
    ("get", f"{_V}/snapshots/{{snapshot_id}}/metadata", "Show a snapshot's metadata", None, 200),
    ("post", f"{_V}/snapshots/{{snapshot_id}}/metadata", "Add to a snapshot's metadata", METADATA, 200),
    ("put", f"{_V}/snapshots/{{snapshot_id}}/metadata", "Replace a snapshot's metadata", METADATA, 200),
    ("get", f"{_V}/snapshots/{{snapshot_id}}/metadata/{{key}}", "Show one snapshot metadata item", None, 200),
    ("put", f"{_V}/snapshots/{{snapshot_id}}/metadata/{{key}}", "Set one snapshot metadata item", META, 200),
    ("delete", f"{_V}/snapshots/{{snapshot_id}}/metadata/{{key}}", "Remove one snapshot metadata item", None, 200),
    ("get", f"{_V}/types", "List volume types (the default type)", None, 200),
    ("get", f"{_V}/types/{{type_id}}", "Show a volume type", None, 200),
    ("get", f"{_V}/os-availability-zone", "List volume availability zones", None, 200),
    ("get", f"{_V}/os-services", "List volume services (admin)", None, 200),
    ("get", f"{_V}/extensions", "List Block Storage extensions", None, 200),
    ("get", f"{_V}/limits", "The project's volume limits and usage", None, 200),
    ("get", f"{_V}/os-quota-sets/{{project_id}}", "Show a project's volume quotas (?usage=true)", None, 200),
    ("get", f"{_V}/os-quota-sets/{{project_id}}/defaults", "The default volume quotas", None, 200),
    ("put", f"{_V}/os-quota-sets/{{project_id}}", "Set a project's volume quotas (admin)", QUOTA_UPDATE, 200),
    ("delete", f"{_V}/os-quota-sets/{{project_id}}", "Reset a project's volume quotas (admin)", None, 202),
]
