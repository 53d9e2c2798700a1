"""Image v2: create, upload (streamed into the objectstore, checksums), download (streamed back),
list filters, patch, delete, isolation, and the image references kernel_id/ramdisk_id checked
wherever they are set.

The objectstore is the real application, served from a thread over the test's database
(:mod:`tests.fixtures.image_objectstore`): every image byte crosses HTTP, signed with the image
service's credential.
"""

from __future__ import annotations

import datetime
import hashlib
import http.client
import io
import json
import os
import re
import tracemalloc
import uuid

import pytest
import sqlalchemy as sa
import webtest

from fabric import images
from fabric.api import image_store, image_uploads
from fabric.db.models import Image, MultipartUpload, StoredObject
from fabric.db.types import utcnow
from fabric.exception import Conflict, ImageTooLarge, Invalid, ObjectstoreError
from fabric.objectstore import client as s3client
from tests.fixtures.image_objectstore import serving_objectstore
from tests.fixtures.rpc import wait_for

IMG = "/image/v2"


@pytest.fixture
def api(api):
    """The API harness, its Image API writing to an objectstore of its own."""
    with serving_objectstore(api.settings, api.db) as served:
        api.settings = served.settings
        api.app.app.deps.settings = served.settings
        api.objectstore = served
        yield api


def stored(api, image_id: str) -> bytes | None:
    """The bytes of ``image_id``'s object in the objectstore (read with the service's key), or None."""
    try:
        response = image_store.client(api.settings, api.db).get_object(images.BUCKET, image_id)
    except ObjectstoreError as exc:
        assert exc.fields["code"] in ("NoSuchKey", "NoSuchBucket"), exc
        return None
    with response:
        return response.read()


def object_rows(api) -> list[str]:
    with api.db.begin() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(MultipartUpload)) == 0
        return [bytes(key).decode() for key in session.scalars(sa.select(StoredObject.key))]


def create(api, member, **body):
    body.setdefault("name", "img")
    body.setdefault("disk_format", "raw")
    body.setdefault("container_format", "bare")
    return api.app.post_json(f"{IMG}/images", body, headers=member.headers, status=201).json


def upload(api, member, image_id, data: bytes, status=204):
    return api.app.put(f"{IMG}/images/{image_id}/file", data, headers=dict(member.headers, **{
        "Content-Type": "application/octet-stream"}), status=status)


def test_upload_streams_with_checksums_and_downloads(api):
    member = api.make_member()
    image = create(api, member, name="cirros", os_distro="cirros")
    assert image["status"] == "queued" and image["owner"] == member.project_id and image["os_distro"] == "cirros"
    data = bytes(range(256)) * 5000
    upload(api, member, image["id"], data)
    shown = api.app.get(f"{IMG}/images/{image['id']}", headers=member.headers).json
    assert shown["status"] == "active" and shown["size"] == len(data)
    assert shown["checksum"] == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert (shown["os_hash_algo"], shown["os_hash_value"]) == ("sha512", hashlib.sha512(data).hexdigest())
    assert stored(api, image["id"]) == data and object_rows(api) == [image["id"]]
    assert ("PUT", f"/{images.BUCKET}/{image['id']}") in api.objectstore.requests
    before = len(api.objectstore.requests)
    got = api.app.get(f"{IMG}/images/{image['id']}/file", headers=member.headers)
    assert got.body == data and got.headers["Content-MD5"] == shown["checksum"]
    assert api.objectstore.requests[before:] == [("GET", f"/{images.BUCKET}/{image['id']}")]
    assert not (api.settings.default.data_dir and os.path.exists(os.path.join(api.settings.default.data_dir,
                                                                               "images")))
    resp = upload(api, member, image["id"], b"again", status=409)
    assert "is active" in resp.json["message"]


