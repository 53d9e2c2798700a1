"""The volume worker against real qemu-img and qemu-nbd files (on loopback), over SQLite.

The manager's handlers are called directly, as the RPC server would after the API's
cast; each test checks the bytes through qemu-img or an NBD read.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from fabric import config
from fabric.db.models import Volume, VolumeAttachment, VolumeExport
from fabric.reconcile import Fixes
from fabric.volume import reaper, states
from fabric.volume.manager import VolumeManager
from tests.unit.volume.conftest import HOST

GIB = 1024**3


def _write(path: Path, data: bytes, offset: int = 0) -> None:
    """Write ``data`` into the qcow2 file's guest view at ``offset`` (qemu-io, as a guest would)."""
    src = path.parent / "payload.bin"
    src.write_bytes(data)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a {offset} {len(data)}", str(path)],
                   check=True, capture_output=True)


def _read_block(source: str, block: int, index: int, tmp_path: Path) -> bytes:
    """Block ``index`` (``block`` bytes each) of the raw disk at ``source`` (an nbd:// URL)."""
    out = tmp_path / f"block-{os.urandom(4).hex()}.raw"
    subprocess.run(["qemu-img", "dd", "-f", "raw", "-O", "raw", f"bs={block}", f"skip={index}", f"count={index + 1}",  # qemu-img dd counts the skipped blocks too
                    f"if={source}", f"of={out}"], check=True, capture_output=True)
    return out.read_bytes()


def _read(source: str, fmt: str, length: int, tmp_path: Path, *extra: str) -> bytes:
    out = tmp_path / f"read-{os.urandom(4).hex()}.raw"
    subprocess.run(["qemu-img", "convert", "-U", *extra, "-f", fmt, "-O", "raw", source, str(out)], check=True,
                   capture_output=True)
    with out.open("rb") as handle:
        return handle.read(length)


@pytest.fixture
def manager(service, tmp_path):
    settings = config.Settings().replace(default={"data_dir": str(tmp_path), "host": HOST},
                                         volume={"export_address": "127.0.0.1", "export_port_min": 20809,
                                                 "export_port_max": 20908})
    worker = VolumeManager(settings, host=HOST, db=service.db)
    yield worker
    for export in worker.exports.records():
        worker.exports.stop(export["volume_id"])


def _make(service, manager, ctx, **kwargs):
    volume = service.create(ctx, **kwargs)
    manager.create_volume(ctx, volume["id"])
    return service.get(ctx, volume["id"])


def test_create_extend_snapshot_and_volume_from_snapshot(service, manager, ctx, tmp_path):
    volume = _make(service, manager, ctx, size=1)
    assert volume["status"] == "available"
    path = manager.driver.path(volume["id"])
    assert manager.driver.size_of(volume["id"]) == GIB
    _write(path, b"x" * 4096)

    service.extend(ctx, volume["id"], 2)
    assert service.get(ctx, volume["id"])["status"] == "extending"
    manager.extend_volume(ctx, volume["id"], 2)
    assert service.get(ctx, volume["id"])["status"] == "available"
    assert manager.driver.size_of(volume["id"]) == 2 * GIB

    snapshot = service.create_snapshot(ctx, volume["id"], name="s1")
    manager.create_snapshot(ctx, snapshot["id"])
    assert service.get_snapshot(ctx, snapshot["id"])["status"] == "available"
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x00 0 4096", str(path)], check=True,
                   capture_output=True)  # the volume changes after the snapshot

    copy = _make(service, manager, ctx, snapshot_id=snapshot["id"])
    assert (copy["status"], copy["size"]) == ("available", 2)
    assert _read(str(manager.driver.path(copy["id"])), "qcow2", 4096, tmp_path) == b"\x5a" * 4096
    assert _read(str(path), "qcow2", 4096, tmp_path) == b"\x00" * 4096

    with pytest.raises(Exception, match="dependent snapshot"):
        service.delete(ctx, volume["id"])
    service.delete_snapshot(ctx, snapshot["id"])
    manager.delete_snapshot(ctx, snapshot["id"])
    assert manager.driver.snapshots(volume["id"]) == set()
    service.delete(ctx, volume["id"])
    manager.delete_volume(ctx, volume["id"])
    assert not path.exists()
    with service.db.begin() as session:
        assert session.get(Volume, volume["id"]).status == "deleted"


