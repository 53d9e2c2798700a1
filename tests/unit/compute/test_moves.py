"""Rebuild, snapshot, resize and cold migration through the real compute api and two compute
managers (hosts h1, h2) on fake drivers that keep real disk files, on SQLite.

Casts are delivered at once to the manager of their host (the API's through a recording
caster, the hosts' hand-overs through the moves collaborator), so each test reads like the
flow: accept, run, rest. What the hosts' claims hold is read from ``compute_nodes``.
"""

from __future__ import annotations

import datetime
import hashlib

import pytest
import sqlalchemy as sa

from fabric.compute import migrations, states
from fabric.compute.api import ComputeService
from fabric.compute.faults import latest_fault
from fabric.compute.housekeeping import reap_stuck_instances
from fabric.compute.manager import ComputeManager
from fabric.config import Settings
from fabric.context import RequestContext
from fabric.db.models import ComputeNode, Flavor, Image, InstanceAction, Project
from fabric.db.types import utcnow
from fabric.exception import Forbidden, HypervisorError, InstanceLocked, InstanceStateConflict, Invalid, NoValidHost
from fabric.scheduler import claims
from fabric.virt.driver import BootImage
from fabric.virt.fake import FakeDriver
from tests.fixtures import instances
from tests.unit.compute.conftest import FakeAddresses, FakeClaims, FakeNetwork, FakeRescheduler

SMALL = {"id": "small", "vcpus": 1, "memory_mb": 128, "disk_gb": 1}
BIG = {"id": "big", "vcpus": 2, "memory_mb": 256, "disk_gb": 2}


class Cloud:
    """Two hosts, the compute api, and every cast delivered at once to its host's manager."""

    def __init__(self, db, tmp_path) -> None:
        self.db = db
        self.images = tmp_path / "images"
        self.images.mkdir()
        for name in ("img-a", "img-b"):
            (self.images / name).write_bytes(name.encode() * 100)
        self.destination: str | None = "h2"  # what the "scheduler" claims
        self.objects: dict[str, bytes] = {}
        self.managers = {host: self._manager(host, tmp_path / host) for host in ("h1", "h2")}
        self.api = ComputeService(db, self)
        with db.begin() as session:
            session.add(Project(id=instances.PROJECT, name=instances.PROJECT))  # whose quota a resize takes
            for host in self.managers:
                session.add(ComputeNode(host=host, vcpus=8, memory_mb=4096, disk_gb=100))
            for flavor in (SMALL, BIG):
                session.add(Flavor(name=flavor["id"], **flavor))

    def _manager(self, host: str, data_dir) -> ComputeManager:
        settings = Settings().replace(default={"host": host, "data_dir": str(data_dir)})
        driver = FakeDriver(hostname=host, disk_dir=data_dir / "disks")
        manager = ComputeManager(settings, host, self.db, driver=driver, addresses=FakeAddresses(),
                                 network=FakeNetwork(), rescheduler=FakeRescheduler(), claims=FakeClaims(),
                                 images=self, moves=self, disks=self)
        manager.addresses.bind_to_host = lambda ctx, instance, vif, to: None
        driver.init_host(host)
        return manager

    # --- the collaborators the managers and the api are given ------------------------

    def boot_image(self, ctx, instance):
        return BootImage(disk_path=str(self.images / instance["image_id"]), disk_format="raw")

    def instance_action(self, ctx, host, action, instance_id, **kwargs):  # the api's caster
        getattr(self.managers[host], action)(ctx, instance_id, **kwargs)

    def claim_destination(self, ctx, migration_id):
        if self.destination is None:
            raise NoValidHost(reason="nothing fits")
        move = migrations.get(self.db, migration_id)
        claims.claim_move(self.db, migration_id, self.destination, move["new_flavor"], claims.Ratios(1, 1, 1))
        return migrations.get(self.db, migration_id)["dest_host"]

    def stage(self, session, cast, ctx, **kwargs):
        return cast, ctx, kwargs

    def send(self, staged):
        cast, ctx, kwargs = staged
        host = kwargs.pop("host")
        getattr(self.managers[host], cast.split(".", 1)[1])(ctx, **kwargs)

    def put_move_disk(self, migration_id, path):
        self.objects[migration_id] = open(path, "rb").read()

    def get_move_disk(self, migration_id, target):
        open(target, "wb").write(self.objects[migration_id])

    def delete_move_disk(self, migration_id):
        self.objects.pop(migration_id, None)

    def put_image(self, image_id, path):
        data = open(path, "rb").read()
        self.objects[image_id] = data
        return {"size": len(data), "checksum": hashlib.md5(data).hexdigest()}

    # --- helpers ---------------------------------------------------------------------

    def server(self, host: str = "h1", flavor: dict = SMALL, vm_state: str = "active") -> str:
        """A built server on ``host`` (its guest spawned, its claim held)."""
        instance_id = instances.add_instance(self.db, host=host, image_id="img-a", vm_state="building",
                                   task_state=None, requested_networks=[{"network_id": "net0"}], flavor_id=flavor["id"], vcpus=flavor["vcpus"], memory_mb=flavor["memory_mb"],
                                   disk_gb=flavor["disk_gb"])
        with self.db.begin() as session:
            claims.release_usage(session, host, {k: -v for k, v in flavor.items() if k != "id"})
        self.managers[host].build_instance(RequestContext.admin(), instance_id)
        if vm_state == "stopped":
            self.api.act(RequestContext.admin(), instance_id, "os-stop")
        assert states.get_instance(self.db, instance_id)["vm_state"] == vm_state
        return instance_id

    def usage(self) -> dict[str, tuple[int, int, int]]:
        with self.db.begin() as session:
            return {n.host: (n.vcpus_used, n.memory_mb_used, n.disk_gb_used)
                    for n in session.scalars(sa.select(ComputeNode))}

    def driver(self, host: str) -> FakeDriver:
        return self.managers[host].driver

    def disk(self, host: str, instance_id: str) -> bytes:
        return (self.driver(host).disk_dir / f"{instance_id}.disk").read_bytes()

    def actions(self, instance_id: str) -> list[tuple[str, str | None]]:
        with self.db.begin() as session:
            return [(a.action, a.result) for a in session.scalars(
                sa.select(InstanceAction).where(InstanceAction.instance_id == instance_id).order_by(InstanceAction.id))]


