"""The compute worker's image store (LocalImageStore) never lets a build open a file outside its
image directory, whatever the database says.

The manager here is the real one with the real LocalImageStore built from settings; its
driver reads every image file it is given when it spawns, as QEMU does, and a Python audit
hook records every file the process opens during the build. Hostile rows are written
straight into the database, past the API's checks.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from pathlib import Path

import pytest

from fabric.compute import states
from fabric.compute.collaborators import LocalImageStore
from fabric.compute.faults import latest_fault
from fabric.compute.manager import ComputeManager
from fabric.config import Settings
from fabric.context import RequestContext
from fabric.db.models import Image
from fabric.exception import Invalid, NotFound
from fabric.virt.fake import FakeDriver
from tests.fixtures.instances import PROJECT  # add_instance's project
from tests.unit.compute.conftest import HOST, FakeAddresses, FakeClaims, FakeNetwork, FakeRescheduler, add_instance

#: Paths opened while a recorder is active (audit hooks cannot be removed: this one is gated).
_opened: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _opened is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
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
def host(sqlite_db, tmp_path):
    """A compute manager on ReadingDriver, its image store in ``data_dir/images``, and a secret file
    of the host next to the store."""
    settings = Settings().replace(default={"host": HOST, "data_dir": str(tmp_path / "data")})
    store = LocalImageStore.from_settings(settings, sqlite_db)
    driver = ReadingDriver(vcpus=8, memory_mb=4096, disk_gb=100, hostname=HOST)
    manager = ComputeManager(settings, HOST, sqlite_db, driver=driver, addresses=FakeAddresses(),
                             network=FakeNetwork(), rescheduler=FakeRescheduler(), claims=FakeClaims(),
                             images=store)
    driver.init_host(HOST)
    secret = tmp_path / "data" / "secret"
    secret.write_bytes(b"root:x:0:0 host secret")
    return manager, store.store.root, secret


def _image(db, root: Path | None, *, owner=PROJECT, visibility="private", disk_format="raw",
           image_id: str | None = None, **properties) -> str:
    """An image row written straight into the database; its file too when ``root`` is given."""
    image_id = image_id or str(uuid.uuid4())
    with db.begin() as session:
        session.add(Image(id=image_id, name="i", owner=owner, visibility=visibility, status="active",
                          disk_format=disk_format, properties=properties))
    if root is not None:
        (root / image_id).write_bytes(b"image bytes of " + image_id.encode())
    return image_id


def _build(manager, image_id: str) -> tuple[str, list[str]]:
    instance_id = add_instance(manager.db, image_id=image_id)
    with recording_opens() as opened:
        manager.build_instance(RequestContext.admin(), instance_id)
    return instance_id, list(opened)


def _outside(opened: list[str], root: Path) -> list[str]:
    """Opened paths outside the store, leaving out Python's own module files (lazy imports)."""
    real_root = os.path.realpath(root)
    return [p for p in opened if os.path.dirname(p) != real_root and not p.endswith((".py", ".pyc", ".so"))]


def test_a_good_build_opens_its_kernel_and_ramdisk_from_the_store(host):
    manager, root, _ = host
    kernel = _image(manager.db, root, disk_format="aki")
    ramdisk = _image(manager.db, root, disk_format="ari")
    ami = _image(manager.db, None, disk_format="ami", kernel_id=kernel, ramdisk_id=ramdisk,
                 os_command_line="console=ttyS0")
    instance_id, opened = _build(manager, ami)
    assert states.get_instance(manager.db, instance_id)["vm_state"] == "active"
    # The audit hook sees what the driver opens: the test below can trust its silence.
    assert {str(root / kernel), str(root / ramdisk)} <= set(opened)
    assert _outside(opened, root) == []


def test_the_compute_worker_never_opens_a_path_outside_its_image_store(host, tmp_path):
    manager, root, secret = host
    db = manager.db
    kernel = _image(db, root, disk_format="aki")
    # Another project's private kernel, present in this host's store.
    theirs = _image(db, root, owner="another-project", disk_format="aki")
    # A kernel row that is in order, whose file in the store is a symlink to the host's secret.
    linked = _image(db, None, disk_format="aki")
    (root / linked).symlink_to(secret)
    linked_disk = _image(db, None, disk_format="raw")
    (root / linked_disk).symlink_to(secret)
    relative = os.path.relpath(secret, root)  # "../secret"
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
        image = _image(db, None, disk_format="ami", **properties)
        instance_id, opened = _build(manager, image)
        row = states.get_instance(db, instance_id)
        assert (row["vm_state"], row["task_state"]) == ("error", None), case
        fault = latest_fault(db, instance_id)
        assert fault["code"] == 400 and bad_value in fault["message"], (case, fault["message"])
        assert manager.driver.list_instances() == [], case
        assert _outside(opened, root) == [], case
        assert str(root / theirs) not in opened and str(secret) not in opened, case
    # A disk image whose file is a symlink out.
    instance_id, opened = _build(manager, linked_disk)
    assert "outside the image store" in latest_fault(db, instance_id)["message"]
    assert states.get_instance(db, instance_id)["vm_state"] == "error"
    assert str(secret) not in opened and _outside(opened, root) == []


def test_a_hostile_boot_image_id_on_the_instance_row_is_no_image(host):
    manager, root, secret = host
    for image_id in (os.path.relpath(secret, root), str(secret)):
        instance_id, opened = _build(manager, image_id)
        assert f"Image {image_id} could not be found" in latest_fault(manager.db, instance_id)["message"]
        assert manager.driver.list_instances() == []
        assert str(secret) not in opened and _outside(opened, root) == []


def test_boot_image_resolves_disks_and_kernels(sqlite_db, tmp_path):
    store = LocalImageStore(tmp_path, sqlite_db)
    disk = _image(sqlite_db, tmp_path, disk_format="qcow2")
    kernel = _image(sqlite_db, tmp_path, disk_format="aki")
    ramdisk = _image(sqlite_db, tmp_path, disk_format="ari")
    direct = _image(sqlite_db, None, disk_format="ami", kernel_id=kernel, ramdisk_id=ramdisk,
                    os_command_line="console=ttyS0")
    iso = _image(sqlite_db, tmp_path, disk_format="iso")
    missing_file = _image(sqlite_db, None, disk_format="raw")
    ctx = RequestContext()

    def boot(image_id):
        return store.boot_image(ctx, {"id": "i", "project_id": PROJECT, "image_id": image_id})

    booted = boot(disk)
    assert (booted.disk_path, booted.disk_format, booted.kernel) == (str(tmp_path / disk), "qcow2", None)
    booted = boot(direct)
    assert (booted.kernel, booted.initrd, booted.cmdline) == (str(tmp_path / kernel), str(tmp_path / ramdisk),
                                                              "console=ttyS0")
    with pytest.raises(Invalid, match="'iso'"):
        boot(iso)
    with pytest.raises(NotFound, match=f"Image {direct[:8]}"):
        store.boot_image(ctx, {"id": "i", "project_id": "another-project", "image_id": direct})
    with pytest.raises(NotFound, match=f"Image file of {missing_file}"):
        boot(missing_file)
    with pytest.raises(Invalid, match="has no image_id"):
        store.boot_image(ctx, {"id": "i", "project_id": PROJECT, "image_id": None})
