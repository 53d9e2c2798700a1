"""fabric.images: the image id rule, who may use an image, boot resolution and the store's path proof."""

from __future__ import annotations

import os
import uuid

import pytest

from fabric import images
from fabric.db.models import Image
from fabric.exception import Invalid, NotFound

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


def test_the_store_turns_only_image_ids_into_paths(tmp_path):
    store = images.ImageStore(tmp_path)
    ident = str(uuid.uuid4())
    assert store.path(ident.upper()) == tmp_path / ident
    for value in HOSTILE_IDS:
        with pytest.raises(Invalid, match="is not an image id"):
            store.path(value)


def test_existing_file_is_a_regular_file_directly_in_the_store(tmp_path):
    root, outside = tmp_path / "images", tmp_path / "secret"
    root.mkdir()
    outside.write_bytes(b"host secret")
    store = images.ImageStore(root)
    good, out_link, in_link, folder, missing, dangling = (str(uuid.uuid4()) for _ in range(6))
    (root / good).write_bytes(b"image")
    (root / out_link).symlink_to(outside)
    (root / in_link).symlink_to(root / good)  # even another image: one file per id, never a link
    (root / folder).mkdir()
    (root / dangling).symlink_to(tmp_path / "nowhere")
    assert store.existing_file(good) == root / good
    for ident in (out_link, in_link, dangling):
        with pytest.raises(Invalid, match=f"image {ident}.s file leads outside the image store"):
            store.existing_file(ident)
    with pytest.raises(Invalid, match="is not a regular file"):
        store.existing_file(folder)
    with pytest.raises(NotFound, match=missing):
        store.existing_file(missing)


def test_a_store_directory_reached_through_a_symlink_still_works(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    ident = str(uuid.uuid4())
    (tmp_path / "real" / ident).write_bytes(b"image")
    path = images.ImageStore(tmp_path / "link").existing_file(ident)
    assert path == tmp_path / "real" / ident and os.path.realpath(path) == str(path)
