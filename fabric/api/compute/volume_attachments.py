"""Compute's ``/servers/{id}/os-volume_attachments``: list, show, attach (200) and detach (202).

What ``openstack server add volume`` / ``server remove volume`` / ``server volume list``
use. The API checks the server (visible to the caller, placed on a host, at rest in a
state a disk can be plugged into, not locked), reserves the volume through
:class:`fabric.volume.api.VolumeService` (which answers 404 for a volume the caller may
not see and refuses one that is not available, unless it is multi-attach), chooses the
guest's disk name (:func:`fabric.compute.volumes.choose_device`), records the server's
action and casts the work to the server's host (:mod:`fabric.compute.volumes`). A cast
that no worker takes gives the reservation back before the error is answered.

As in Nova before microversion 2.89, an attachment's ``id`` is its volume's id.
"""

from __future__ import annotations

import falcon
from marshmallow import Schema, fields

from fabric import exception
from fabric.api import common
from fabric.api.compute.lookup import get_instance
from fabric.compute import instance_actions, states
from fabric.compute.api import refuse_if_locked
from fabric.compute.volumes import ATTACH, DETACH, choose_device
from fabric.volume.api import VolumeService


class AttachmentSpec(Schema):
    volumeId = fields.String(required=True)  # noqa: N815 - Nova's field names
    device = fields.String(allow_none=True, load_default=None)
    tag = fields.String()
    delete_on_termination = fields.Boolean(truthy={True}, falsy={False}, load_default=False)


#: The attach request (unknown fields refused, naming them).
VOLUME_ATTACH = Schema.from_dict({"volumeAttachment": fields.Nested(AttachmentSpec, required=True)})()

#: Server states a volume may be attached to or detached from (the guest at rest).
ATTACHABLE_VM_STATES = (states.ACTIVE, states.STOPPED, states.PAUSED)


def volume_service(deps) -> VolumeService:
    """The volume service over this API's database and volume workers' client."""
    return VolumeService(deps.db, deps.clients.volume)


def _view(row: dict, server_id: str) -> dict:
    return {"id": row["volume_id"], "serverId": server_id, "volumeId": row["volume_id"], "device": row["device"]}


def _server(req, server_id: str) -> dict:
    """The server as a dict, once the caller may see it (404 otherwise)."""
    with common.deps(req).db.begin() as session:
        instance = get_instance(session, common.ctx(req), server_id)
        return {"id": instance.id, "host": instance.host, "vm_state": instance.vm_state,
                "task_state": instance.task_state, "locked": instance.locked, "locked_by": instance.locked_by,
                "locked_reason": instance.locked_reason}


def _require_at_rest(server: dict, what: str) -> None:
    if server["host"] is None or server["vm_state"] not in ATTACHABLE_VM_STATES or server["task_state"] is not None:
        raise exception.InstanceStateConflict(
            instance=server["id"], attr="vm_state/task_state",
            actual=f"{server['vm_state']}/{server['task_state']}",
            expected=f"{'/'.join(ATTACHABLE_VM_STATES)} with no task, placed on a host ({what})")


def _attachments(req, server_id: str) -> list[dict]:
    """The server's attachments, boot disk first (what the volume service holds)."""
    return volume_service(common.deps(req)).attachments_for_instance(common.ctx(req), server_id)


def _start(req, server: dict, action: str, **cast_kwargs) -> None:
    """Record the server's ``action`` and stage its cast to the server's host in one transaction,
    then send it (the outbox's relay sends it if this process dies first). Raises Unroutable
    when no worker serves the host (the action is then recorded as failed)."""
    deps, context = common.deps(req), common.ctx(req)
    with deps.db.begin() as session:
        instance_actions.start(session, context, server["id"], action)
        staged = deps.outbox.stage(session, "api.instance_action", context, host=server["host"], action=action,
                                   instance_id=server["id"], **cast_kwargs)
    try:
        deps.outbox.send(staged)
    except exception.Unroutable as exc:
        instance_actions.finish(deps.db, context, server["id"], instance_actions.ERROR, str(exc))
        raise


# --- boot from volume (server create's block_device_mapping_v2) ----------------------------------


def boot_volume_request(spec: dict, count: int) -> dict | None:
    """The boot volume a server create asks for, ``{"uuid", "delete_on_termination"}``, or None
    when it boots an image. Accepted: one mapping with boot_index 0, source_type and
    destination_type ``volume`` (what ``openstack server create --volume`` sends). Raises Invalid
    naming what else was sent, and when neither an image nor a boot volume is named. The image's
    own mapping (source ``image``, destination ``local``) is the image boot, as in Nova."""
    mappings = spec.get("block_device_mapping_v2")
    if isinstance(mappings, list):
        # The image's own mapping (source image, destination local: what the CLI sends with
        # --image) names the image boot Nova does without it.
        local = [m for m in mappings if isinstance(m, dict) and m.get("source_type") == "image"
                 and m.get("destination_type") == "local"]
        if local and not spec.get("imageRef") and isinstance(local[0].get("uuid"), str):
            spec["imageRef"] = local[0]["uuid"]
        mappings = [m for m in mappings if not any(m is x for x in local)]
    if not mappings:
        if not spec.get("imageRef"):
            raise exception.Invalid(reason="server.imageRef is required unless server.block_device_mapping_v2 "
                                           "names a boot volume")
        return None
    if not isinstance(mappings, list) or len(mappings) != 1 or not isinstance(mappings[0], dict):
        raise exception.Invalid(reason=f"server.block_device_mapping_v2 {mappings!r}: one mapping of a boot "
                                       "volume is supported")
    [mapping] = mappings
    wanted = {"boot_index": 0, "source_type": "volume", "destination_type": "volume"}
    got = {key: mapping.get(key) for key in wanted}
    if str(got["boot_index"]) != "0" or got["source_type"] != "volume" or got["destination_type"] != "volume" \
            or not isinstance(mapping.get("uuid"), str):
        raise exception.Invalid(reason=f"server.block_device_mapping_v2[0] {got | {'uuid': mapping.get('uuid')}}: "
                                       f"supported is a boot volume, {wanted} with the volume's uuid")
    delete = mapping.get("delete_on_termination", False)
    if not isinstance(delete, bool):
        raise exception.Invalid(reason=f"delete_on_termination {delete!r} is not a boolean")
    if count != 1:
        raise exception.Invalid(reason=f"a boot volume boots one server, not {count}")
    return {"uuid": mapping["uuid"], "delete_on_termination": delete}


