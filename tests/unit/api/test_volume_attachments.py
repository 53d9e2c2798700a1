"""Compute's os-volume_attachments over the API's unit harness: the volume reserved through the
volume service, the cast to the server's host, and what Nova refuses."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from fabric.db.models import InstanceAction, Volume, VolumeAttachment
from tests.unit.api.test_compute import boot, make_flavor, make_image, place

C = "/compute/v2.1"


def add_volume(api, project_id, status="available", multiattach=False) -> str:
    with api.db.begin() as session:
        volume = Volume(project_id=project_id, user_id="u", size=1, status=status, host="volhost1",
                        multiattach=multiattach)
        session.add(volume)
        session.flush()
        return volume.id


def status_of(api, volume_id) -> str:
    with api.db.begin() as session:
        return session.get(Volume, volume_id).status


@pytest.fixture
def server(api):
    """(member, server id) of a member's active server placed on host1."""
    member = api.make_member()
    server_id = boot(api, member, make_flavor(api), make_image(api, member.project_id)).json["server"]["id"]
    place(api, server_id)
    return member, server_id


def attach(api, member, server_id, volume_id, status=200, **extra):
    return api.app.post_json(f"{C}/servers/{server_id}/os-volume_attachments",
                             {"volumeAttachment": {"volumeId": volume_id, **extra}}, headers=member.headers,
                             status=status)


def test_attach_reserves_the_volume_and_casts_to_the_servers_host(api, server):
    member, server_id = server
    volume_id = add_volume(api, member.project_id)
    doc = attach(api, member, server_id, volume_id).json["volumeAttachment"]
    assert doc == {"id": volume_id, "serverId": server_id, "volumeId": volume_id, "device": "/dev/vdb"}
    assert status_of(api, volume_id) == "reserved"
    [cast] = api.recorder.named("instance_action")
    with api.db.begin() as session:
        attachment = session.scalars(sa.select(VolumeAttachment)).one()
        actions = list(session.scalars(sa.select(InstanceAction.action).where(InstanceAction.instance_id == server_id)))
    assert (cast["host"], cast["action"], cast["instance_id"]) == ("host1", "attach_volume", server_id)
    assert (cast["volume_id"], cast["attachment_id"], cast["device"]) == (volume_id, attachment.id, "vdb")
    assert "attach_volume" in actions

    listed = api.app.get(f"{C}/servers/{server_id}/os-volume_attachments", headers=member.headers).json
    assert listed == {"volumeAttachments": [{"id": volume_id, "serverId": server_id, "volumeId": volume_id,
                                             "device": None}]}  # the device is recorded once the guest has it
    shown = api.app.get(f"{C}/servers/{server_id}/os-volume_attachments/{volume_id}", headers=member.headers).json
    assert shown["volumeAttachment"]["volumeId"] == volume_id


def test_the_next_volume_takes_the_next_free_device_or_the_one_asked(api, server):
    member, server_id = server
    first, second = add_volume(api, member.project_id), add_volume(api, member.project_id)
    with api.db.begin() as session:
        session.execute(sa.insert(VolumeAttachment).values(id="a" * 8, volume_id=first, instance_uuid=server_id,
                                                           status="attached", device="/dev/vdb"))
    assert attach(api, member, server_id, second).json["volumeAttachment"]["device"] == "/dev/vdc"
    third = add_volume(api, member.project_id)
    refused = attach(api, member, server_id, third, status=400, device="/dev/vdb").json
    assert "'/dev/vdb' is in use" in refused["badRequest"]["message"]
    refused = attach(api, member, server_id, third, status=400, device="/dev/sdq").json
    assert "/dev/sdq" in refused["badRequest"]["message"]
    assert status_of(api, third) == "available"


def test_a_volume_in_use_is_refused_unless_multiattach(api, server):
    member, server_id = server
    other = boot(api, member, make_flavor(api, name="m1.other"), make_image(api, member.project_id)).json["server"]
    place(api, other["id"])
    volume_id = add_volume(api, member.project_id)
    attach(api, member, server_id, volume_id)
    refused = attach(api, member, other["id"], volume_id, status=400).json
    assert volume_id in refused["badRequest"]["message"] and "reserved" in refused["badRequest"]["message"]
    shared = add_volume(api, member.project_id, multiattach=True)
    attach(api, member, server_id, shared)
    attach(api, member, other["id"], shared)
    assert len(api.recorder.named("instance_action")) == 3


def test_another_projects_volume_is_not_found(api, server):
    member, server_id = server
    stranger = api.make_member()
    volume_id = add_volume(api, stranger.project_id)
    attach(api, member, server_id, volume_id, status=404)
    assert status_of(api, volume_id) == "available"
    assert api.recorder.named("instance_action") == []


def test_a_server_mid_task_or_unplaced_is_refused(api):
    member = api.make_member()
    server_id = boot(api, member, make_flavor(api), make_image(api, member.project_id)).json["server"]["id"]
    volume_id = add_volume(api, member.project_id)
    refused = attach(api, member, server_id, volume_id, status=409).json
    assert server_id in refused["conflictingRequest"]["message"]
    assert status_of(api, volume_id) == "available"


@pytest.mark.parametrize("body", [{}, {"volumeAttachment": {}}, {"volumeAttachment": {"volumeId": 3}},
                                  {"volumeAttachment": {"volumeId": "v", "bogus": 1}},
                                  {"volumeAttachment": {"volumeId": "v", "delete_on_termination": "yes"}}])
