"""Rebuild, resize (confirm and revert), cold migration (to the scheduler's pick and, with
microversion 2.56, to a named host) and snapshot through the real `openstack`
CLI, against every worker as its own process (``bin/``, fake virt and network drivers) on
RabbitMQ and PostgreSQL, two compute hosts.

The fake driver keeps each guest's disk as a real file (a copy of its image's bytes), so
what travels is checked, not assumed: after a rebuild onto image B, a resize there and back
(revert), a migration and its confirm, the snapshot's data must be exactly image B's bytes
(shipped through the objectstore at every move), and a server boots from the snapshot. Every
step ends where Nova's would (status, flavor, host, image, addresses), each host's claims
are what the server holds, and ``server event list`` records each request.
"""

from __future__ import annotations

import hashlib

import pytest
import sqlalchemy as sa

from fabric.api import quota
from fabric.api.bootstrap import bootstrap
from fabric.db import Database
from fabric.db.models import ComputeNode, Instance, Migration
from tests.fixtures.cli import openstack_env
from tests.fixtures.databases import create_schema_database
from tests.fixtures.process_cloud import start_cloud
from tests.fixtures.processes import wait_until

pytestmark = pytest.mark.functional

PASSWORD = "moves-admin-pw"
IMAGE_A, IMAGE_B = b"A" * 4096, b"B" * 6144
SMALL, MID, BIG = (64, 1, 1), (96, 1, 2), (128, 2, 2)  # ram MiB, vCPUs, disk GiB


@pytest.fixture
def cloud(database_servers, spawn, tmp_path, rabbit_vhost):
    """(database, admin's OS_* environment) of a two-host cloud of worker processes."""
    db_url = create_schema_database(database_servers)
    db = Database(db_url)
    try:
        bootstrap(db, PASSWORD)
        api = start_cloud(spawn, tmp_path, db_url, rabbit_vhost)
        env = openstack_env(f"http://127.0.0.1:{api.api_port}/v3", "admin", PASSWORD, "admin")
        yield db, env, api
    finally:
        db.dispose()


def _usage(db: Database) -> dict[str, tuple[int, int, int]]:
    """host -> (memory_mb_used, vcpus_used, disk_gb_used): what the claims hold."""
    with db.begin() as session:
        return {n.host: (n.memory_mb_used, n.vcpus_used, n.disk_gb_used) for n in session.scalars(sa.select(ComputeNode))}


def _cores_used(db: Database, project_id: str) -> int:
    with db.begin() as session:
        return quota.usages(session, project_id)["cores"]


def _row(db: Database, server_id: str) -> Instance:
    with db.begin() as session:
        row = session.get(Instance, server_id)
        session.expunge(row)
        return row