def _ctx() -> RequestContext:
    return RequestContext.admin()  # a context per request: an instance records one action per request id


@pytest.fixture
def cloud(sqlite_db, tmp_path):
    return Cloud(sqlite_db, tmp_path)


def _flavor_of(db, instance_id) -> tuple:
    row = states.get_instance(db, instance_id)
    return row["flavor_id"], row["vcpus"], row["memory_mb"], row["disk_gb"]


def test_resize_to_another_host_holds_both_claims_until_confirmed(cloud):
    sid = cloud.server()
    cloud.api.rebuild(_ctx(), sid, "img-b")  # so the disk carried is not the image a new guest would get
    cloud.api.resize(_ctx(), sid, BIG)
    row = states.get_instance(cloud.db, sid)
    assert (row["vm_state"], row["task_state"], row["host"]) == ("resized", None, "h2")
    assert _flavor_of(cloud.db, sid) == ("big", 2, 256, 2)
    assert cloud.usage() == {"h1": (1, 128, 1), "h2": (2, 256, 2)}
    assert cloud.disk("h2", sid) == b"img-b" * 100  # the source's disk, shipped
    assert cloud.driver("h1").set_aside() == [sid] and cloud.driver("h1").list_instances() == []
    assert cloud.objects == {}  # the shipped disk is forgotten once the guest runs on it

    cloud.api.confirm_resize(_ctx(), sid)
    row = states.get_instance(cloud.db, sid)
    assert (row["vm_state"], row["task_state"], row["host"]) == ("active", None, "h2")
    assert cloud.usage() == {"h1": (0, 0, 0), "h2": (2, 256, 2)}
    assert cloud.driver("h1").set_aside() == []
    # A redelivered confirm gives nothing back twice.
    move = _latest_move(cloud.db, sid)
    cloud.managers["h1"].confirm_resize(_ctx(), sid, move["id"])
    assert cloud.usage() == {"h1": (0, 0, 0), "h2": (2, 256, 2)}
    assert cloud.actions(sid)[-3:] == [("rebuild", "Success"), ("resize", "Success"), ("confirmResize", "Success")]


def _latest_move(db, instance_id):
    with db.begin() as session:
        return migrations.latest(session, instance_id, tuple({
            migrations.PRE_MIGRATING, migrations.MIGRATING, migrations.POST_MIGRATING, migrations.FINISHED,
            migrations.CONFIRMING, migrations.CONFIRMED, migrations.REVERTING, migrations.REVERT_FINISHING,
            migrations.REVERTED, migrations.FAILED}))