def test_too_large_upload_leaves_the_image_queued(api):
    api.app.app.deps.settings = api.settings.replace(api={"max_image_size": 10})
    member = api.make_member()
    image = create(api, member)
    resp = upload(api, member, image["id"], b"x" * 11, status=413)
    assert "larger than the 10 bytes" in resp.json["message"]
    assert api.app.get(f"{IMG}/images/{image['id']}", headers=member.headers).json["status"] == "queued"
    assert stored(api, image["id"]) is None and object_rows(api) == []


def test_list_filters_and_isolation(api):
    owner, other = api.make_member(), api.make_member()
    first = create(api, owner, name="alpha")
    second = create(api, owner, name="beta")
    listed = api.app.get(f"{IMG}/images?name=alpha", headers=owner.headers).json["images"]
    assert [i["id"] for i in listed] == [first["id"]]
    listed = api.app.get(f"{IMG}/images?id=in:{first['id']},{second['id']}", headers=owner.headers).json["images"]
    assert {i["id"] for i in listed} == {first["id"], second["id"]}
    assert api.app.get(f"{IMG}/images", headers=other.headers).json["images"] == []
    api.app.get(f"{IMG}/images/{first['id']}", headers=other.headers, status=404)
    api.app.delete(f"{IMG}/images/{first['id']}", headers=other.headers, status=404)
    api.app.put(f"{IMG}/images/{first['id']}/file", b"x", headers=other.headers, status=404)
    # Members cannot publish; admins can, and then everyone sees it.
    resp = create(api, owner, name="pub", visibility="private")
    api.app.patch_json(f"{IMG}/images/{resp['id']}", [{"op": "replace", "path": "/visibility", "value": "public"}],
                       headers=owner.headers, status=403)
    api.app.patch_json(f"{IMG}/images/{resp['id']}", [{"op": "replace", "path": "/visibility", "value": "public"}],
                       headers={"X-Auth-Token": api.admin.token})
    assert [i["name"] for i in api.app.get(f"{IMG}/images", headers=other.headers).json["images"]] == ["pub"]


def test_limit_zero_and_blank_filters_answer_an_empty_page(api):
    # schemathesis's coverage phase found this a 500: limit=0 with images present.
    owner = api.make_member()
    create(api, owner, name="alpha")
    page = api.app.get(f"{IMG}/images?name=&id=&status=&limit=0&marker=", headers=owner.headers).json
    assert page["images"] == [] and "next" not in page
    page = api.app.get(f"{IMG}/images?limit=1", headers=owner.headers).json
    assert len(page["images"]) == 1


def test_bad_input_names_the_field(api):
    member = api.make_member()
    resp = api.app.post_json(f"{IMG}/images", {"name": "x", "disk_format": "floppy"}, headers=member.headers,
                             status=400)
    assert "'disk_format'" in resp.json["message"] and "floppy" in resp.json["message"]
    resp = api.app.post_json(f"{IMG}/images", {"name": "x", "size": 5}, headers=member.headers, status=403)
    assert "read-only" in resp.json["message"]


def test_patch_and_delete(api):
    member = api.make_member()
    image = create(api, member)
    patched = api.app.patch_json(f"{IMG}/images/{image['id']}", [
        {"op": "replace", "path": "/name", "value": "renamed"},
        {"op": "add", "path": "/hw_disk_bus", "value": "virtio"},
        {"op": "add", "path": "/protected", "value": True}], headers=member.headers).json
    assert (patched["name"], patched["hw_disk_bus"], patched["protected"]) == ("renamed", "virtio", True)
    api.app.delete(f"{IMG}/images/{image['id']}", headers=member.headers, status=403)
    api.app.patch_json(f"{IMG}/images/{image['id']}", [{"op": "replace", "path": "/protected", "value": False}],
                       headers=member.headers)
    upload(api, member, image["id"], b"data")
    api.app.delete(f"{IMG}/images/{image['id']}", headers=member.headers, status=204)
    api.app.get(f"{IMG}/images/{image['id']}", headers=member.headers, status=404)
    assert stored(api, image["id"]) is None and object_rows(api) == []


