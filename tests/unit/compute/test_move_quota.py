"""The project's compute quota across a resize: the growth is taken when the resize is
accepted (race-safely, with the swap: over quota changes nothing), kept by a confirm,
given back by a revert or a failure before the hand-over; a smaller flavor gives back
on confirm; a delete mid-move gives back everything. Each exactly once under redelivery.

Same two-host cloud as ``test_moves`` (real compute api and managers, fake drivers, SQLite);
another server's usage (:data:`OTHER`) stays in the project so that giving back twice would show.
"""

from __future__ import annotations

import pytest

from fabric.api import quota
from fabric.compute import migrations, states
from fabric.context import RequestContext
from fabric.db.models import Flavor
from fabric.exception import QuotaExceeded, Unroutable
from tests.fixtures.instances import PROJECT
from tests.unit.compute.test_moves import BIG, SMALL, Cloud

MEDIUM = {"id": "medium", "vcpus": 1, "memory_mb": 128, "disk_gb": 2}  # BIG's disk, SMALL's cores and RAM
OTHER = {"cores": 3, "ram": 1000}  # another server of the project


def _ctx() -> RequestContext:
    return RequestContext.admin()


@pytest.fixture
def cloud(sqlite_db, tmp_path):
    cloud = Cloud(sqlite_db, tmp_path)
    with sqlite_db.begin() as session:
        session.add(Flavor(name=MEDIUM["id"], **MEDIUM))
    return cloud


def _server(cloud: Cloud, flavor: dict = SMALL) -> str:
    """A built server whose flavor, with :data:`OTHER`, is what the project uses (as a create reserved it)."""
    sid = cloud.server(flavor=flavor)
    quota.ensure_usage_rows(cloud.db, PROJECT, ["instances", "cores", "ram"])
    with cloud.db.begin() as session:
        quota.reserve(session, PROJECT, {"instances": 2, "cores": OTHER["cores"] + flavor["vcpus"],
                                         "ram": OTHER["ram"] + flavor["memory_mb"]})
    return sid


def _used(cloud: Cloud) -> tuple[int, int]:
    """The project's cores and RAM beyond :data:`OTHER`."""
    with cloud.db.begin() as session:
        usage = quota.usages(session, PROJECT)
    return usage["cores"] - OTHER["cores"], usage["ram"] - OTHER["ram"]


def _move(cloud: Cloud, sid: str) -> dict:
    with cloud.db.begin() as session:
        return migrations.latest(session, sid, (*migrations.OPEN, migrations.CONFIRMED, migrations.REVERTED,
                                                migrations.FAILED))


def _delete(cloud: Cloud, sid: str) -> None:
    """Delete as the HTTP API does: the server's flavor given back when the delete is accepted."""
    def release(session, row) -> None:
        quota.release(session, row.project_id, {"instances": 1, "cores": row.vcpus, "ram": row.memory_mb})

    cloud.api.delete(_ctx(), sid, on_accepted=release)


def test_a_resize_over_quota_is_refused_and_changes_nothing(cloud):
    sid = _server(cloud)
    quota.set_limit(cloud.db, PROJECT, "cores", OTHER["cores"] + 1)  # no room for BIG's second core
    with pytest.raises(QuotaExceeded, match=r"Quota exceeded for cores in project project-1: requested 1"):
        cloud.api.resize(_ctx(), sid, BIG)
    row = states.get_instance(cloud.db, sid)
    assert (row["vm_state"], row["task_state"], row["host"], row["flavor_id"]) == ("active", None, "h1", "small")
    assert _move(cloud, sid) is None and _used(cloud) == (1, 128)
    assert cloud.usage()["h2"] == (0, 0, 0)
    # With room for it, the same resize is accepted and takes the growth.
    quota.set_limit(cloud.db, PROJECT, "cores", OTHER["cores"] + 2)
    cloud.api.resize(_ctx(), sid, BIG)
    assert _used(cloud) == (2, 256)