def test_export_serves_the_volumes_bytes_over_nbd_and_stops_by_pid(service, manager, ctx, tmp_path):
    volume = _make(service, manager, ctx, size=1)
    _write(manager.driver.path(volume["id"]), b"\x5a" * 65536, offset=GIB // 2)
    attachment = service.attachment_create(ctx, volume["id"], "server-1")

    class Loopback:  # the real worker answers the API's call
        def __getattr__(self, method):
            return lambda ctx, host, **kwargs: getattr(manager, method)(ctx, **kwargs)

    service.rpc = Loopback()
    info = service.attachment_update(ctx, attachment["id"], {"host": "compute1"})
    data = info["data"]
    assert info["driver_volume_type"] == "nbd" and data["host"] == "127.0.0.1" and data["format"] == "raw"
    url = f"nbd://{data['host']}:{data['port']}/{data['export_name']}"
    assert _read_block(url, 65536, GIB // 2 // 65536, tmp_path) == b"\x5a" * 65536
    assert _read_block(url, 65536, 0, tmp_path) == b"\x00" * 65536
    assert service.attachment_update(ctx, attachment["id"], {"host": "compute1"}) == info  # same export

    pid = manager.exports.record(volume["id"])["pid"]
    service.attachment_delete(ctx, attachment["id"])
    assert not Path(f"/proc/{pid}").exists() or "qemu-nbd" not in Path(f"/proc/{pid}/cmdline").read_text()
    with service.db.begin() as session:
        assert session.get(VolumeExport, volume["id"]) is None
    assert service.get(ctx, volume["id"])["status"] == "available"


def test_reconcile_restarts_a_dead_export_and_stops_an_unneeded_one(service, manager, ctx, tmp_path):
    attached = _make(service, manager, ctx, size=1)
    spare = _make(service, manager, ctx, size=1)
    attachment = service.attachment_create(ctx, attached["id"], "server-1")
    with service.db.begin() as session:
        session.get(VolumeAttachment, attachment["id"]).connection_info = manager.export_volume(ctx, attached["id"])
    manager.export_volume(ctx, spare["id"])  # a detach whose unexport was lost
    dead = manager.exports.record(attached["id"])
    manager.exports._terminate(dead["pid"], dead)  # qemu-nbd died

    report = manager.reconcile_volumes(ctx, {})
    kinds = sorted((f["kind"], f["what"], f["ident"], f["fixed"]) for f in report["findings"])
    assert kinds == sorted([("stale", "export", attached["id"], False), ("orphan", "export", spare["id"], False)])

    fixed = manager.reconcile_volumes(ctx, Fixes.all().to_dict())
    assert all(f["fixed"] for f in fixed["findings"]) and len(fixed["findings"]) == 2
    assert manager.exports.record(spare["id"]) is None
    export = manager.exports.record(attached["id"])
    assert manager.exports.is_running(export, manager.driver.path(attached["id"]))
    with service.db.begin() as session:
        info = session.get(VolumeAttachment, attachment["id"]).connection_info
    assert info["data"]["port"] == export["port"]
    assert manager.reconcile_volumes(ctx, {})["findings"] == []


@pytest.mark.parametrize("status", [states.AVAILABLE, states.IN_USE, states.UPLOADING])
def test_reconcile_finds_a_volume_whose_file_is_gone_and_marks_it_error(service, manager, ctx, status):
    volume = _make(service, manager, ctx, size=1)
    with service.db.begin() as session:
        session.get(Volume, volume["id"]).status = status
    manager.driver.path(volume["id"]).unlink()

    report = manager.reconcile_volumes(ctx, {})
    assert [(f["kind"], f["what"], f["ident"]) for f in report["findings"]] == [("stale", "volume", volume["id"])]
    assert service.get(ctx, volume["id"])["status"] == status  # reported, not yet fixed
    manager.reconcile_volumes(ctx, Fixes.all().to_dict())
    stored = service.get(ctx, volume["id"])
    assert stored["status"] == "error" and "file is missing" in stored["status_reason"]


def test_a_dead_create_ends_in_error_after_the_reaper(service, manager, ctx):
    volume = service.create(ctx, size=1)  # the worker never ran it
    assert reaper.reap(service.db, 600) == []
    import datetime
    later = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) + datetime.timedelta(seconds=601)
    assert reaper.reap(service.db, 600, now=later) == [f"volume {volume['id']}: creating -> error"]
    stored = service.get(ctx, volume["id"])
    assert stored["status"] == "error" and "transient_timeout" in stored["status_reason"]
    manager.create_volume(ctx, volume["id"])  # a late redelivery changes nothing
    assert service.get(ctx, volume["id"])["status"] == "error"

    other = _make(service, manager, ctx, size=1)
    service.attachment_create(ctx, other["id"], "server-1")
    assert reaper.reap(service.db, 600, now=later) == [f"volume {other['id']}: reserved -> available"]
    assert service.get(ctx, other["id"])["attachments"] == []


def test_failures_end_in_cinders_error_statuses(service, manager, ctx):
    volume = _make(service, manager, ctx, size=1)
    service.extend(ctx, volume["id"], 3)
    manager.driver.qemu_img_binary = "/nonexistent/qemu-img"
    manager.extend_volume(ctx, volume["id"], 3)
    stored = service.get(ctx, volume["id"])
    assert stored["status"] == states.ERROR_EXTENDING and "qemu-utils" in stored["status_reason"]
    broken = service.create(ctx, size=1)
    manager.create_volume(ctx, broken["id"])
    assert service.get(ctx, broken["id"])["status"] == states.ERROR


def test_a_forced_snapshot_of_an_attached_volume_is_a_copy_taken_while_it_is_served(service, manager, ctx,
                                                                                     tmp_path):
    volume = _make(service, manager, ctx, size=1)
    path = manager.driver.path(volume["id"])
    _write(path, b"x" * 4096)
    attachment = service.attachment_create(ctx, volume["id"], "server-1")
    manager.export_volume(ctx, volume["id"])  # qemu-nbd now holds the file's write lock
    service.attachment_complete(ctx, attachment["id"], "/dev/vdb")
    with pytest.raises(Exception, match="in-use"):
        service.create_snapshot(ctx, volume["id"])  # without force, as Cinder
    snapshot = service.create_snapshot(ctx, volume["id"], force=True)
    manager.create_snapshot(ctx, snapshot["id"])
    assert service.get_snapshot(ctx, snapshot["id"])["status"] == "available"
    assert manager.driver.snapshot_copy(snapshot["id"]).is_file()
    copy = _make(service, manager, ctx, snapshot_id=snapshot["id"])
    assert _read(str(manager.driver.path(copy["id"])), "qcow2", 4096, tmp_path) == b"\x5a" * 4096
    service.delete_snapshot(ctx, snapshot["id"])
    manager.delete_snapshot(ctx, snapshot["id"])
    assert not manager.driver.snapshot_copy(snapshot["id"]).exists()
    service.attachment_delete(ctx, attachment["id"])
