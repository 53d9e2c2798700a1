"""The attachment calls Compute makes (issue 21's contract): every step a compare-and-swap."""

from __future__ import annotations

import pytest

from fabric import exception
from fabric.db.models import Volume
from fabric.volume import states


def _available(service, ctx, **kwargs):
    volume = service.create(ctx, size=1, **kwargs)
    with service.db.begin() as session:
        assert states.swap(session, Volume, volume["id"], states.CREATING, states.AVAILABLE)
    return volume["id"]


def _status(service, ctx, volume_id):
    return service.get(ctx, volume_id)["status"]


def test_attach_then_detach_walks_cinders_statuses(service, rpc, ctx):
    volume_id = _available(service, ctx)
    attachment = service.attachment_create(ctx, volume_id, "server-1")
    assert attachment["status"] == "reserved" and _status(service, ctx, volume_id) == "reserved"

    info = service.attachment_update(ctx, attachment["id"], {"host": "compute1", "ip": "10.0.0.2"})
    assert info["driver_volume_type"] == "nbd" and info["data"]["export_name"] == volume_id
    assert _status(service, ctx, volume_id) == "attaching"
    assert ("export_volume", "volhost1", volume_id) in rpc.sent

    service.attachment_complete(ctx, attachment["id"], "/dev/vdb")
    volume = service.get(ctx, volume_id)
    assert volume["status"] == "in-use"
    [stored] = volume["attachments"]
    assert (stored["status"], stored["device"], stored["attached_host"]) == ("attached", "/dev/vdb", "compute1")
    assert stored["connection_info"] == info
    assert service.attachments_for_instance(ctx, "server-1")[0]["id"] == attachment["id"]

    with pytest.raises(exception.VolumeStateInvalid):
        service.delete(ctx, volume_id)
    service.attachment_delete(ctx, attachment["id"])
    assert _status(service, ctx, volume_id) == "available"
    assert ("unexport_volume", "volhost1", volume_id) in rpc.sent
    service.attachment_delete(ctx, attachment["id"])  # idempotent


def test_second_server_refused_unless_multiattach(service, ctx):
    single = _available(service, ctx)
    service.attachment_create(ctx, single, "server-1")
    with pytest.raises(exception.VolumeStateInvalid) as refused:
        service.attachment_create(ctx, single, "server-2")
    assert refused.value.code == 400 and single in refused.value.message
    with pytest.raises(exception.Conflict):
        service.attachment_create(ctx, single, "server-1")

    shared = _available(service, ctx, multiattach=True)
    first = service.attachment_create(ctx, shared, "server-1")
    service.attachment_update(ctx, first["id"], {"host": "c1"})
    service.attachment_complete(ctx, first["id"], "/dev/vdb")
    second = service.attachment_create(ctx, shared, "server-2")
    assert _status(service, ctx, shared) == "in-use"
    service.attachment_delete(ctx, first["id"])
    assert _status(service, ctx, shared) == "in-use"  # server-2 still holds it
    service.attachment_delete(ctx, second["id"])
    assert _status(service, ctx, shared) == "available"


def test_failed_export_leaves_volume_reserved_and_delete_makes_it_available(service, rpc, ctx):
    volume_id = _available(service, ctx)
    attachment = service.attachment_create(ctx, volume_id, "server-1")
    rpc.fail_export = exception.MessagingTimeout(target="volume.volhost1", method="export_volume", timeout=1)
    with pytest.raises(exception.MessagingTimeout):
        service.attachment_update(ctx, attachment["id"], {"host": "c1"})
    volume = service.get(ctx, volume_id)
    assert volume["status"] == "reserved" and "export failed" in volume["status_reason"]
    assert volume["attachments"][0]["status"] == "error_attaching"
    service.attachment_delete(ctx, attachment["id"])
    assert _status(service, ctx, volume_id) == "available"


def test_other_projects_volume_is_not_found(service, ctx, other_ctx):
    volume_id = _available(service, ctx)
    with pytest.raises(exception.NotFound):
        service.attachment_create(other_ctx, volume_id, "server-9")
    attachment = service.attachment_create(ctx, volume_id, "server-1")
    with pytest.raises(exception.NotFound):
        service.attachment_update(other_ctx, attachment["id"], {"host": "c1"})
    with pytest.raises(exception.Invalid):
        service.attachment_update(ctx, attachment["id"], {"ip": "10.0.0.1"})
