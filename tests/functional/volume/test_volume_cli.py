"""Block storage through the real `openstack` CLI against worker processes (fabric-api,
fabric-objectstore, fabric-volume) over the real RabbitMQ and PostgreSQL: volumes empty and from
an image (its bytes read back from the qcow2 file), extend, properties, a snapshot and a volume
made from it holding the same bytes, the quota refusal, delete refused while attached, and an
NBD export on 127.0.0.1 read back with qemu-img; every step checked in what the CLI shows, in
the database and on disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from fabric.api.bootstrap import bootstrap
from fabric.context import RequestContext
from fabric.db.models import Volume, VolumeExport
from fabric.volume import states
from fabric.volume.api import VolumeService
from fabric.volume.rpcapi import VolumeAPI
from tests.fixtures.api import add_user
from tests.fixtures.cli import openstack_env
from tests.fixtures.processes import fabric_conf, free_port, wait_until
from tests.functional.api.test_openstack_clients import PASSWORD

pytestmark = [pytest.mark.functional, pytest.mark.slow]

WORKERS = ("objectstore", "volume", "api")
HOST = "volcli1"
MIB = 1024 * 1024
GIB = 1024 * MIB


def _bytes(source: str, fmt: str, offset: int, length: int, tmp_path: Path) -> bytes:
    """``length`` bytes at ``offset`` of the guest's view of ``source`` (a file or an nbd:// URL)."""
    out = tmp_path / f"read-{os.urandom(4).hex()}.raw"
    # qemu-img dd counts the skipped blocks in count; -U reads a file a worker may hold open.
    subprocess.run(["qemu-img", "dd", *(["-U"] if fmt == "qcow2" else []), "-f", fmt, "-O", "raw", f"bs={length}",
                    f"skip={offset // length}", f"count={offset // length + 1}", f"if={source}", f"of={out}"],
                   check=True, capture_output=True)
    return out.read_bytes()


