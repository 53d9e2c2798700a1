"""fabric.images: the image id rule, who may use an image, boot resolution, and the image cache:
its path proof and the download checks (size, MD5, SHA-512) before anything is cached."""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import io
import os
import re
import uuid

import pytest

from fabric import images
from fabric.db.models import Image
from fabric.exception import ImageDataCorrupt, Invalid, NotFound

MINE, THEIRS = "project-mine", "project-theirs"

HOSTILE_IDS = ["../../etc/passwd", "/etc/passwd", "..", ".", "", "kernel", "a/b",
               "3f0c8e3a-5b1d-4c55-9b9e-2a8f1e6d7c40/..", "3f0c8e3a-5b1d-4c55-9b9e-2a8f1e6d7c40\n",
               " 3f0c8e3a-5b1d-4c55-9b9e-2a8f1e6d7c40", "3f0c8e3a5b1d4c559b9e2a8f1e6d7c40",
               "{3f0c8e3a-5b1d-4c55-9b9e-2a8f1e6d7c40}", "3f0c8e3a-5b1d-4c55-9b9e-2a8f1e6d7c4\x00"]


@pytest.mark.parametrize("value", HOSTILE_IDS)
def test_an_image_id_is_a_uuid_and_nothing_else(value):
    with pytest.raises(Invalid, match="is not an image id") as err:
        images.parse_image_id(value, "kernel_id")
    assert f"kernel_id {value!r}" in err.value.message


@pytest.mark.parametrize("value", [None, 7, ["x"]])
def test_a_non_text_is_no_image_id(value):
    with pytest.raises(Invalid, match="is not an image id"):
        images.parse_image_id(value)


def test_an_image_id_is_canonical_lower_case():
    ident = str(uuid.uuid4())
    assert images.parse_image_id(ident.upper()) == ident == images.parse_image_id(ident)


def _add(db, *, owner=MINE, visibility="private", status="active", disk_format="raw", **properties) -> str:
    image_id = str(uuid.uuid4())
    with db.begin() as session:
        session.add(Image(id=image_id, name="i", owner=owner, visibility=visibility, status=status,
                          disk_format=disk_format, properties=properties))
    return image_id


def _resolve(db, image_id, project=MINE) -> tuple:
    """(image id, kernel id, ramdisk id, cmdline) of what ``project`` boots from ``image_id``."""
    with db.begin() as session:
        boot = images.resolve_boot(session, project, image_id)
        return (*(i.id if i is not None else None for i in (boot.image, boot.kernel, boot.ramdisk)), boot.cmdline)


def test_a_project_boots_its_own_images_and_public_or_community_ones(sqlite_db):
    own = _add(sqlite_db, disk_format="qcow2")
    assert _resolve(sqlite_db, own) == (own, None, None, "")
    for visibility in ("public", "community"):
        theirs = _add(sqlite_db, owner=THEIRS, visibility=visibility)
        assert _resolve(sqlite_db, theirs)[:3] == (theirs, None, None)


@pytest.mark.parametrize("visibility", ["private", "shared"])
def test_another_projects_private_or_shared_image_is_unknown(sqlite_db, visibility):
    theirs = _add(sqlite_db, owner=THEIRS, visibility=visibility)
    with pytest.raises(NotFound, match=theirs):
        _resolve(sqlite_db, theirs)
    assert _resolve(sqlite_db, theirs, project=THEIRS)[0] == theirs


def test_an_unknown_or_malformed_boot_image_is_not_found(sqlite_db):
    for value in (str(uuid.uuid4()), "../../etc/passwd"):
        with pytest.raises(NotFound, match=f"Image {value}"):
            _resolve(sqlite_db, value)


def test_the_boot_image_must_be_active_and_bootable(sqlite_db):
    queued = _add(sqlite_db, status="queued")
    with pytest.raises(Invalid, match=f"image {queued} is queued; only an active image can boot"):
        _resolve(sqlite_db, queued)
    iso = _add(sqlite_db, disk_format="iso")
    with pytest.raises(Invalid, match="disk_format 'iso': accepted qcow2, raw"):
        _resolve(sqlite_db, iso)


def test_kernel_and_ramdisk_resolve_to_images_the_project_may_use(sqlite_db):
    kernel = _add(sqlite_db, owner=THEIRS, visibility="public", disk_format="aki")
    ramdisk = _add(sqlite_db, disk_format="ari")
    ami = _add(sqlite_db, disk_format="ami", kernel_id=kernel, ramdisk_id=ramdisk.upper(),
               os_command_line="console=ttyS0")
    assert _resolve(sqlite_db, ami) == (ami, kernel, ramdisk, "console=ttyS0")