def test_rebuild_resize_migrate_and_snapshot_through_the_cli(cloud, osc, osc_fails, tmp_path):
    db, env, processes = cloud
    for name, (ram, vcpus, disk) in (("mv.small", SMALL), ("mv.mid", MID), ("mv.big", BIG)):
        osc(env, "flavor", "create", "--ram", str(ram), "--vcpus", str(vcpus), "--disk", str(disk), name)
    image_ids = {}
    for name, data in (("mv-a", IMAGE_A), ("mv-b", IMAGE_B)):
        (tmp_path / name).write_bytes(data)
        image_ids[name] = osc(env, "image", "create", "--file", str(tmp_path / name), "--disk-format", "raw",
                              "--container-format", "bare", name)["id"]
    osc(env, "network", "create", "mv-net")
    osc(env, "subnet", "create", "--network", "mv-net", "--subnet-range", "10.61.0.0/24", "mv-sub")
    server = osc(env, "server", "create", "--flavor", "mv.small", "--image", "mv-a", "--network", "mv-net",
                 "--wait", "mv-vm")
    sid = server["id"]
    first = osc(env, "server", "show", sid)
    home, addresses = first["OS-EXT-SRV-ATTR:host"], first["addresses"]
    other = {"h1": "h2", "h2": "h1"}[home]
    assert first["status"] == "ACTIVE" and addresses
    wait_until(lambda: _usage(db).get(home) == SMALL, 30, "the build's claim")
    (port_id,) = [p["ID"] for p in osc(env, "port", "list", "--server", sid)]
    assert osc(env, "port", "show", port_id)["status"] == "ACTIVE"  # bound and plugged, as Neutron says

    # (No --wait on moves: osc-lib would poll forever for a status that never comes; show() gives up.)
    def show(wanted: str) -> dict:
        def ready():
            shown = osc(env, "server", "show", sid)
            assert shown["status"] != "ERROR", shown.get("fault")
            return shown if shown["status"] == wanted else None
        return wait_until(ready, 60, f"server {sid} {wanted}", workers=processes.workers, interval=0.3)

    # 1. Rebuild onto image B: same host, same addresses, the disk re-created from B.
    rebuilt = osc(env, "server", "rebuild", "--image", "mv-b", sid)
    assert rebuilt["id"] == sid
    shown = show("ACTIVE")
    assert (shown["OS-EXT-SRV-ATTR:host"], shown["addresses"]) == (home, addresses)
    assert _row(db, sid).image_id == image_ids["mv-b"]

    # Refusals name the value, change nothing.
    osc_fails(env, 400, "already has flavor", "server", "resize", "--flavor", "mv.small", sid)
    osc_fails(env, 404, "nosuch", "server", "resize", "--flavor", "nosuch", sid)  # the CLI looks the flavor up
    osc_fails(env, 409, "vm_state", "server", "resize", "confirm", sid)
    osc_fails(env, 409, "vm_state", "server", "resize", "revert", sid)

    # A resize past the project's cores quota is refused as Nova refuses it, nothing changed.
    project = _row(db, sid).project_id
    osc(env, "quota", "set", "--cores", "1", project, json_out=False)
    osc_fails(env, 403, "Quota exceeded for cores", "server", "resize", "--flavor", "mv.big", sid)
    assert osc(env, "server", "show", sid)["status"] == "ACTIVE" and _usage(db)[home] == SMALL
    osc(env, "quota", "set", "--cores", "20", project, json_out=False)

    # 2. Resize to mv.big, then confirm: on the other host (only one fits: the source is never the
    # destination here), both claims held while it waits, the source's given back on confirm.
    osc(env, "server", "resize", "--flavor", "mv.big", sid, json_out=False)
    shown = show("VERIFY_RESIZE")
    assert (shown["OS-EXT-SRV-ATTR:host"], shown["addresses"]) == (other, addresses)
    assert osc(env, "port", "show", port_id)["status"] == "ACTIVE"  # unplugged on the source, plugged here
    assert _cores_used(db, project) == 2  # the growth taken when the resize was accepted
    assert "mv.big" in str(shown["flavor"])
    assert _usage(db) == {home: SMALL, other: BIG}
    osc_fails(env, 409, "vm_state", "server", "migrate", sid)
    osc(env, "server", "resize", "confirm", sid, json_out=False)
    shown = show("ACTIVE")
    assert (shown["OS-EXT-SRV-ATTR:host"], shown["addresses"]) == (other, addresses)
    wait_until(lambda: _usage(db) == {home: (0, 0, 0), other: BIG}, 30, "the source's claim given back")
    row = _row(db, sid)
    assert (row.vcpus, row.memory_mb, row.disk_gb) == (2, 128, 2)

    # 3. Resize to mv.mid, then revert: back on `other` with mv.big, the destination's claim gone.
    osc_fails(env, 400, "a disk cannot shrink", "server", "resize", "--flavor", "mv.small", sid)
    osc(env, "server", "resize", "--flavor", "mv.mid", sid, json_out=False)
    shown = show("VERIFY_RESIZE")
    assert shown["OS-EXT-SRV-ATTR:host"] == home and "mv.mid" in str(shown["flavor"])
    assert _usage(db) == {home: MID, other: BIG}
    osc(env, "server", "resize", "revert", sid, json_out=False)
    shown = show("ACTIVE")
    assert (shown["OS-EXT-SRV-ATTR:host"], shown["addresses"]) == (other, addresses)
    assert "mv.big" in str(shown["flavor"])
    wait_until(lambda: _usage(db) == {home: (0, 0, 0), other: BIG}, 30, "the destination's claim given back")

    # 4. Cold migration (admin): the scheduler picks the other host; same flavor; confirm.
    osc(env, "server", "migrate", sid, json_out=False)
    shown = show("VERIFY_RESIZE")
    assert (shown["OS-EXT-SRV-ATTR:host"], shown["addresses"]) == (home, addresses)
    assert "mv.big" in str(shown["flavor"])
    osc(env, "server", "resize", "confirm", sid, json_out=False)
    shown = show("ACTIVE")
    assert shown["OS-EXT-SRV-ATTR:host"] == home
    wait_until(lambda: _usage(db) == {home: BIG, other: (0, 0, 0)}, 30, "the source's claim given back")
    with db.begin() as session:
        moves = [(m.migration_type, m.status) for m in session.scalars(
            sa.select(Migration).where(Migration.instance_id == sid).order_by(Migration.created_at))]
    assert moves == [("resize", "confirmed"), ("resize", "reverted"), ("migration", "confirmed")]

    # 4b. Cold migration to a named host (`server migrate --host`: microversion 2.56, negotiated by the
    # CLI): the server's own host is refused, naming it; the other one is where it goes.
    osc_fails(env, 400, home, "server", "migrate", "--host", home, sid)
    osc(env, "server", "migrate", "--host", other, sid, json_out=False)
    shown = show("VERIFY_RESIZE")
    assert (shown["OS-EXT-SRV-ATTR:host"], shown["addresses"]) == (other, addresses)
    assert _usage(db) == {home: BIG, other: BIG}  # both claims held until confirmed
    osc(env, "server", "resize", "confirm", sid, json_out=False)
    assert show("ACTIVE")["OS-EXT-SRV-ATTR:host"] == other
    wait_until(lambda: _usage(db) == {home: (0, 0, 0), other: BIG}, 30, "the source's claim given back")
    home, other = other, home

    # 5. Snapshot: image B's bytes, carried through every move; a new server boots from it.
    osc(env, "server", "image", "create", "--name", "mv-snap", sid)

    def snapshot_active():
        image = osc(env, "image", "show", "mv-snap")
        assert image["status"] in ("queued", "saving", "active"), image
        return image if image["status"] == "active" else None

    snap = wait_until(snapshot_active, 60, "the snapshot active", workers=processes.workers, interval=0.3)
    assert (snap["size"], snap["checksum"]) == (len(IMAGE_B), hashlib.md5(IMAGE_B).hexdigest())
    assert show("ACTIVE")["OS-EXT-SRV-ATTR:host"] == home
    booted = osc(env, "server", "create", "--flavor", "mv.big", "--image", "mv-snap", "--network", "mv-net",
                 "--wait", "mv-from-snap")
    assert booted["status"] == "ACTIVE"
    assert _row(db, booted["id"]).image_id == snap["id"]

    # server event list: one action per request, newest first, each finished with success.
    events = osc(env, "server", "event", "list", sid)
    assert [e["Action"] for e in events] == ["createImage", "confirmResize", "migrate", "confirmResize", "migrate",
                                             "revertResize", "resize", "confirmResize", "resize", "rebuild",
                                             "create"]
    for event in events:
        detail = osc(env, "server", "event", "show", sid, event["Request ID"])
        assert [e["result"] for e in detail["events"]] == ["Success"], detail
