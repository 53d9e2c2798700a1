"""Server create resolves the image, its kernel_id and its ramdisk_id with fabric.images'
rule for the new server's project, and refuses a bad reference before anything is written."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from fabric.db.models import Image, Instance, InstanceFault, QuotaUsage

C = "/compute/v2.1"


def _image(api, owner, *, visibility="private", status="active", disk_format="raw", **properties) -> str:
    """An image row written straight into the database (as a legacy or hostile row would be)."""
    image_id = str(uuid.uuid4())
    with api.db.begin() as session:
        session.add(Image(id=image_id, name="i", owner=owner, visibility=visibility, status=status,
                          disk_format=disk_format, container_format="bare", size=3, properties=properties))
    return image_id


@pytest.fixture
def tenant(api):
    flavor = api.app.post_json(f"{C}/flavors", {"flavor": {"name": "m1", "ram": 128, "vcpus": 1, "disk": 1}},
                               headers={"X-Auth-Token": api.admin.token}).json["flavor"]
    return api.make_member(), flavor


def _boot(api, member, flavor, image_id, status):
    body = {"server": {"name": "vm", "flavorRef": flavor["id"], "imageRef": image_id}}
    return api.app.post_json(f"{C}/servers", body, headers=member.headers, status=status)


def _nothing_written(api) -> None:
    with api.db.begin() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Instance)) == 0
        assert session.scalar(sa.select(sa.func.count()).select_from(InstanceFault)) == 0
        assert [u.in_use for u in session.scalars(sa.select(QuotaUsage))] in ([], [0, 0, 0])
    assert api.recorder.casts == []


def test_bad_kernel_or_ramdisk_references_are_refused_with_400_and_nothing_written(api, tenant):
    member, flavor = tenant
    kernel = _image(api, member.project_id, disk_format="aki")
    private_kernel = _image(api, "another-project", disk_format="aki")
    private_ramdisk = _image(api, "another-project", disk_format="ari")
    queued_kernel = _image(api, member.project_id, disk_format="aki", status="queued")
    unknown = str(uuid.uuid4())
    cases = [
        ("kernel_id", "../../etc/passwd", {}, "is not an image id"),
        ("kernel_id", "/etc/passwd", {}, "is not an image id"),
        ("kernel_id", "vmlinuz", {}, "is not an image id"),
        ("kernel_id", unknown, {}, "names no image that project"),
        ("kernel_id", private_kernel, {}, "names no image that project"),
        ("kernel_id", queued_kernel, {}, "only an active image can boot"),
        ("ramdisk_id", "../initrd", {"kernel_id": kernel}, "is not an image id"),
        ("ramdisk_id", unknown, {"kernel_id": kernel}, "names no image that project"),
        ("ramdisk_id", private_ramdisk, {"kernel_id": kernel}, "names no image that project"),
    ]
    for prop, value, others, why in cases:
        image = _image(api, member.project_id, disk_format="ami", **others, **{prop: value})
        resp = _boot(api, member, flavor, image, status=400)
        message = resp.json["badRequest"]["message"]
        assert value in message and prop in message and why in message, (prop, value, message)
    _nothing_written(api)


def test_another_projects_private_image_is_not_found_but_public_images_boot(api, tenant):
    member, flavor = tenant
    private = _image(api, "another-project")
    resp = _boot(api, member, flavor, private, status=404)
    assert private in resp.json["itemNotFound"]["message"]
    _nothing_written(api)
    public_kernel = _image(api, "another-project", visibility="public", disk_format="aki")
    community_ramdisk = _image(api, "another-project", visibility="community", disk_format="ari")
    image = _image(api, "another-project", visibility="public", disk_format="ami", kernel_id=public_kernel,
                   ramdisk_id=community_ramdisk)
    server_id = _boot(api, member, flavor, image, status=202).json["server"]["id"]
    with api.db.begin() as session:
        assert session.get(Instance, server_id).image_id == image


def test_the_new_servers_project_decides_even_for_an_admin(api, tenant):
    """The compute worker resolves images for the instance's project: an admin's server may not
    boot another project's private image either (the worker would refuse it)."""
    _, flavor = tenant
    admin = api.admin
    private = _image(api, "another-project")
    _boot(api, admin, flavor, private, status=404)
    _nothing_written(api)