def _refused(db, image_id, match: str) -> str:
    with pytest.raises(Invalid) as err:
        _resolve(db, image_id)
    assert match in err.value.message, err.value.message
    return err.value.message


@pytest.mark.parametrize("prop", ["kernel_id", "ramdisk_id"])
def test_a_reference_that_is_a_path_unknown_or_private_to_another_project_is_refused(sqlite_db, prop):
    kernel = _add(sqlite_db, disk_format="aki")
    theirs = _add(sqlite_db, owner=THEIRS, disk_format="aki" if prop == "kernel_id" else "ari")
    unknown = str(uuid.uuid4())
    others = {} if prop == "kernel_id" else {"kernel_id": kernel}
    for value in ("../../etc/passwd", "/etc/passwd", "vmlinuz", unknown, theirs):
        ami = _add(sqlite_db, disk_format="ami", **others, **{prop: value})
        message = _refused(sqlite_db, ami, f"image {ami} property {prop} {value!r}")
        assert ("is not an image id" in message) != (value in (unknown, theirs))
    # An unknown image and another project's private one get the same answer.
    unknown_message = _refused(sqlite_db, _add(sqlite_db, disk_format="ami", **others, **{prop: unknown}), prop)
    theirs_message = _refused(sqlite_db, _add(sqlite_db, disk_format="ami", **others, **{prop: theirs}), prop)
    assert unknown_message.split(prop)[1].replace(unknown, "X") == theirs_message.split(prop)[1].replace(theirs, "X")


def test_references_must_be_active_and_of_their_kind(sqlite_db):
    queued_kernel = _add(sqlite_db, disk_format="aki", status="queued")
    _refused(sqlite_db, _add(sqlite_db, kernel_id=queued_kernel),
             f"kernel_id {queued_kernel} is queued; only an active image can boot")
    disk = _add(sqlite_db, disk_format="raw")
    _refused(sqlite_db, _add(sqlite_db, kernel_id=disk), "disk_format 'raw'; accepted: aki")
    kernel = _add(sqlite_db, disk_format="aki")
    _refused(sqlite_db, _add(sqlite_db, kernel_id=kernel, ramdisk_id=kernel), "disk_format 'aki'; accepted: ari")
    ramdisk = _add(sqlite_db, disk_format="ari")
    _refused(sqlite_db, _add(sqlite_db, ramdisk_id=ramdisk), "but no kernel_id")


def test_check_references_canonicalises_and_leaves_other_properties(sqlite_db):
    kernel = _add(sqlite_db, disk_format="aki")
    with sqlite_db.begin() as session:
        checked = images.check_references(session, MINE, "img", {"kernel_id": kernel.upper(), "os_distro": "x"})
        assert checked == {"kernel_id": kernel, "os_distro": "x"}
        with pytest.raises(Invalid, match="image img property ramdisk_id '../x' is not an image id"):
            images.check_references(session, MINE, "img", {"ramdisk_id": "../x"})


def record(data: bytes, ident: str | None = None) -> images.ImageRecord:
    """What the Image API records for ``data``."""
    return images.ImageRecord(ident or str(uuid.uuid4()), len(data), hashlib.md5(data).hexdigest(),
                              hashlib.sha512(data).hexdigest())


def test_the_cache_turns_only_image_ids_and_sha512s_into_paths(tmp_path):
    cache = images.ImageCache(tmp_path)
    good = record(b"image")
    assert cache.path(dataclasses.replace(good, id=good.id.upper())) == tmp_path / f"{good.id}.{good.sha512}"
    for value in HOSTILE_IDS:
        with pytest.raises(Invalid, match="is not an image id"):
            cache.path(dataclasses.replace(good, id=value))
    for sha512 in ("", "../x", good.sha512[:-1], good.sha512 + "/", good.sha512.upper()):
        with pytest.raises(Invalid, match="is not 128 hex digits"):
            cache.path(dataclasses.replace(good, sha512=sha512))


def test_existing_file_is_a_regular_file_of_the_right_size_directly_in_the_cache(tmp_path):
    root, outside = tmp_path / "cache", tmp_path / "secret"
    root.mkdir()
    outside.write_bytes(b"host!")
    cache = images.ImageCache(root)
    good, out_link, in_link, folder, missing, dangling, short = (record(b"image") for _ in range(7))
    cache.path(good).write_bytes(b"image")
    cache.path(out_link).symlink_to(outside)
    cache.path(in_link).symlink_to(cache.path(good))  # even another image: one file per id, never a link
    cache.path(folder).mkdir()
    cache.path(dangling).symlink_to(tmp_path / "nowhere")
    cache.path(short).write_bytes(b"imag")
    assert cache.existing_file(good) == cache.path(good)
    for bad in (out_link, in_link, dangling):
        with pytest.raises(Invalid, match=f"image {bad.id}.s cached file leads outside the image cache"):
            cache.existing_file(bad)
    with pytest.raises(Invalid, match="is not a regular file"):
        cache.existing_file(folder)
    with pytest.raises(Invalid, match="has 4 bytes, the image 5"):
        cache.existing_file(short)
    with pytest.raises(NotFound, match=missing.id):
        cache.existing_file(missing)