@pytest.mark.parametrize("destination", ["h2", "h1"], ids=["other-host", "same-host"])
def test_revert_brings_the_old_guest_back_with_its_old_flavor(cloud, destination):
    sid = cloud.server(vm_state="stopped")
    cloud.destination = destination
    cloud.api.resize(_ctx(), sid, BIG)
    assert states.get_instance(cloud.db, sid)["host"] == destination
    assert cloud.driver(destination).get_info(sid).power_state.name == "SHUTDOWN"  # stopped stays stopped
    both = {"h1": (1, 128, 1), "h2": (0, 0, 0)}
    both[destination] = tuple(a + b for a, b in zip(both[destination], (2, 256, 2), strict=True))
    assert cloud.usage() == both

    cloud.api.revert_resize(_ctx(), sid)
    row = states.get_instance(cloud.db, sid)
    assert (row["vm_state"], row["task_state"], row["host"]) == ("stopped", None, "h1")
    assert _flavor_of(cloud.db, sid) == ("small", 1, 128, 1)
    assert cloud.usage() == {"h1": (1, 128, 1), "h2": (0, 0, 0)}
    assert cloud.driver("h1").list_instances() == [sid] and cloud.driver("h1").set_aside() == []
    assert cloud.disk("h1", sid) == b"img-a" * 100
    assert _latest_move(cloud.db, sid)["status"] == "reverted"


def test_a_redelivered_hand_over_repeats_nothing(cloud):
    sid = cloud.server()
    cloud.api.resize(_ctx(), sid, BIG)
    move = _latest_move(cloud.db, sid)
    before = cloud.usage()
    cloud.managers["h1"].resize_instance(_ctx(), sid, move["id"])
    cloud.managers["h2"].finish_resize(_ctx(), sid, move["id"])
    assert cloud.usage() == before
    assert states.get_instance(cloud.db, sid)["vm_state"] == "resized"
    assert cloud.driver("h2").calls["finish_migration"] == 1


def test_migration_is_for_admins_and_refuses_the_servers_own_host(cloud):
    sid = cloud.server()
    member = RequestContext(user_id="u", project_id="project-1", roles=("member",))
    with pytest.raises(Forbidden, match="admin"):
        cloud.api.resize(member, sid, None)
    with pytest.raises(Invalid, match="'h1' is server .* own host"):
        cloud.api.resize(_ctx(), sid, None, host="h1")
    with pytest.raises(Invalid, match="already has flavor small"):
        cloud.api.resize(_ctx(), sid, SMALL)
    with pytest.raises(Invalid, match="disk cannot shrink"):
        cloud.api.resize(_ctx(), cloud.server(flavor=BIG), SMALL)
    cloud.api.resize(_ctx(), sid, None)
    assert (states.get_instance(cloud.db, sid)["host"], _flavor_of(cloud.db, sid)[0]) == ("h2", "small")
    assert cloud.actions(sid)[-1] == ("migrate", "Success")


def test_a_locked_server_refuses_moves_from_its_owner(cloud):
    sid = cloud.server()
    member = RequestContext(user_id="u", project_id="project-1", roles=("member",))
    cloud.api.lock(member, sid)
    for start in (lambda: cloud.api.resize(member, sid, BIG), lambda: cloud.api.rebuild(member, sid, "img-b"),
                  lambda: cloud.api.snapshot(member, sid, lambda session, row: "x")):
        with pytest.raises(InstanceLocked):
            start()
    assert states.get_instance(cloud.db, sid)["task_state"] is None


def test_confirm_and_revert_need_verify_resize(cloud):
    sid = cloud.server()
    with pytest.raises(InstanceStateConflict, match="vm_state 'active'"):
        cloud.api.confirm_resize(_ctx(), sid)
    with pytest.raises(InstanceStateConflict, match="vm_state 'active'"):
        cloud.api.revert_resize(_ctx(), sid)


def test_no_destination_leaves_the_server_where_it_was_with_the_reason(cloud):
    sid = cloud.server()
    cloud.destination = None
    cloud.api.resize(_ctx(), sid, BIG)
    row = states.get_instance(cloud.db, sid)
    assert (row["vm_state"], row["task_state"], row["host"]) == ("active", None, "h1")
    assert "nothing fits" in latest_fault(cloud.db, sid)["message"]
    assert cloud.actions(sid)[-1][1] == "Error" and cloud.usage()["h2"] == (0, 0, 0)


