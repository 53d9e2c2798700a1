"""Deleting a server in the middle of a move (VERIFY_RESIZE, or after the move failed) leaves
nothing on either host: the destination's guest is destroyed by the delete, the source's
set-aside guest and disk by the ``drop_set_aside`` the delete sends it, and both claims are
given back once. Same two-host cloud as ``test_moves`` (fake drivers keeping real disk files);
the deleting host's own claim goes through its claims collaborator (recorded here), the other
host's is read from ``compute_nodes``.
"""

from __future__ import annotations

import pytest

from fabric.compute import states
from fabric.context import RequestContext
from tests.unit.compute.test_moves import BIG, Cloud, _latest_move


@pytest.fixture
def cloud(sqlite_db, tmp_path):
    return Cloud(sqlite_db, tmp_path)


def _ctx() -> RequestContext:
    return RequestContext.admin()


def _left_on(cloud: Cloud, host: str) -> tuple[list[str], list[str], list[str]]:
    """What ``host`` still has: guests, set-aside guests, disk files."""
    driver = cloud.driver(host)
    files = sorted(p.name for p in driver.disk_dir.iterdir()) if driver.disk_dir.exists() else []
    return driver.list_instances(), driver.set_aside(), files


NOTHING = ([], [], [])


@pytest.mark.parametrize("destination", ["h2", "h1"], ids=["other-host", "same-host"])
def test_deleting_a_server_awaiting_confirmation_leaves_nothing_on_either_host(cloud, destination):
    sid = cloud.server()
    cloud.destination = destination
    cloud.api.resize(_ctx(), sid, BIG)
    assert states.get_instance(cloud.db, sid)["vm_state"] == "resized"
    assert cloud.driver("h1").set_aside() == [sid]

    cloud.api.delete(_ctx(), sid)
    assert states.get_instance(cloud.db, sid, include_deleted=True)["deleted"]
    assert _left_on(cloud, "h1") == NOTHING and _left_on(cloud, "h2") == NOTHING
    # Only the server's claim (BIG, on the destination) is left, for the destination's claims release.
    held = {"h1": (0, 0, 0), "h2": (0, 0, 0), destination: (2, 256, 2)}
    assert cloud.usage() == held
    assert cloud.managers[destination].claims.released == [(sid, destination)]
    assert _latest_move(cloud.db, sid)["status"] == "error"
    # Redelivered, the delete and the drop give nothing back twice.
    move_id = _latest_move(cloud.db, sid)["id"]
    cloud.managers[destination].terminate_instance(_ctx(), sid)
    cloud.managers["h1"].drop_set_aside(_ctx(), sid, move_id)
    assert cloud.usage() == held
    assert _left_on(cloud, "h1") == NOTHING


def test_deleting_a_server_whose_move_failed_drops_the_sources_set_aside_disk(cloud):
    sid = cloud.server()
    cloud.driver("h2").fail_next("finish_migration")
    cloud.api.resize(_ctx(), sid, BIG)
    row = states.get_instance(cloud.db, sid)
    assert (row["vm_state"], row["host"]) == ("error", "h2")
    assert cloud.driver("h1").set_aside() == [sid]  # the source kept it: there is no revert from error

    cloud.api.delete(_ctx(), sid)
    assert _left_on(cloud, "h1") == NOTHING and _left_on(cloud, "h2") == NOTHING
    assert cloud.usage() == {"h1": (0, 0, 0), "h2": (2, 256, 2)}  # h2's own, for its claims release
    assert cloud.managers["h2"].claims.released == [(sid, "h2")]


def test_the_source_keeps_the_guest_of_a_server_that_lives_there(cloud):
    sid = cloud.server()
    cloud.api.resize(_ctx(), sid, BIG)
    cloud.api.revert_resize(_ctx(), sid)
    cloud.managers["h1"].drop_set_aside(_ctx(), sid, _latest_move(cloud.db, sid)["id"])
    assert cloud.driver("h1").list_instances() == [sid]
    assert cloud.disk("h1", sid) == b"img-a" * 100


def test_a_delete_redelivered_after_a_crash_still_ends_the_move(cloud, monkeypatch):
    """The destination marked the server deleted and died before ending its move: the
    redelivered delete ends it (the source's claim given back, its set-aside guest dropped)."""
    sid = cloud.server()
    cloud.api.resize(_ctx(), sid, BIG)
    destination = cloud.managers["h2"]

    def crash(*args, **kwargs):
        raise ConnectionResetError("the worker died here")

    with monkeypatch.context() as patched:
        patched.setattr(destination, "_abandon_moves_on_delete", crash)
        with pytest.raises(ConnectionResetError):
            destination.terminate_instance(_ctx(), sid)
    assert states.get_instance(cloud.db, sid, include_deleted=True)["deleted"]
    assert cloud.usage()["h1"] == (1, 128, 1)  # the source's claim, still held
    assert _latest_move(cloud.db, sid)["status"] != "error"

    destination.terminate_instance(_ctx(), sid)  # redelivered
    assert _latest_move(cloud.db, sid)["status"] == "error"
    assert cloud.usage()["h1"] == (0, 0, 0)
    assert _left_on(cloud, "h1") == NOTHING and _left_on(cloud, "h2") == NOTHING
    assert destination.claims.released == [(sid, "h2")]