def boot_volume_image_props(deps, context, volume_id: str) -> dict:
    """The scheduler's image properties of a boot volume (what its source image said). Raises
    NotFound (a volume the caller may not see), Invalid (not bootable)."""
    volume = volume_service(deps).get(context, volume_id)
    if not volume["bootable"]:
        raise exception.Invalid(reason=f"volume {volume_id} is not bootable (make it from an image, or set "
                                       "--bootable)")
    meta = volume.get("image_metadata") or {}
    return {"id": "", "min_ram": int(meta.get("min_ram") or 0), "min_disk": 0,
            "properties": {k: v for k, v in meta.items() if k not in ("min_ram", "min_disk", "size", "checksum")}}


def reserve_boot_volume(deps, context, request: dict, server_id: str) -> dict:
    """Reserve the boot volume for the server about to be created (its attachment, boot_index 0);
    the compute worker connects it as the guest's vda. Raises as attachment_create does."""
    return volume_service(deps).attachment_create(context, request["uuid"], server_id, boot_index=0,
                                                  delete_on_termination=request["delete_on_termination"])


def release_boot_volume(deps, context, attachment: dict) -> None:
    """Undo :func:`reserve_boot_volume` (the create failed before the server existed)."""
    volume_service(deps).attachment_delete(context, attachment["id"])


class VolumeAttachments:
    def on_get(self, req, resp, server_id):
        """Every volume attached (or being attached) to the server."""
        _server(req, server_id)
        rows = _attachments(req, server_id)
        common.respond(resp, {"volumeAttachments": [_view(r, server_id) for r in rows]})

    def on_post(self, req, resp, server_id):
        """Attach ``volumeAttachment.volumeId`` (``device`` optional, e.g. /dev/vdc); answers the
        attachment with the disk name the guest's definition gives it."""
        server = _server(req, server_id)  # another project's server is 404 whatever the body
        spec = common.body(req, VOLUME_ATTACH)["volumeAttachment"]
        deps, context = common.deps(req), common.ctx(req)
        refuse_if_locked(context, server)
        _require_at_rest(server, "attaching a volume")
        used = [a["device"] for a in _attachments(req, server_id)]
        device = choose_device(used, has_image_disk=True, requested=spec.get("device"))
        service = volume_service(deps)
        attachment = service.attachment_create(context, spec["volumeId"], server_id,
                                               delete_on_termination=spec["delete_on_termination"])
        try:
            _start(req, server, ATTACH, volume_id=attachment["volume_id"], attachment_id=attachment["id"],
                   device=device)
        except BaseException:
            service.attachment_delete(context, attachment["id"])
            raise
        common.respond(resp, {"volumeAttachment": {**_view(attachment, server_id), "device": f"/dev/{device}"}})


class ServerVolumeAttachment:
    def _find(self, req, server_id: str, volume_id: str) -> dict:
        for row in _attachments(req, server_id):
            if row["volume_id"] == volume_id:
                return row
        raise exception.NotFound(kind="Volume attachment", ident=f"of volume {volume_id} to server {server_id}")

    def on_get(self, req, resp, server_id, volume_id):
        """The server's attachment of ``volume_id`` (404 when it has none)."""
        _server(req, server_id)
        common.respond(resp, {"volumeAttachment": _view(self._find(req, server_id, volume_id), server_id)})

    def on_delete(self, req, resp, server_id, volume_id):
        """Detach the volume (202): the guest lets go of the disk, then the volume is available."""
        server = _server(req, server_id)
        refuse_if_locked(common.ctx(req), server)
        _require_at_rest(server, "detaching a volume")
        row = self._find(req, server_id, volume_id)
        if row.get("boot_index") == 0:
            raise exception.Invalid(reason=f"volume {volume_id} is server {server_id}'s boot disk; it cannot be "
                                           "detached")
        _start(req, server, DETACH, volume_id=volume_id, attachment_id=row["id"])
        resp.status = falcon.HTTP_202


def register(app: falcon.App, prefix: str) -> None:
    app.add_route(f"{prefix}/servers/{{server_id}}/os-volume_attachments", VolumeAttachments())
    app.add_route(f"{prefix}/servers/{{server_id}}/os-volume_attachments/{{volume_id}}", ServerVolumeAttachment())