def test_the_image_bucket_is_private_to_the_image_service(api):
    member = api.make_member()
    image = create(api, member)
    upload(api, member, image["id"], b"private bytes")
    # Anyone else's request (here: an unsigned one) is refused by the objectstore itself.
    connection = http.client.HTTPConnection("127.0.0.1", api.settings.objectstore.port, timeout=30)
    try:
        connection.request("GET", f"/{images.BUCKET}/{image['id']}")
        answer = connection.getresponse()
        assert answer.status == 403 and b"<Code>AccessDenied</Code>" in answer.read()
    finally:
        connection.close()


def test_unknown_length_uploads_go_multipart_and_stream(api):
    """An upload whose length is not announced is sent in parts of PART_SIZE: the API holds one part,
    never the image; the checksums are the whole image's."""
    image_id = str(uuid.uuid4())
    data = os.urandom(6 * s3client.PART_SIZE + 12345)
    source = io.BytesIO(data)
    tracemalloc.start()
    try:
        facts = image_store.write(api.settings, api.db, image_id, source.read, len(data) + 1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert facts == {"size": len(data), "checksum": hashlib.md5(data).hexdigest(), "os_hash_algo": "sha512",
                     "os_hash_value": hashlib.sha512(data).hexdigest()}
    assert stored(api, image_id) == data
    assert ("POST", f"/{images.BUCKET}/{image_id}") in api.objectstore.requests  # multipart create/complete
    # This process serves the objectstore too; the client holds a part (and a growing copy while it
    # fills). Measured: ~19 MB for 2 parts, ~26 MB for 5 or 8: bounded, and far less than the image.
    assert peak < 4 * s3client.PART_SIZE < len(data) / 1.5, peak


def test_a_known_length_upload_streams_without_holding_the_image(api):
    image_id = str(uuid.uuid4())
    size = 24 * 1024 * 1024
    chunk = os.urandom(1024 * 1024)
    left = [size]

    def read(want: int) -> bytes:
        take = min(want, len(chunk), left[0])
        left[0] -= take
        return chunk[:take]

    tracemalloc.start()
    try:
        facts = image_store.write(api.settings, api.db, image_id, read, size, size)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert facts["size"] == size and peak < 8 * 1024 * 1024, peak
    assert ("PUT", f"/{images.BUCKET}/{image_id}") in api.objectstore.requests


def test_a_short_or_too_large_upload_leaves_no_object(api):
    image_id = str(uuid.uuid4())
    with pytest.raises(Invalid, match="the data ended after 3 of 10 bytes"):
        image_store.write(api.settings, api.db, image_id, io.BytesIO(b"abc").read, 100, 10)
    with pytest.raises(ImageTooLarge):
        image_store.write(api.settings, api.db, image_id, io.BytesIO(b"x" * 20).read, 10, None)
    with pytest.raises(ImageTooLarge):  # refused before a byte is sent
        image_store.write(api.settings, api.db, image_id, io.BytesIO(b"x" * 20).read, 10, 20)
    big = os.urandom(s3client.PART_SIZE + 1)
    with pytest.raises(ImageTooLarge):  # past the limit in the second part of a multipart upload
        image_store.write(api.settings, api.db, image_id, io.BytesIO(big).read, s3client.PART_SIZE, None)
    assert stored(api, image_id) is None and object_rows(api) == []


def test_an_unreachable_objectstore_is_a_clear_502_and_the_image_stays_queued(api):
    member = api.make_member()
    image = create(api, member)
    api.app.app.deps.settings = api.settings.replace(objectstore={"port": 1})
    resp = upload(api, member, image["id"], b"data", status=502)
    assert "Objectstore http://127.0.0.1:1 answered PUT /fabric-images" in resp.json["message"], resp.json
    assert api.app.get(f"{IMG}/images/{image['id']}", headers=member.headers).json["status"] == "queued"


def _image_rows(api) -> int:
    with api.db.begin() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(Image))