def test_a_failure_on_the_destination_ends_in_error_with_one_claim(cloud):
    sid = cloud.server()
    cloud.driver("h2").fail_next("finish_migration")
    cloud.api.resize(_ctx(), sid, BIG)
    row = states.get_instance(cloud.db, sid)
    assert (row["vm_state"], row["task_state"], row["host"]) == ("error", None, "h2")
    assert "injected failure" in latest_fault(cloud.db, sid)["message"]
    # The server is the destination's now (with the flavor claimed there); the source's claim is back.
    assert _flavor_of(cloud.db, sid) == ("big", 2, 256, 2)
    assert cloud.usage() == {"h1": (0, 0, 0), "h2": (2, 256, 2)}
    assert _latest_move(cloud.db, sid)["status"] == "error"
    assert cloud.actions(sid)[-1] == ("resize", "Error")


def test_a_failure_on_the_source_brings_its_guest_back(cloud):
    sid = cloud.server()
    cloud.objects = None  # put_move_disk fails: nothing to upload into
    cloud.api.resize(_ctx(), sid, BIG)
    row = states.get_instance(cloud.db, sid)
    assert (row["vm_state"], row["host"]) == ("error", "h1")
    assert cloud.usage() == {"h1": (1, 128, 1), "h2": (0, 0, 0)}
    assert cloud.driver("h1").list_instances() == [sid]


def test_the_reaper_ends_a_stalled_move_and_gives_its_claim_back(cloud):
    sid = cloud.server()
    with cloud.db.begin() as session:
        move_id = migrations.create(session, states.get_instance(cloud.db, sid), migrations.RESIZE, BIG)
    cloud.claim_destination(_ctx(), move_id)  # then the source worker died
    states.compare_and_swap(cloud.db, sid, {"task_state": None}, task_state=states.RESIZE_MIGRATING,
                            task_started_at=utcnow() - datetime.timedelta(hours=1))
    assert reap_stuck_instances(cloud.db, "h1", 60) == [sid]
    assert states.get_instance(cloud.db, sid)["vm_state"] == "error"
    assert cloud.usage() == {"h1": (1, 128, 1), "h2": (0, 0, 0)}
    assert "stuck in task resize_migrating" in latest_fault(cloud.db, sid)["message"]


def test_rebuild_recreates_the_disk_and_keeps_a_stopped_server_stopped(cloud):
    sid = cloud.server(vm_state="stopped")
    nics = states.get_instance(cloud.db, sid)["network_info"]
    cloud.api.rebuild(_ctx(), sid, "img-b", name="renamed")
    row = states.get_instance(cloud.db, sid)
    assert (row["vm_state"], row["task_state"], row["image_id"], row["display_name"]) == \
        ("stopped", None, "img-b", "renamed")
    assert row["network_info"] == nics and cloud.disk("h1", sid) == b"img-b" * 100
    assert cloud.actions(sid)[-1] == ("rebuild", "Success")


def test_a_failed_rebuild_ends_in_error_with_a_fault(cloud):
    sid = cloud.server()
    cloud.driver("h1").fail_next("spawn")
    cloud.api.rebuild(_ctx(), sid, "img-b")
    assert states.get_instance(cloud.db, sid)["vm_state"] == "error"
    assert "injected failure" in latest_fault(cloud.db, sid)["message"]


def _queued_image(session, row) -> str:
    image = Image(name="snap", owner=row["project_id"], status="queued", disk_format="raw")
    session.add(image)
    session.flush()
    return image.id


def test_snapshot_uploads_the_disk_and_a_failure_kills_the_image(cloud):
    sid = cloud.server()
    image_id = cloud.api.snapshot(_ctx(), sid, _queued_image)
    with cloud.db.begin() as session:
        image = session.get(Image, image_id)
        assert (image.status, image.size) == ("active", 500)
    assert cloud.objects[image_id] == b"img-a" * 100
    assert states.get_instance(cloud.db, sid)["vm_state"] == "active"

    cloud.driver("h1").fail_next("snapshot", HypervisorError(host="h1", action="snapshot", instance=sid,
                                                             reason="disk unreadable"))
    failed = cloud.api.snapshot(_ctx(), sid, _queued_image)
    with cloud.db.begin() as session:
        assert session.get(Image, failed).status == "killed"
    row = states.get_instance(cloud.db, sid)
    assert (row["vm_state"], row["task_state"]) == ("active", None)
    assert cloud.actions(sid)[-2:] == [("createImage", "Success"), ("createImage", "Error")]
