"""os-volume_upload_image through the HTTP API in-process: the volume worker's handler answers the
cast on real qcow2 files and stores the image's data in a real objectstore served from a thread
(every byte crosses HTTP, as the Image API's own uploads do)."""

from __future__ import annotations

import datetime
import hashlib
import subprocess

import pytest

from fabric import servicegroup
from fabric.context import RequestContext
from fabric.db.types import utcnow
from fabric.volume import reaper
from fabric.volume.api import VolumeService
from fabric.volume.manager import VolumeManager
from fabric.volume.rpcapi import BINARY, TOPIC
from tests.fixtures.image_objectstore import serving_objectstore

V = "/volume/v3"
IMG = "/image/v2"
MIB = 1024**2
#: What the source image holds: a recognisable first MiB (the rest of the 1 GiB volume is zeros).
PATTERN = bytes(range(256)) * (MIB // 256)


class BrokenDisks:
    """An image store that refuses every upload, as an objectstore that is down would."""

    def put_image(self, image_id, path):
        raise OSError(f"objectstore unreachable uploading {image_id}")


@pytest.fixture
def cloud(api, tmp_path):
    """The API, its Image API on an objectstore of its own, and one volume host whose worker runs
    each cast at once and uploads to the same objectstore."""
    with serving_objectstore(api.settings, api.db) as served:
        api.settings = served.settings
        api.app.app.deps.settings = served.settings
        servicegroup.register(api.db, host="vol1", binary=BINARY, topic=TOPIC, version="1")
        settings = served.settings.replace(default={"data_dir": str(tmp_path / "vol1"), "host": "vol1"},
                                           volume={"export_port_min": 21909, "export_port_max": 21999})
        api.worker = VolumeManager(settings, host="vol1", db=api.db)
        admin = RequestContext.admin()
        for method in ("create_volume", "delete_volume", "upload_to_image"):
            api.recorder.answers[method] = (lambda name: lambda kwargs: getattr(api.worker, name)(
                admin, **{k: v for k, v in kwargs.items() if k not in ("host", "request_id")}))(method)
        api.member = api.make_member()
        yield api


def _volume_from_image(cloud) -> dict:
    headers = cloud.member.headers
    image = cloud.app.post_json(f"{IMG}/images", {"name": "src", "disk_format": "raw", "container_format": "bare",
                                                  "os_distro": "busybox"}, headers=headers, status=201).json
    cloud.app.put(f"{IMG}/images/{image['id']}/file", PATTERN, headers=dict(
        headers, **{"Content-Type": "application/octet-stream"}), status=204)
    volume = cloud.app.post_json(f"{V}/volumes", {"volume": {"imageRef": image["id"], "name": "disk"}},
                                 headers=headers, status=202).json["volume"]
    assert cloud.app.get(f"{V}/volumes/{volume['id']}", headers=headers).json["volume"]["status"] == "available"
    return volume


def _upload(cloud, volume_id, status=202, **args):
    return cloud.app.post_json(f"{V}/volumes/{volume_id}/action", {"os-volume_upload_image": args},
                               headers=cloud.member.headers, status=status).json


def _image_ids(cloud) -> set[str]:
    return {i["id"] for i in cloud.app.get(f"{IMG}/images", headers=cloud.member.headers).json["images"]}


def test_upload_makes_an_active_image_holding_the_volumes_bytes(cloud, tmp_path):
    headers = cloud.member.headers
    volume = _volume_from_image(cloud)
    answer = _upload(cloud, volume["id"], image_name="from-volume", disk_format="qcow2")["os-volume_upload_image"]
    assert (answer["id"], answer["status"], answer["image_name"], answer["disk_format"], answer["container_format"],
            answer["visibility"], answer["protected"], answer["volume_type"]["name"], answer["size"]) == (
        volume["id"], "uploading", "from-volume", "qcow2", "bare", "private", False, "__DEFAULT__", 1)

    image = cloud.app.get(f"{IMG}/images/{answer['image_id']}", headers=headers).json
    assert (image["status"], image["name"], image["disk_format"], image["min_disk"], image["owner"],
            image["os_distro"]) == ("active", "from-volume", "qcow2", 1, cloud.member.project_id, "busybox")
    assert "image_id" not in image and "__tags" not in image  # the source's own attributes stay behind
    shown = cloud.app.get(f"{V}/volumes/{volume['id']}", headers=headers).json["volume"]
    assert shown["status"] == "available"

    data = cloud.app.get(f"{IMG}/images/{answer['image_id']}/file", headers=headers).body
    assert (len(data), hashlib.md5(data, usedforsecurity=False).hexdigest()) == (image["size"], image["checksum"])
    uploaded, raw = tmp_path / "uploaded.qcow2", tmp_path / "uploaded.raw"
    uploaded.write_bytes(data)
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(uploaded), str(raw)], check=True)
    with raw.open("rb") as disk:
        assert disk.read(MIB) == PATTERN and disk.read(MIB) == bytes(MIB)
    assert raw.stat().st_size == 1024**3
    assert not list(cloud.worker.driver.root.glob(".upload-*"))  # the scratch copy is gone