def test_references_are_image_ids_of_images_the_owner_may_use(api):
    owner, other = api.make_member(), api.make_member()
    kernel = create(api, owner, name="vmlinuz", disk_format="aki", container_format="aki")
    ramdisk = create(api, owner, name="initrd", disk_format="ari", container_format="ari")
    others_private = create(api, other, name="theirs", disk_format="aki", container_format="aki",
                            visibility="private")
    others_community = create(api, other, name="community", disk_format="aki", container_format="aki",
                              visibility="community")
    others_public = create(api, other, name="public", disk_format="aki", container_format="aki")
    api.app.patch_json(f"{IMG}/images/{others_public['id']}", [{"op": "replace", "path": "/visibility",
                                                                  "value": "public"}],
                       headers={"X-Auth-Token": api.admin.token})
    unknown = str(uuid.uuid4())

    # Good references are stored in their canonical (lower-case) form.
    ami = create(api, owner, name="ami", disk_format="ami", container_format="ami",
                 kernel_id=kernel["id"].upper(), ramdisk_id=ramdisk["id"])
    assert (ami["kernel_id"], ami["ramdisk_id"]) == (kernel["id"], ramdisk["id"])
    for allowed in (others_public, others_community):
        assert create(api, owner, kernel_id=allowed["id"])["kernel_id"] == allowed["id"]

    before = _image_rows(api)
    refused = {
        "../../etc/passwd": "is not an image id", "/etc/passwd": "is not an image id",
        f"{kernel['id']}/../x": "is not an image id", "": "is not an image id",
        unknown: "names no image that project", others_private["id"]: "names no image that project",
    }
    for value, why in refused.items():
        resp = api.app.post_json(f"{IMG}/images", {"name": "bad", "kernel_id": value}, headers=owner.headers,
                                 status=400)
        assert f"kernel_id {value!r}" in resp.json["message"] and why in resp.json["message"], resp.json
    # Unknown and invisible read the same: the answer does not tell that the private image exists.
    resp = api.app.post_json(f"{IMG}/images", {"name": "bad", "ramdisk_id": kernel["id"]}, headers=owner.headers,
                             status=400)
    assert "disk_format 'aki'; accepted: ari" in resp.json["message"]
    resp = api.app.post_json(f"{IMG}/images", {"name": "bad", "id": "../escape"}, headers=owner.headers,
                             status=400)
    assert "id '../escape' is not an image id" in resp.json["message"]
    assert _image_rows(api) == before  # nothing written by a refused create

    # PATCH (what `openstack image set --property` sends): refused, and the image is unchanged.
    for value in ("../../etc/passwd", unknown, others_private["id"]):
        resp = api.app.patch_json(f"{IMG}/images/{ami['id']}", [
            {"op": "replace", "path": "/name", "value": "renamed"},
            {"op": "replace", "path": "/kernel_id", "value": value}], headers=owner.headers, status=400)
        assert f"kernel_id {value!r}" in resp.json["message"]
    shown = api.app.get(f"{IMG}/images/{ami['id']}", headers=owner.headers).json
    assert (shown["name"], shown["kernel_id"]) == ("ami", kernel["id"])
    patched = api.app.patch_json(f"{IMG}/images/{ami['id']}", [
        {"op": "replace", "path": "/kernel_id", "value": others_public["id"]},
        {"op": "remove", "path": "/ramdisk_id"}], headers=owner.headers).json
    assert patched["kernel_id"] == others_public["id"] and "ramdisk_id" not in patched


