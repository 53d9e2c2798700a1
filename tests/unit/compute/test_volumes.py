"""The compute manager's volume handlers on the fake driver, over the real VolumeService (its RPC to
the volume host recorded): attach, detach, failures rolled back, delete releasing volumes, guests
defined again keeping them."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from fabric import servicegroup
from fabric.compute import states
from fabric.compute.volumes import choose_device
from fabric.db.models import InstanceFault, Project, Volume
from fabric.exception import HypervisorError, Invalid
from fabric.volume import states as volume_states
from fabric.volume.api import VolumeService
from fabric.volume.rpcapi import BINARY, TOPIC
from tests.unit.compute.conftest import HOST, add_instance
from tests.unit.volume.conftest import RecordingVolumeRPC

VOLUME_HOST = "volhost1"


@pytest.fixture
def rpc():
    return RecordingVolumeRPC()


@pytest.fixture
def volumes(sqlite_db, rpc):
    servicegroup.register(sqlite_db, host=VOLUME_HOST, binary=BINARY, topic=TOPIC, version="1", address="127.0.0.1")
    return VolumeService(sqlite_db, rpc)


@pytest.fixture
def setup(make_manager, volumes, sqlite_db, ctx):
    """A manager whose volume collaborator is ``volumes``, and an active server on its host."""
    manager = make_manager()
    manager.volumes = volumes
    instance_id = add_instance(sqlite_db)
    with sqlite_db.begin() as session:
        project_id = session.scalar(sa.text("SELECT project_id FROM instances WHERE id = :i"), {"i": instance_id})
        if session.get(Project, project_id) is None:
            session.add(Project(id=project_id, name=project_id))
    manager.build_instance(ctx, instance_id)
    assert states.get_instance(sqlite_db, instance_id)["vm_state"] == states.ACTIVE
    return manager, instance_id, project_id


def _volume(volumes, ctx, project_id, **kwargs) -> str:
    from dataclasses import replace
    owner = replace(ctx, project_id=project_id)
    volume = volumes.create(owner, size=1, **kwargs)
    with volumes.db.begin() as session:
        assert volume_states.swap(session, Volume, volume["id"], volume_states.CREATING, volume_states.AVAILABLE)
    return volume["id"]


def _status(db, volume_id) -> str:
    with db.begin() as session:
        return session.get(Volume, volume_id).status


def _attach(manager, volumes, ctx, instance_id, volume_id, device="vdb", **kwargs):
    attachment = volumes.attachment_create(ctx, volume_id, instance_id, **kwargs)
    manager.attach_volume(ctx, instance_id, volume_id, attachment["id"], device)
    return attachment


def test_attach_connects_through_the_volume_host_and_plugs_the_disk(setup, volumes, rpc, ctx, sqlite_db):
    manager, instance_id, project_id = setup
    volume_id = _volume(volumes, ctx, project_id)
    attachment = _attach(manager, volumes, ctx, instance_id, volume_id)
    [disk] = manager.driver.volumes(instance_id)
    assert (disk.volume_id, disk.device) == (volume_id, "vdb")
    assert disk.connection_info["data"]["export_name"] == volume_id  # what the volume host answered
    assert ("export_volume", VOLUME_HOST, volume_id) in rpc.sent
    assert _status(sqlite_db, volume_id) == volume_states.IN_USE
    [stored] = volumes.attachments_for_instance(ctx, instance_id)
    assert (stored["id"], stored["status"], stored["device"]) == (attachment["id"], "attached", "/dev/vdb")
    assert stored["connector"] == manager._connector() and stored["connector"]["host"] == HOST


def test_a_redelivered_attach_changes_nothing_more(setup, volumes, ctx, sqlite_db):
    manager, instance_id, project_id = setup
    volume_id = _volume(volumes, ctx, project_id)
    attachment = _attach(manager, volumes, ctx, instance_id, volume_id)
    manager.attach_volume(ctx, instance_id, volume_id, attachment["id"], "vdb")
    assert [d.volume_id for d in manager.driver.volumes(instance_id)] == [volume_id]
    assert _status(sqlite_db, volume_id) == volume_states.IN_USE


def test_a_failed_plug_gives_the_volume_back_and_records_a_fault(setup, volumes, rpc, ctx, sqlite_db):
    manager, instance_id, project_id = setup
    volume_id = _volume(volumes, ctx, project_id)
    manager.driver.fail_next("attach_volume", HypervisorError(host=HOST, action="attach", instance=instance_id,
                                                              reason="nbd server went away"))
    _attach(manager, volumes, ctx, instance_id, volume_id)
    assert manager.driver.volumes(instance_id) == []
    assert _status(sqlite_db, volume_id) == volume_states.AVAILABLE
    assert volumes.attachments_for_instance(ctx, instance_id) == []
    assert ("unexport_volume", VOLUME_HOST, volume_id) in rpc.sent
    with sqlite_db.begin() as session:
        messages = list(session.scalars(sa.select(InstanceFault.message)
                                        .where(InstanceFault.instance_id == instance_id)))
    assert any("nbd server went away" in m for m in messages)
    assert states.get_instance(sqlite_db, instance_id)["vm_state"] == states.ACTIVE  # the server is unharmed


def test_a_failed_export_leaves_the_volume_available(setup, volumes, rpc, ctx, sqlite_db):
    manager, instance_id, project_id = setup
    volume_id = _volume(volumes, ctx, project_id)
    rpc.fail_export = Invalid(reason="no space for the export")
    _attach(manager, volumes, ctx, instance_id, volume_id)
    assert manager.driver.volumes(instance_id) == []
    assert _status(sqlite_db, volume_id) == volume_states.AVAILABLE


def test_detach_unplugs_then_makes_the_volume_available(setup, volumes, rpc, ctx, sqlite_db):
    manager, instance_id, project_id = setup
    volume_id = _volume(volumes, ctx, project_id)
    attachment = _attach(manager, volumes, ctx, instance_id, volume_id)
    manager.detach_volume(ctx, instance_id, volume_id, attachment["id"])
    assert manager.driver.volumes(instance_id) == []
    assert _status(sqlite_db, volume_id) == volume_states.AVAILABLE
    assert volumes.attachments_for_instance(ctx, instance_id) == []
    manager.detach_volume(ctx, instance_id, volume_id, attachment["id"])  # redelivered: nothing more
    assert _status(sqlite_db, volume_id) == volume_states.AVAILABLE


def test_a_failed_unplug_keeps_the_volume_attached(setup, volumes, ctx, sqlite_db):
    manager, instance_id, project_id = setup
    volume_id = _volume(volumes, ctx, project_id)
    attachment = _attach(manager, volumes, ctx, instance_id, volume_id)
    manager.driver.fail_next("detach_volume")
    manager.detach_volume(ctx, instance_id, volume_id, attachment["id"])
    assert [d.volume_id for d in manager.driver.volumes(instance_id)] == [volume_id]
    assert _status(sqlite_db, volume_id) == volume_states.IN_USE


def test_a_guest_defined_again_gets_its_volumes(setup, volumes, ctx):
    manager, instance_id, project_id = setup
    first, second = _volume(volumes, ctx, project_id), _volume(volumes, ctx, project_id)
    _attach(manager, volumes, ctx, instance_id, first, "vdb")
    _attach(manager, volumes, ctx, instance_id, second, "vdc")
    instance = states.get_instance(manager.db, instance_id)
    spec = manager._guest_spec(ctx, instance, instance["network_info"])
    assert [(d.volume_id, d.device) for d in spec.volumes] == [(first, "vdb"), (second, "vdc")]


def test_delete_detaches_and_deletes_volumes_marked_for_it(setup, volumes, rpc, ctx, sqlite_db):
    manager, instance_id, project_id = setup
    kept, dropped = _volume(volumes, ctx, project_id), _volume(volumes, ctx, project_id)
    _attach(manager, volumes, ctx, instance_id, kept, "vdb")
    _attach(manager, volumes, ctx, instance_id, dropped, "vdc", delete_on_termination=True)
    manager.terminate_instance(ctx, instance_id)
    assert volumes.attachments_for_instance(ctx, instance_id) == []
    assert _status(sqlite_db, kept) == volume_states.AVAILABLE
    assert _status(sqlite_db, dropped) == volume_states.DELETING
    assert ("delete_volume", VOLUME_HOST, dropped) in rpc.sent


@pytest.mark.parametrize(("used", "image_disk", "requested", "expected"), [
    ([], True, None, "vdb"),
    ([], False, None, "vda"),
    (["/dev/vdb", "/dev/vdd"], True, None, "vdc"),
    (["/dev/vdb"], True, "/dev/vdf", "vdf"),
    ([None], True, "vdc", "vdc"),
])
def test_choose_device(used, image_disk, requested, expected):
    assert choose_device(used, image_disk, requested) == expected


@pytest.mark.parametrize(("used", "requested", "named"), [
    (["/dev/vdb"], "/dev/vdb", "in use"),
    ([], "/dev/sdb", "/dev/sdb"),
    ([], "/dev/vda", "in use"),
])
def test_choose_device_refuses(used, requested, named):
    with pytest.raises(Invalid, match=named):
        choose_device(used, True, requested)


@pytest.mark.parametrize("kernel", [True, False])
def test_a_server_booted_from_a_volume_has_it_as_vda_from_its_first_definition(make_manager, volumes, sqlite_db,
                                                                                 ctx, kernel):
    manager = make_manager()
    manager.volumes = volumes
    instance_id = add_instance(sqlite_db, image_id="")
    with sqlite_db.begin() as session:
        project_id = session.scalar(sa.text("SELECT project_id FROM instances WHERE id = :i"), {"i": instance_id})
        session.add(Project(id=project_id, name=project_id))
    volume_id = _volume(volumes, ctx, project_id)
    with sqlite_db.begin() as session:
        session.get(Volume, volume_id).image_metadata = (
            {"image_id": "img-from", "kernel_id": "k1"} if kernel else {"image_id": "img-disk"})
    volumes.attachment_create(ctx, volume_id, instance_id, boot_index=0)
    manager.build_instance(ctx, instance_id)
    assert states.get_instance(sqlite_db, instance_id)["vm_state"] == states.ACTIVE
    [disk] = manager.driver.volumes(instance_id)
    assert (disk.volume_id, disk.device) == (volume_id, "vda")
    assert _status(sqlite_db, volume_id) == volume_states.IN_USE
    instance = states.get_instance(sqlite_db, instance_id)
    image = manager._guest_spec(ctx, instance, instance["network_info"]).image
    # A volume of a direct-kernel image boots that kernel (FakeImages': /images/vmlinux) with the
    # volume as vda; any other boots the volume itself (no kernel, no image disk).
    assert (image.kernel, image.disk_path) == (("/images/vmlinux", None) if kernel else (None, None))