def test_a_cache_directory_reached_through_a_symlink_still_works(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    good = record(b"image")
    (tmp_path / "real" / f"{good.id}.{good.sha512}").write_bytes(b"image")
    path = images.ImageCache(tmp_path / "link").existing_file(good)
    assert path == tmp_path / "real" / f"{good.id}.{good.sha512}" and os.path.realpath(path) == str(path)


class Downloads:
    """``download`` for ImageCache.fetch: serves ``bodies[id]`` and counts the calls."""

    def __init__(self, **bodies: bytes) -> None:
        self.bodies = bodies
        self.calls: list[str] = []

    def __call__(self, image_id: str) -> io.BytesIO:
        self.calls.append(image_id)
        return io.BytesIO(self.bodies[image_id])


def test_fetch_downloads_once_verifies_and_renames_into_place(tmp_path):
    data = os.urandom(3 * images.CHUNK + 17)
    good = record(data)
    cache, downloads = images.ImageCache(tmp_path / "cache"), Downloads(**{good.id: data})
    path = cache.fetch(good, downloads)
    assert path.read_bytes() == data and path == cache.path(good)
    assert cache.fetch(good, downloads) == path and downloads.calls == [good.id]  # the second is a hit
    assert sorted(p.name for p in cache.root.iterdir()) == [path.name]  # no temporary file left


@pytest.mark.parametrize(("served", "message"), [
    (b"0123456789"[:6], "downloaded 6 bytes, expected 10"),
    (b"", "downloaded 0 bytes, expected 10"),
    (b"0123456789" + b"extra", "downloaded 11+ bytes, expected 10"),
    (b"0123456780", "checksum mismatch: MD5 of the download is"),
])
def test_a_truncated_long_or_corrupt_download_is_refused_and_not_cached(tmp_path, served, message):
    good = record(b"0123456789")
    cache = images.ImageCache(tmp_path / "cache")
    with pytest.raises(ImageDataCorrupt, match=f"image {good.id}: {re.escape(message)}"):
        cache.fetch(good, Downloads(**{good.id: served}))
    assert list(cache.root.iterdir()) == []  # neither the file nor its temporary copy
    assert cache.fetch(good, Downloads(**{good.id: b"0123456789"})).read_bytes() == b"0123456789"


def test_a_sha512_mismatch_alone_is_refused(tmp_path):
    good = record(b"0123456789")
    cache = images.ImageCache(tmp_path / "cache")
    with pytest.raises(ImageDataCorrupt, match="checksum mismatch: SHA-512 of the download is"):
        cache.fetch(dataclasses.replace(good, sha512="0" * 128), Downloads(**{good.id: b"0123456789"}))
    assert list(cache.root.iterdir()) == []


def test_a_broken_connection_is_a_truncated_download(tmp_path):
    good = record(b"0123456789")

    class Broken(io.BytesIO):
        def read(self, size=-1):
            if self.tell() >= 4:
                raise http.client.IncompleteRead(b"", 6)
            return super().read(min(size, 4))

    cache = images.ImageCache(tmp_path / "cache")
    with pytest.raises(ImageDataCorrupt, match=f"image {good.id}: downloaded 4 bytes, expected 10"):
        cache.fetch(good, lambda _: Broken(b"0123456789"))
    assert list(cache.root.iterdir()) == []


def test_an_image_record_needs_size_and_both_checksums():
    data = b"bytes"
    row = Image(id=str(uuid.uuid4()).upper(), size=len(data), checksum=hashlib.md5(data).hexdigest(),
                os_hash_algo="sha512", os_hash_value=hashlib.sha512(data).hexdigest())
    assert images.ImageRecord.of(row) == record(data, row.id.lower())
    for change in ({"size": None}, {"checksum": None}, {"os_hash_algo": "sha256"}, {"os_hash_value": "x"}):
        bad = Image(**{"id": row.id, "size": row.size, "checksum": row.checksum, "os_hash_algo": "sha512",
                       "os_hash_value": row.os_hash_value} | change)
        with pytest.raises(Invalid, match="has no recorded size, MD5 and SHA-512"):
            images.ImageRecord.of(bad)