def test_confirm_keeps_the_growth_and_a_redelivered_confirm_changes_nothing(cloud):
    sid = _server(cloud)
    cloud.api.resize(_ctx(), sid, BIG)
    assert _used(cloud) == (2, 256)
    cloud.api.confirm_resize(_ctx(), sid)
    cloud.managers["h1"].confirm_resize(_ctx(), sid, _move(cloud, sid)["id"])
    assert _used(cloud) == (2, 256)


def test_revert_gives_the_growth_back_once(cloud):
    sid = _server(cloud)
    cloud.api.resize(_ctx(), sid, BIG)
    cloud.api.revert_resize(_ctx(), sid)
    assert _used(cloud) == (1, 128)
    move_id = _move(cloud, sid)["id"]
    cloud.managers["h2"].revert_resize(_ctx(), sid, move_id)
    cloud.managers["h1"].finish_revert_resize(_ctx(), sid, move_id)
    assert _used(cloud) == (1, 128)


def test_a_smaller_flavor_gives_back_on_confirm_not_before(cloud):
    sid = _server(cloud, BIG)
    cloud.api.resize(_ctx(), sid, MEDIUM)
    assert _used(cloud) == (2, 256)  # held until confirmed: a revert needs it back
    cloud.api.confirm_resize(_ctx(), sid)
    assert _used(cloud) == (1, 128)
    cloud.managers["h1"].confirm_resize(_ctx(), sid, _move(cloud, sid)["id"])
    assert _used(cloud) == (1, 128)


def test_a_smaller_flavor_reverted_keeps_the_old_usage(cloud):
    sid = _server(cloud, BIG)
    cloud.api.resize(_ctx(), sid, MEDIUM)
    cloud.api.revert_resize(_ctx(), sid)
    assert _used(cloud) == (2, 256)


def test_a_move_without_destination_gives_the_growth_back(cloud):
    sid = _server(cloud)
    cloud.destination = None
    cloud.api.resize(_ctx(), sid, BIG)
    assert states.get_instance(cloud.db, sid)["flavor_id"] == "small"
    assert _used(cloud) == (1, 128)


def test_a_move_failed_after_the_hand_over_keeps_the_flavor_it_ends_on(cloud):
    sid = _server(cloud, BIG)
    cloud.driver("h2").fail_next("finish_migration")
    cloud.api.resize(_ctx(), sid, MEDIUM)
    assert states.get_instance(cloud.db, sid)["vm_state"] == "error"
    assert _used(cloud) == (1, 128)  # the server is MEDIUM on the destination now


@pytest.mark.parametrize(("old", "new"), [(SMALL, BIG), (BIG, MEDIUM)], ids=["bigger", "smaller"])
def test_deleting_a_server_awaiting_confirmation_gives_all_its_quota_back_once(cloud, old, new):
    sid = _server(cloud, old)
    cloud.api.resize(_ctx(), sid, new)
    _delete(cloud, sid)
    assert states.get_instance(cloud.db, sid, include_deleted=True)["deleted"]
    assert _used(cloud) == (0, 0)
    cloud.managers["h2"].terminate_instance(_ctx(), sid)  # redelivered
    with cloud.db.begin() as session:
        migrations.abandon_on_delete(session, sid, "h2")
    assert _used(cloud) == (0, 0)
    assert _move(cloud, sid)["status"] == migrations.FAILED


def test_deleting_a_server_whose_resize_was_not_started_gives_the_growth_back(cloud):
    sid = _server(cloud)
    cloud.managers["h1"].resize_instance = lambda *args, **kwargs: None  # the cast is not consumed yet
    cloud.api.resize(_ctx(), sid, BIG)
    assert _used(cloud) == (2, 256)
    _delete(cloud, sid)
    assert _used(cloud) == (0, 0)


def test_an_unroutable_resize_gives_the_growth_back(cloud, monkeypatch):
    sid = _server(cloud)

    def no_worker(*args, **kwargs):
        raise Unroutable(target="compute.h1", method="resize_instance")

    monkeypatch.setattr(cloud, "instance_action", no_worker)
    with pytest.raises(Unroutable):
        cloud.api.resize(_ctx(), sid, BIG)
    assert states.get_instance(cloud.db, sid)["task_state"] is None
    assert _move(cloud, sid)["status"] == migrations.FAILED and _used(cloud) == (1, 128)