def test_bad_bodies_are_refused_naming_the_problem(api, server, body):
    member, server_id = server
    refused = api.app.post_json(f"{C}/servers/{server_id}/os-volume_attachments", body, headers=member.headers,
                                status=400).json
    assert refused["badRequest"]["message"]
    assert api.recorder.named("instance_action") == []


def test_detach_casts_to_the_host_and_unknown_attachments_are_404(api, server):
    member, server_id = server
    volume_id = add_volume(api, member.project_id)
    attach(api, member, server_id, volume_id)
    api.app.delete(f"{C}/servers/{server_id}/os-volume_attachments/{volume_id}", headers=member.headers, status=202)
    cast = api.recorder.named("instance_action")[-1]
    assert (cast["action"], cast["volume_id"], cast["instance_id"]) == ("detach_volume", volume_id, server_id)
    api.app.delete(f"{C}/servers/{server_id}/os-volume_attachments/{add_volume(api, member.project_id)}",
                   headers=member.headers, status=404)


def test_another_projects_server_is_not_found(api, server):
    _member, server_id = server
    stranger = api.make_member()
    volume_id = add_volume(api, stranger.project_id)
    attach(api, stranger, server_id, volume_id, status=404)
    api.app.get(f"{C}/servers/{server_id}/os-volume_attachments", headers=stranger.headers, status=404)


def bootable_volume(api, project_id, status="available") -> str:
    with api.db.begin() as session:
        volume = Volume(project_id=project_id, user_id="u", size=1, status=status, host="volhost1",
                        bootable=True, image_metadata={"image_id": "img-1", "min_ram": "0", "kernel_id": "k"})
        session.add(volume)
        session.flush()
        return volume.id


def bfv(api, member, volume_id, status=202, **mapping):
    body = {"server": {"name": "bfv", "flavorRef": make_flavor(api, name=f"f-{volume_id[:6]}")["id"],
                       "imageRef": "", "block_device_mapping_v2": [
                           {"uuid": volume_id, "boot_index": 0, "source_type": "volume",
                            "destination_type": "volume", **mapping}]}}
    return api.app.post_json(f"{C}/servers", body, headers=member.headers, status=status)


def test_boot_from_volume_reserves_the_volume_as_the_servers_vda_before_the_build(api):
    member = api.make_member()
    volume_id = bootable_volume(api, member.project_id)
    server_id = bfv(api, member, volume_id, delete_on_termination=True).json["server"]["id"]
    with api.db.begin() as session:
        attachment = session.scalars(sa.select(VolumeAttachment)).one()
        image_id = session.scalar(sa.text("SELECT image_id FROM instances WHERE id = :i"), {"i": server_id})
    assert (attachment.instance_uuid, attachment.boot_index, attachment.delete_on_termination) == (
        server_id, 0, True)
    assert status_of(api, volume_id) == "reserved" and image_id == ""
    [scheduled] = api.recorder.named("build_instances")
    assert scheduled["instance_ids"] == [server_id] and scheduled["request_spec"]["image"]["id"] == ""
    listed = api.app.get(f"{C}/servers/{server_id}/os-volume_attachments", headers=member.headers).json
    assert [a["volumeId"] for a in listed["volumeAttachments"]] == [volume_id]
    place(api, server_id)
    refused = api.app.delete(f"{C}/servers/{server_id}/os-volume_attachments/{volume_id}", headers=member.headers,
                             status=400).json
    assert "boot disk" in refused["badRequest"]["message"]


@pytest.mark.parametrize(("mapping", "named"), [
    ({"source_type": "image"}, "source_type"),
    ({"boot_index": 1}, "boot_index"),
    ({"delete_on_termination": "no"}, "delete_on_termination"),
])
def test_unsupported_block_device_mappings_are_refused_and_reserve_nothing(api, mapping, named):
    member = api.make_member()
    volume_id = bootable_volume(api, member.project_id)
    refused = bfv(api, member, volume_id, status=400, **mapping).json
    assert named in refused["badRequest"]["message"]
    assert status_of(api, volume_id) == "available"


def test_a_volume_that_cannot_boot_or_is_in_use_is_refused(api):
    member = api.make_member()
    plain = add_volume(api, member.project_id)
    assert "not bootable" in bfv(api, member, plain, status=400).json["badRequest"]["message"]
    busy = bootable_volume(api, member.project_id, status="in-use")
    bfv(api, member, busy, status=400)
    assert status_of(api, busy) == "in-use"
    stranger = api.make_member()
    bfv(api, member, bootable_volume(api, stranger.project_id), status=404)
    with api.db.begin() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(VolumeAttachment)) == 0


def test_no_image_and_no_boot_volume_is_refused(api):
    member = api.make_member()
    body = {"server": {"name": "x", "flavorRef": make_flavor(api)["id"]}}
    refused = api.app.post_json(f"{C}/servers", body, headers=member.headers, status=400).json
    assert "imageRef" in refused["badRequest"]["message"]


def test_the_images_own_mapping_is_an_image_boot(api):
    member = api.make_member()
    image_id = make_image(api, member.project_id)
    body = {"server": {"name": "img", "flavorRef": make_flavor(api)["id"], "imageRef": image_id,
                       "block_device_mapping_v2": [{"uuid": image_id, "boot_index": 0, "source_type": "image",
                                                    "destination_type": "local"}]}}
    server_id = api.app.post_json(f"{C}/servers", body, headers=member.headers, status=202).json["server"]["id"]
    with api.db.begin() as session:
        assert session.scalar(sa.text("SELECT image_id FROM instances WHERE id = :i"), {"i": server_id}) == image_id
        assert session.scalar(sa.select(sa.func.count()).select_from(VolumeAttachment)) == 0