def test_patch_in_the_openstack_images_v2_1_form(api):
    # python-glanceclient and tempest send {"replace": "/name", "value": ...}, not RFC 6902's op/path.
    member = api.make_member()
    image = create(api, member)
    patched = api.app.patch(f"{IMG}/images/{image['id']}", json.dumps([
        {"replace": "/name", "value": "renamed"}, {"add": "/hw_disk_bus", "value": "virtio"}]),
        headers=dict(member.headers, **{"Content-Type": "application/openstack-images-v2.1-json-patch"})).json
    assert (patched["name"], patched["hw_disk_bus"]) == ("renamed", "virtio")
    refused = api.app.patch_json(f"{IMG}/images/{image['id']}", [{"move": "/name", "value": "x"}],
                                 headers=member.headers, status=400)
    assert "move" in refused.json["message"]


def test_size_filters(api):
    member = api.make_member()
    small, large = create(api, member, name="small"), create(api, member, name="large")
    upload(api, member, small["id"], b"x" * 10)
    upload(api, member, large["id"], b"x" * 100)

    def names(query):
        return sorted(i["name"] for i in api.app.get(f"{IMG}/images?{query}", headers=member.headers).json["images"])
    assert names("size=10") == ["small"]
    assert names("size_min=50") == ["large"] and names("size_max=50") == ["small"]
    assert names("size_min=10&size_max=100") == ["large", "small"] and names("size_min=") == ["large", "small"]
    refused = api.app.get(f"{IMG}/images?size_max=big", headers=member.headers, status=400)
    assert "size_max='big'" in refused.json["message"]


def test_the_empty_image_id_is_not_found(api):
    member = api.make_member()
    create(api, member)
    api.app.get(f"{IMG}/images/", headers=member.headers, status=404)
    api.app.delete(f"{IMG}/images/", headers=member.headers, status=404)
    assert len(api.app.get(f"{IMG}/images", headers=member.headers).json["images"]) == 1


def test_tags_added_and_removed_one_by_one(api):
    member, other = api.make_member(), api.make_member()
    image = create(api, member, tags=["a"])
    api.app.put(f"{IMG}/images/{image['id']}/tags/b", headers=member.headers, status=204)
    api.app.put(f"{IMG}/images/{image['id']}/tags/b", headers=member.headers, status=204)  # again: no change
    assert api.app.get(f"{IMG}/images/{image['id']}", headers=member.headers).json["tags"] == ["a", "b"]
    api.app.delete(f"{IMG}/images/{image['id']}/tags/a", headers=member.headers, status=204)
    assert api.app.get(f"{IMG}/images/{image['id']}", headers=member.headers).json["tags"] == ["b"]
    missing = api.app.delete(f"{IMG}/images/{image['id']}/tags/a", headers=member.headers, status=404)
    assert "a of image" in missing.json["message"]
    api.app.put(f"{IMG}/images/{image['id']}/tags/c", headers=other.headers, status=404)


# --- the upload's lease (fabric.api.image_uploads) -------------------------------------------------

def _lease(api, image_id: str):
    with api.db.begin() as session:
        row = session.get(Image, image_id)
        return row.status, row.upload_expires_at


def _taken(api, image_id: str, lease: float = 60) -> image_uploads.Upload:
    """An upload holding ``image_id`` (begun; nothing streamed)."""
    held = image_uploads.Upload(api.db, image_id, lease=lease)
    with api.db.begin() as session:
        assert held.begin(session)
    return held


def _lapse(api, image_id: str) -> None:
    """What the clock does to the lease of an upload whose process died."""
    with api.db.begin() as session:
        session.get(Image, image_id).upload_expires_at = utcnow() - datetime.timedelta(seconds=1)


def test_an_image_held_by_a_live_upload_is_refused_and_one_whose_uploader_died_is_taken_over(api):
    member = api.make_member()
    image = create(api, member)
    _taken(api, image["id"])  # by a process that then died mid-upload
    assert _lease(api, image["id"])[0] == "saving"
    refused = upload(api, member, image["id"], b"new", status=409)
    assert "is saving; data can only be uploaded to a queued image (or to one whose upload stopped" in \
        refused.json["message"]
    _lapse(api, image["id"])
    data = os.urandom(5000)
    upload(api, member, image["id"], data)
    shown = api.app.get(f"{IMG}/images/{image['id']}", headers=member.headers).json
    assert shown["status"] == "active" and shown["size"] == len(data)
    assert shown["checksum"] == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert stored(api, image["id"]) == data and _lease(api, image["id"]) == ("active", None)