def _manage(conf: Path, key_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")} | {
        "FABRIC_SIGNING_KEY_DIR": str(key_dir)}
    return subprocess.run([sys.executable, "-m", "fabric.cmd.manage", "--config-file", str(conf), *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_volumes_through_the_cli(postgres_db, rabbit_vhost, rabbit_transport, spawn, signing_keys, osc, osc_fails,
                                 tmp_path):
    db = postgres_db
    api_port, export_base = free_port(), 22000 + os.getpid() % 5000
    conf = fabric_conf(tmp_path / "fabric.conf", host=HOST, api_port=api_port, transport_url=rabbit_vhost,
                       database_url=db.url.render_as_string(hide_password=False),
                       objectstore={"port": free_port()}, service={"advertise_address": "127.0.0.1"},
                       volume={"export_port_min": export_base, "export_port_max": export_base + 50})
    bootstrap(db, PASSWORD)
    started = {name: spawn([sys.executable, "-m", f"fabric.cmd.{name}", "--config-file", str(conf)],
                           name=f"fabric-{name}") for name in WORKERS}
    for name, worker in started.items():
        worker.wait_for_log(f"Started fabric-{name} on host {HOST}", timeout=90)
    auth_url = f"http://127.0.0.1:{api_port}/v3"
    admin = openstack_env(auth_url, "admin", PASSWORD, "admin")
    _, project = add_user(db, "volcli", "member", PASSWORD)
    member = openstack_env(auth_url, "volcli-user", PASSWORD, "volcli")
    data_dir = tmp_path / "data" / "volumes"

    def status(volume_id: str, wanted: str, what: str = "volume") -> dict:
        return wait_until(lambda: (shown := osc(member, what, "show", volume_id))["status"] == wanted and shown,
                          timeout=60, what=f"{what} {volume_id} {wanted}", workers=started.values())

    # --- catalog, zones, types, services -----------------------------------------------------------
    assert [t["Name"] for t in osc(member, "volume", "type", "list")] == ["__DEFAULT__"]
    zones = osc(member, "availability", "zone", "list", "--volume")
    assert [(z["Zone Name"], z["Zone Status"]) for z in zones] == [("nova", "available")]
    [service] = osc(admin, "volume", "service", "list")
    assert (service["Host"], service["State"], service["Status"]) == (HOST, "up", "enabled")

    # --- an empty volume; properties; extend ---------------------------------------------------------
    empty = osc(member, "volume", "create", "--size", "1", "--property", "tier=gold", "--description", "scratch",
                "empty1")
    assert empty["status"] == "creating"
    shown = status(empty["id"], "available")
    assert (shown["size"], shown["properties"], shown["description"], shown["bootable"]) == (
        1, {"tier": "gold"}, "scratch", False)
    assert (data_dir / f"volume-{empty['id']}.qcow2").is_file()
    osc(member, "volume", "set", "--property", "owner=ops", "--name", "empty2", "--size", "2", empty["id"],
        json_out=False)
    osc(member, "volume", "unset", "--property", "tier", empty["id"], json_out=False)
    shown = status(empty["id"], "available")
    assert (shown["name"], shown["size"], shown["properties"]) == ("empty2", 2, {"owner": "ops"})
    info = subprocess.run(["qemu-img", "info", "-U", str(data_dir / f"volume-{empty['id']}.qcow2")],
                          capture_output=True, text=True, check=True).stdout
    assert f"({2 * GIB} bytes)" in info

    # --- from an image: its bytes on the volume --------------------------------------------------------
    pattern = bytes(range(256)) * (MIB // 256)
    (tmp_path / "disk.raw").write_bytes(pattern * 3)
    image = osc(admin, "image", "create", "--file", str(tmp_path / "disk.raw"), "--disk-format", "raw",
                "--container-format", "bare", "--public", "vol-image")
    from_image = osc(member, "volume", "create", "--size", "1", "--image", image["id"], "--bootable", "imaged")
    shown = status(from_image["id"], "available")
    assert shown["bootable"] is True and shown["volume_image_metadata"]["image_id"] == image["id"]
    image_file = str(data_dir / f"volume-{from_image['id']}.qcow2")
    assert _bytes(image_file, "qcow2", 2 * MIB, MIB, tmp_path) == pattern
    assert _bytes(image_file, "qcow2", 3 * MIB, MIB, tmp_path) == b"\0" * MIB

    # --- a snapshot, and a volume from it with the same bytes -------------------------------------------
    snap = osc(member, "volume", "snapshot", "create", "--volume", from_image["id"], "--property", "k=v", "snap1")
    snap = status(snap["id"], "available", "volume snapshot")
    assert snap["properties"] == {"k": "v"} and snap["size"] == 1
    osc(member, "volume", "snapshot", "set", "--name", "snap1b", "--property", "k2=v2", snap["id"], json_out=False)
    assert [s["Name"] for s in osc(member, "volume", "snapshot", "list")] == ["snap1b"]
    copy = osc(member, "volume", "create", "--snapshot", snap["id"], "copied")
    status(copy["id"], "available")
    copy_file = str(data_dir / f"volume-{copy['id']}.qcow2")
    assert _bytes(copy_file, "qcow2", 2 * MIB, MIB, tmp_path) == pattern
    osc_fails(member, 400, "snapshot", "volume", "delete", from_image["id"])

    # --- listing: filters, long, paging ------------------------------------------------------------------
    listed = osc(member, "volume", "list", "--long")
    assert sorted(v["Name"] for v in listed) == ["copied", "empty2", "imaged"]
    assert [v["Name"] for v in osc(member, "volume", "list", "--name", "imaged")] == ["imaged"]
    # Newest first, as Cinder; the SDK follows the pages' next links, so --limit sizes the pages.
    assert [v["Name"] for v in osc(member, "volume", "list", "--limit", "1")] == ["copied", "imaged", "empty2"]
    after = osc(member, "volume", "list", "--limit", "1", "--marker", copy["id"])
    assert [v["Name"] for v in after] == ["imaged", "empty2"]

    # --- quota: show, set, refusal -------------------------------------------------------------------------
    osc(admin, "quota", "set", "--volumes", "3", project, json_out=False)
    quota = osc(admin, "quota", "show", "--volume", project)
    assert {row["Resource"]: row["Limit"] for row in quota}["volumes"] == 3
    osc_fails(member, 413, "volumes", "volume", "create", "--size", "1", "one-too-many")
    with db.begin() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Volume).where(
            Volume.name == "one-too-many")) == 0

    # --- an NBD export on 127.0.0.1 serves the volume's bytes; delete is refused while attached ---------------
    volumes = VolumeService(db, VolumeAPI(rabbit_transport))  # what Compute's API calls, here from the test
    ctx = RequestContext(user_id="u", project_id=project, roles=("member",))
    attachment = volumes.attachment_create(ctx, copy["id"], "server-x")
    connection = volumes.attachment_update(ctx, attachment["id"], {"host": "compute-x", "ip": "127.0.0.1"})
    data = connection["data"]
    assert (connection["driver_volume_type"], data["host"], data["format"]) == ("nbd", "127.0.0.1", "raw")
    url = f"nbd://127.0.0.1:{data['port']}/{data['export_name']}"
    assert _bytes(url, "raw", 2 * MIB, MIB, tmp_path) == pattern
    volumes.attachment_complete(ctx, attachment["id"], "/dev/vdb")
    assert status(copy["id"], "in-use")["attachments"]
    osc_fails(member, 400, "in-use", "volume", "delete", copy["id"])

    # --- reconcile: the export of an attached volume died; fabric-manage reports, then restarts it ----------
    with db.begin() as session:
        pid = session.get(VolumeExport, copy["id"]).pid
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not Path(f"/proc/{pid}/cmdline").exists() or not Path(f"/proc/{pid}/cmdline").read_bytes(),
               what="qemu-nbd gone")
    report = _manage(conf, signing_keys, "reconcile", "volumes")
    assert report.returncode == 1 and f"{HOST}: stale export {copy['id']}" in report.stdout, report.stdout
    fixed = _manage(conf, signing_keys, "reconcile", "volumes", "--fix-stale")
    assert fixed.returncode == 0 and "[fixed]" in fixed.stdout, fixed.stdout + fixed.stderr
    restarted = volumes.attachments_for_instance(ctx, "server-x")[0]["connection_info"]["data"]
    url = f"nbd://127.0.0.1:{restarted['port']}/{restarted['export_name']}"
    assert _bytes(url, "raw", 2 * MIB, MIB, tmp_path) == pattern
    assert _manage(conf, signing_keys, "reconcile", "volumes").returncode == 0
    volumes.attachment_delete(ctx, attachment["id"])
    status(copy["id"], "available")
    with db.begin() as session:
        assert session.get(VolumeExport, copy["id"]) is None

    # --- delete: snapshots first, then volumes; files gone, quota given back ----------------------------
    osc(member, "volume", "snapshot", "delete", snap["id"], json_out=False)
    wait_until(lambda: not osc(member, "volume", "snapshot", "list"), timeout=60, what="snapshot deleted",
               workers=started.values())
    osc(member, "volume", "delete", empty["id"], from_image["id"], copy["id"], json_out=False)
    wait_until(lambda: not osc(member, "volume", "list"), timeout=60, what="volumes deleted",
               workers=started.values())
    assert sorted(p.name for p in data_dir.glob("volume-*")) == []
    with db.begin() as session:
        assert set(session.scalars(sa.select(Volume.status).where(Volume.project_id == project))) == {
            states.DELETED}
    usage = {row["Resource"]: row for row in osc(admin, "quota", "show", "--volume", "--usage", project)}
    assert usage["volumes"]["In Use"] == 0 and usage["gigabytes"]["In Use"] == 0