def test_in_use_needs_force_and_comes_back_in_use(cloud):
    volume = _volume_from_image(cloud)
    member = RequestContext(user_id=cloud.member.user_id, project_id=cloud.member.project_id, roles=("member",))
    volumes = VolumeService(cloud.db, rpc=None)
    attachment = volumes.attachment_create(member, volume["id"], "6d1f0ab4-0000-4000-8000-0000000000aa")
    volumes.attachment_complete(member, attachment["id"], "vdb")
    before = _image_ids(cloud)
    refused = _upload(cloud, volume["id"], status=400, image_name="busy")
    assert "in-use" in refused["badRequest"]["message"] and "force" in refused["badRequest"]["message"]
    assert _image_ids(cloud) == before
    answer = _upload(cloud, volume["id"], image_name="busy", force="true", disk_format="qcow2")
    image_id = answer["os-volume_upload_image"]["image_id"]
    assert cloud.app.get(f"{IMG}/images/{image_id}", headers=cloud.member.headers).json["status"] == "active"
    assert cloud.app.get(f"{V}/volumes/{volume['id']}", headers=cloud.member.headers).json["volume"]["status"] == \
        "in-use"


@pytest.mark.parametrize(("args", "named", "status"), [
    ({}, "image_name", 400), ({"image_name": "  "}, "image_name", 400),
    ({"image_name": "x", "disk_format": "iso"}, "iso", 400),
    ({"image_name": "x", "container_format": "docker"}, "docker", 400),
    ({"image_name": "x", "force": "perhaps"}, "perhaps", 400),
    ({"image_name": "x", "visibility": "public"}, "public", 403),
])
def test_bad_upload_requests_name_the_value_and_change_nothing(cloud, args, named, status):
    volume = _volume_from_image(cloud)
    before = _image_ids(cloud)
    answer = _upload(cloud, volume["id"], status=status, **args)
    [(key, body)] = answer.items() if "message" not in answer else [("", answer)]
    assert named in body["message"]
    assert _image_ids(cloud) == before
    assert cloud.app.get(f"{V}/volumes/{volume['id']}", headers=cloud.member.headers).json["volume"]["status"] == \
        "available"


def test_a_failed_upload_kills_the_image_and_says_why(cloud):
    volume = _volume_from_image(cloud)
    cloud.worker._disks = BrokenDisks()
    answer = _upload(cloud, volume["id"], image_name="lost")["os-volume_upload_image"]
    assert cloud.app.get(f"{IMG}/images/{answer['image_id']}", headers=cloud.member.headers).json["status"] == "killed"
    shown = cloud.app.get(f"{V}/volumes/{volume['id']}", headers={"X-Auth-Token": cloud.admin.token}).json["volume"]
    assert shown["status"] == "available" and "objectstore unreachable" in shown["status_reason"]
    assert not list(cloud.worker.driver.root.glob(".upload-*"))


def test_a_late_or_repeated_upload_message_changes_nothing_but_a_waiting_image(cloud):
    volume = _volume_from_image(cloud)
    answer = _upload(cloud, volume["id"], image_name="once", disk_format="qcow2")["os-volume_upload_image"]
    image = cloud.app.get(f"{IMG}/images/{answer['image_id']}", headers=cloud.member.headers).json
    cloud.worker.upload_to_image(RequestContext.admin(), volume_id=volume["id"], image_id=answer["image_id"])
    again = cloud.app.get(f"{IMG}/images/{answer['image_id']}", headers=cloud.member.headers).json
    assert (again["status"], again["checksum"]) == ("active", image["checksum"])
    waiting = cloud.app.post_json(f"{IMG}/images", {"name": "w", "disk_format": "raw", "container_format": "bare"},
                                  headers=cloud.member.headers, status=201).json
    cloud.worker.upload_to_image(RequestContext.admin(), volume_id=volume["id"], image_id=waiting["id"])
    assert cloud.app.get(f"{IMG}/images/{waiting['id']}", headers=cloud.member.headers).json["status"] == "killed"
    assert cloud.app.get(f"{V}/volumes/{volume['id']}", headers=cloud.member.headers).json["volume"]["status"] == \
        "available"


def test_the_reaper_puts_a_stuck_upload_back_where_its_attachments_say(cloud):
    volume = _volume_from_image(cloud)
    cloud.recorder.answers.pop("upload_to_image")  # the worker never gets it: the message was lost
    _upload(cloud, volume["id"], image_name="stuck")
    assert cloud.app.get(f"{V}/volumes/{volume['id']}", headers=cloud.member.headers).json["volume"]["status"] == \
        "uploading"
    lines = reaper.reap(cloud.db, 60, now=utcnow() + datetime.timedelta(seconds=61))
    assert lines == [f"volume {volume['id']}: uploading -> available"]