def test_the_reaper_puts_back_to_queued_only_uploads_whose_lease_lapsed(api):
    member = api.make_member()
    stalled, live, snapshot = (create(api, member)["id"] for _ in range(3))
    for image_id in (stalled, live):
        _taken(api, image_id)
    with api.db.begin() as session:  # a compute snapshot or volume upload: saving, no lease
        session.get(Image, snapshot).status = "saving"
    _lapse(api, stalled)
    assert image_uploads.reap(api.db) == [stalled]
    assert _lease(api, stalled) == ("queued", None)
    assert _lease(api, live)[0] == "saving" and _lease(api, snapshot) == ("saving", None)
    assert image_uploads.reap(api.db) == []
    upload(api, member, stalled, b"again")  # its owner uploads again
    assert _lease(api, stalled) == ("active", None)


def test_an_upload_renews_its_lease_and_stops_once_taken_over(api):
    member = api.make_member()
    image_id = create(api, member)["id"]
    first = _taken(api, image_id)
    held = first.expires
    first.renew()  # what its green thread does every third of the lease
    assert first.expires > held and _lease(api, image_id) == ("saving", first.expires)

    _lapse(api, image_id)  # the first upload's process stopped past its lease; a second takes over
    second = _taken(api, image_id)
    read = first.reading(io.BytesIO(b"x" * 100).read)
    assert read(10) == b"x" * 10  # not known yet
    with pytest.raises(Conflict, match="another upload took it over"):
        first.renew()
    with pytest.raises(Conflict, match="another upload took it over"):
        first.finish({"size": 30})
    first.abandon()  # changes nothing: the image is the second upload's
    assert _lease(api, image_id) == ("saving", second.expires)
    assert second.finish({"size": 3, "checksum": "c"}) and _lease(api, image_id) == ("active", None)


def test_the_renewing_thread_stops_the_upload_once_its_image_is_deleted(api):
    member = api.make_member()
    image_id = create(api, member)["id"]
    upload_ = _taken(api, image_id, lease=0.05)
    read = upload_.reading(io.BytesIO(b"abc").read)
    with upload_.held():
        api.app.delete(f"{IMG}/images/{image_id}", headers=member.headers, status=204)
        wait_for(lambda: upload_.lost is not None, timeout=10, what="the renewal to find the image gone")
        with pytest.raises(Conflict, match="was deleted during the upload"):
            read(3)
    assert upload_.finish({"size": 3}) is False  # the caller then removes what it stored


class _Stalling(io.RawIOBase):
    """A request body whose client stops sending after ``sent`` bytes (the socket times out)."""

    def __init__(self, sent: bytes) -> None:
        self.sent = sent

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self.sent:
            raise TimeoutError("timed out")
        count = min(len(buffer), len(self.sent))
        buffer[:count], self.sent = self.sent[:count], self.sent[count:]
        return count


def test_a_request_body_that_stops_arriving_is_a_408_and_the_image_stays_queued(api):
    member = api.make_member()
    image_id = create(api, member)["id"]
    request = webtest.TestRequest.blank(f"{IMG}/images/{image_id}/file", method="PUT", headers=dict(
        member.headers, **{"Content-Type": "application/octet-stream", "Content-Length": "1000"}))
    request.environ["wsgi.input"] = io.BufferedReader(_Stalling(b"x" * 300))
    answer = api.app.do_request(request, status=408)
    assert re.search(r"The request body stopped arriving after \d+ bytes: timed out", answer.json["message"])
    assert _lease(api, image_id) == ("queued", None) and stored(api, image_id) is None
