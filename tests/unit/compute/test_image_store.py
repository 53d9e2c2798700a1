"""The compute worker's images (ObjectstoreImages): downloaded over HTTP from the objectstore,
checked against the Image API's record, cached in the host's own data directory, and never a
file outside that cache opened, whatever the database says.

The manager here is the real one with the real ObjectstoreImages built from settings; the
objectstore is the real application served from a thread (its blobs in a directory of its
own, never the compute host's), and image bytes are uploaded by the Image API's own writer.
The driver reads every image file it is given when it spawns, as QEMU does, and a Python
audit hook records every file the process opens during the build. Hostile rows are written
straight into the database, past the API's checks.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import sys
import threading
import uuid
from pathlib import Path

import pytest

from fabric import images
from fabric.api import image_store
from fabric.compute import states
from fabric.compute.collaborators import ObjectstoreImages
from fabric.compute.faults import latest_fault
from fabric.compute.manager import ComputeManager
from fabric.config import Settings
from fabric.context import RequestContext
from fabric.db.models import Image
from fabric.exception import Invalid, NotFound, ObjectstoreError
from fabric.virt.fake import FakeDriver
from tests.fixtures.image_objectstore import serving_objectstore
from tests.fixtures.instances import PROJECT  # add_instance's project
from tests.unit.compute.conftest import HOST, FakeAddresses, FakeClaims, FakeNetwork, FakeRescheduler, add_instance

#: Paths opened while a recorder is active (audit hooks cannot be removed: this one is gated).
_opened: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    # The objectstore's threads open its blobs: only the compute manager's own (main) thread counts.
    if _opened is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)) \
            and threading.current_thread() is threading.main_thread():
        _opened.append(os.path.realpath(os.fsdecode(args[0])))


sys.addaudithook(_audit)


@contextlib.contextmanager
def recording_opens():
    global _opened
    _opened = []
    try:
        yield _opened
    finally:
        _opened = None


class ReadingDriver(FakeDriver):
    """The fake driver, reading the head of each image file of a guest it spawns (as QEMU opens them)."""

    def spawn(self, spec):
        for path in (spec.image.kernel, spec.image.initrd, spec.image.disk_path):
            if path:
                with open(path, "rb") as handle:
                    handle.read(16)
        super().spawn(spec)


@pytest.fixture
def served(sqlite_db, tmp_path):
    """An objectstore over the test database, its blobs in ``tmp_path/objectstore`` (the API's side)."""
    settings = Settings().replace(default={"host": "control", "data_dir": str(tmp_path / "control")})
    with serving_objectstore(settings, sqlite_db) as served:
        yield served


@pytest.fixture
def host(sqlite_db, tmp_path, served):
    """A compute manager on ReadingDriver with its own data directory (its image cache inside), the
    objectstore it downloads from, and a secret file of the host next to the cache."""
    settings = Settings().replace(default={"host": HOST, "data_dir": str(tmp_path / "compute")},
                                  objectstore={"port": served.settings.objectstore.port})
    images_source = ObjectstoreImages.from_settings(settings, sqlite_db)
    driver = ReadingDriver(vcpus=8, memory_mb=4096, disk_gb=100, hostname=HOST)
    manager = ComputeManager(settings, HOST, sqlite_db, driver=driver, addresses=FakeAddresses(),
                             network=FakeNetwork(), rescheduler=FakeRescheduler(), claims=FakeClaims(),
                             images=images_source)
    driver.init_host(HOST)
    images_source.cache.root.mkdir(parents=True)
    secret = tmp_path / "compute" / "secret"
    secret.write_bytes(b"root:x:0:0 host secret")
    return manager, images_source.cache, secret


def _image(db, served, *, owner=PROJECT, visibility="private", disk_format="raw", image_id: str | None = None,
           data: bytes | None = None, **properties) -> str:
    """An image row written straight into the database; its bytes uploaded by the Image API's writer
    when ``data`` is given (the row then records their size and checksums)."""
    image_id = image_id or str(uuid.uuid4())
    facts = {}
    if data is not None:
        facts = image_store.write(served.settings, db, image_id, io.BytesIO(data).read, len(data), len(data))
    with db.begin() as session:
        session.add(Image(id=image_id, name="i", owner=owner, visibility=visibility, status="active",
                          disk_format=disk_format, properties=properties, **facts))
    return image_id


def _record(db, image_id: str) -> images.ImageRecord:
    with db.begin() as session:
        return images.ImageRecord.of(session.get(Image, image_id))


def _build(manager, image_id: str) -> tuple[str, list[str]]:
    instance_id = add_instance(manager.db, image_id=image_id)
    with recording_opens() as opened:
        manager.build_instance(RequestContext.admin(), instance_id)
    return instance_id, list(opened)


def _outside(opened: list[str], root: Path) -> list[str]:
    """Opened paths outside the cache, leaving out Python's own module files (lazy imports)."""
    real_root = os.path.realpath(root)
    return [p for p in opened if os.path.dirname(p) != real_root and not p.endswith((".py", ".pyc", ".so"))]


def _gets(served) -> list[str]:
    return [path.rsplit("/", 1)[-1] for method, path in served.requests if method == "GET"]


def test_a_build_downloads_verifies_and_caches_its_kernel_and_ramdisk(host, served, tmp_path):
    manager, cache, _ = host
    kernel_bytes, ramdisk_bytes = os.urandom(3 * images.CHUNK + 5), os.urandom(1000)
    kernel = _image(manager.db, served, disk_format="aki", data=kernel_bytes)
    ramdisk = _image(manager.db, served, disk_format="ari", data=ramdisk_bytes)
    ami = _image(manager.db, served, disk_format="ami", kernel_id=kernel, ramdisk_id=ramdisk,
                 os_command_line="console=ttyS0")
    instance_id, opened = _build(manager, ami)
    assert states.get_instance(manager.db, instance_id)["vm_state"] == "active"
    kernel_file, ramdisk_file = cache.path(_record(manager.db, kernel)), cache.path(_record(manager.db, ramdisk))
    assert kernel_file.read_bytes() == kernel_bytes and ramdisk_file.read_bytes() == ramdisk_bytes
    assert sorted(_gets(served)) == sorted([kernel, ramdisk])  # fetched over HTTP
    # The audit hook sees what the driver opens: the tests below can trust its silence.
    assert {str(kernel_file), str(ramdisk_file)} <= set(opened)
    assert _outside(opened, cache.root) == []
    # Nothing of the objectstore's side was opened: the host shares no directory with it.
    assert not [p for p in opened if p.startswith(str(tmp_path / "control"))]
    # A second build is served from the cache.
    instance_id, _ = _build(manager, ami)
    assert states.get_instance(manager.db, instance_id)["vm_state"] == "active"
    assert sorted(_gets(served)) == sorted([kernel, ramdisk])


def test_a_corrupt_object_fails_the_build_with_a_clear_fault_and_is_not_cached(host, served):
    manager, cache, _ = host
    data = os.urandom(50_000)
    disk = _image(manager.db, served, data=data)
    # The object is replaced behind the Image API's back by bytes of the same length.
    image_store.write(served.settings, manager.db, disk, io.BytesIO(data[::-1]).read, len(data), len(data))
    instance_id, _ = _build(manager, disk)
    fault = latest_fault(manager.db, instance_id)
    assert f"image {disk}: checksum mismatch: MD5 of the download is " \
           f"{hashlib.md5(data[::-1]).hexdigest()}, expected {hashlib.md5(data).hexdigest()}" in fault["message"]
    assert fault["code"] == 502 and manager.driver.list_instances() == []
    assert manager.rescheduler.requests, "a corrupt download on one host may succeed on another"
    assert list(cache.root.iterdir()) == []  # neither the file nor a temporary copy


def test_a_truncated_download_fails_the_build_and_is_not_cached(host, served):
    manager, cache, _ = host
    data = os.urandom(300_000)
    disk = _image(manager.db, served, data=data)

    def cut_short(path, body):
        sent = 0
        for piece in body:
            if sent + len(piece) > 100_000:
                yield piece[:100_000 - sent]
                return  # the connection then ends with fewer bytes than Content-Length
            sent += len(piece)
            yield piece

    served.tamper = cut_short
    instance_id, _ = _build(manager, disk)
    served.tamper = None
    assert f"image {disk}: downloaded 100000 bytes, expected 300000" in latest_fault(manager.db, instance_id)["message"]
    assert list(cache.root.iterdir()) == []
    # The next build downloads again, and this time whole.
    instance_id, _ = _build(manager, disk)
    assert states.get_instance(manager.db, instance_id)["vm_state"] == "active"
    assert cache.existing_file(_record(manager.db, disk)).read_bytes() == data


def test_the_compute_worker_never_opens_a_path_outside_its_image_cache(host, served):
    manager, cache, secret = host
    db = manager.db
    kernel = _image(db, served, disk_format="aki", data=b"kernel")
    # Another project's private kernel, its bytes in the objectstore.
    theirs = _image(db, served, owner="another-project", disk_format="aki", data=b"their kernel")
    # A kernel in order, whose cached file is a symlink to the host's secret.
    linked = _image(db, served, disk_format="aki", data=b"root:x:0:0 host secret")
    cache.path(_record(db, linked)).symlink_to(secret)
    linked_disk = _image(db, served, disk_format="raw", data=b"root:x:0:0 host secret")
    cache.path(_record(db, linked_disk)).symlink_to(secret)
    relative = os.path.relpath(secret, cache.root)  # "../secret"
    hostile = {
        "kernel_id relative path": ({"kernel_id": relative}, relative),
        "kernel_id absolute path": ({"kernel_id": str(secret)}, str(secret)),
        "kernel_id climbing out": ({"kernel_id": "../../../../../../etc/passwd"}, "../../../../../../etc/passwd"),
        "kernel_id another project's": ({"kernel_id": theirs}, theirs),
        "kernel_id symlinked out": ({"kernel_id": linked}, linked),
        "ramdisk_id relative path": ({"kernel_id": kernel, "ramdisk_id": relative}, relative),
        "ramdisk_id absolute path": ({"kernel_id": kernel, "ramdisk_id": str(secret)}, str(secret)),
    }
    for case, (properties, bad_value) in hostile.items():
        image = _image(db, served, disk_format="ami", **properties)
        instance_id, opened = _build(manager, image)
        row = states.get_instance(db, instance_id)
        assert (row["vm_state"], row["task_state"]) == ("error", None), case
        fault = latest_fault(db, instance_id)
        assert fault["code"] == 400 and bad_value in fault["message"], (case, fault["message"])
        assert manager.driver.list_instances() == [], case
        assert _outside(opened, cache.root) == [], case
        assert str(secret) not in opened and theirs not in _gets(served), case
    # A disk image whose cached file is a symlink out.
    instance_id, opened = _build(manager, linked_disk)
    assert "outside the image cache" in latest_fault(db, instance_id)["message"]
    assert states.get_instance(db, instance_id)["vm_state"] == "error"
    assert str(secret) not in opened and _outside(opened, cache.root) == []


def test_a_hostile_boot_image_id_on_the_instance_row_is_no_image(host):
    manager, cache, secret = host
    for image_id in (os.path.relpath(secret, cache.root), str(secret)):
        instance_id, opened = _build(manager, image_id)
        assert f"Image {image_id} could not be found" in latest_fault(manager.db, instance_id)["message"]
        assert manager.driver.list_instances() == []
        assert str(secret) not in opened and _outside(opened, cache.root) == []


def test_boot_image_resolves_disks_and_kernels(sqlite_db, served, tmp_path):
    settings = Settings().replace(default={"data_dir": str(tmp_path / "compute")},
                                  objectstore={"port": served.settings.objectstore.port})
    source = ObjectstoreImages.from_settings(settings, sqlite_db)
    disk = _image(sqlite_db, served, disk_format="qcow2", data=b"qcow2")
    kernel = _image(sqlite_db, served, disk_format="aki", data=b"kernel")
    ramdisk = _image(sqlite_db, served, disk_format="ari", data=b"ramdisk")
    direct = _image(sqlite_db, served, disk_format="ami", kernel_id=kernel, ramdisk_id=ramdisk,
                    os_command_line="console=ttyS0")
    iso = _image(sqlite_db, served, disk_format="iso", data=b"iso")
    unrecorded = _image(sqlite_db, served, disk_format="raw")
    ctx = RequestContext()

    def boot(image_id):
        return source.boot_image(ctx, {"id": "i", "project_id": PROJECT, "image_id": image_id})

    def cached(image_id):
        return str(source.cache.path(_record(sqlite_db, image_id)))

    booted = boot(disk)
    assert (booted.disk_path, booted.disk_format, booted.kernel) == (cached(disk), "qcow2", None)
    booted = boot(direct)
    assert (booted.kernel, booted.initrd, booted.cmdline) == (cached(kernel), cached(ramdisk), "console=ttyS0")
    with pytest.raises(Invalid, match="'iso'"):
        boot(iso)
    with pytest.raises(NotFound, match=f"Image {direct[:8]}"):
        source.boot_image(ctx, {"id": "i", "project_id": "another-project", "image_id": direct})
    with pytest.raises(Invalid, match=f"image {unrecorded} has no recorded size, MD5 and SHA-512"):
        boot(unrecorded)
    with pytest.raises(Invalid, match="has no image_id"):
        source.boot_image(ctx, {"id": "i", "project_id": PROJECT, "image_id": None})
    # An image whose object is gone: the objectstore's answer, named.
    image_store.remove(served.settings, sqlite_db, disk)
    source.cache.path(_record(sqlite_db, disk)).unlink()
    with pytest.raises(ObjectstoreError, match="404 NoSuchKey"):
        boot(disk)


def test_a_disk_image_naming_a_kernel_boots_that_kernel_on_its_disk(host, served):
    """A snapshot of a kernel-booted server: its disk (what the guest wrote) comes with the kernel."""
    manager, cache, _ = host
    kernel = _image(manager.db, served, disk_format="aki", data=os.urandom(1000))
    ramdisk = _image(manager.db, served, disk_format="ari", data=os.urandom(500))
    snapshot = _image(manager.db, served, disk_format="qcow2", data=os.urandom(2000), kernel_id=kernel,
                      ramdisk_id=ramdisk, os_command_line="console=ttyS0")
    boot = manager.images.boot_image(RequestContext.admin(), {"id": "i", "image_id": snapshot, "project_id": PROJECT})
    assert boot.kernel == str(cache.path(_record(manager.db, kernel)))
    assert boot.initrd == str(cache.path(_record(manager.db, ramdisk)))
    assert (boot.disk_path, boot.disk_format) == (str(cache.path(_record(manager.db, snapshot))), "qcow2")
    assert boot.cmdline == "console=ttyS0"
    ami = _image(manager.db, served, disk_format="ami", kernel_id=kernel)
    assert manager.images.boot_image(RequestContext.admin(), {"id": "j", "image_id": ami,
                                                               "project_id": PROJECT}).disk_path is None
