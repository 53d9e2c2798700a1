"""A server create whose COMMIT loses the database (fabric.api.in_doubt), or whose transaction
the database picks as a deadlock's victim.

The commit of the create's transaction is made to raise a lost connection, after the
database wrote it or without writing it, and the database is made unreachable for longer
than a request waits. Whatever happened, the client's answer is the truth: 202 when the
server exists (once), 503 when it does not, and a 503 given while unknown leaves nothing
behind once the database answers again.
"""

from __future__ import annotations

import threading

import psycopg
import pymysql
import pytest
import sqlalchemy as sa

from fabric.api import in_doubt
from fabric.api.compute import servers
from fabric.db.models import Instance, QuotaUsage
from fabric.db.retry import is_deadlock
from tests.unit.api.test_compute import boot, make_flavor, make_image


def _lost_connection() -> sa.exc.OperationalError:
    return sa.exc.OperationalError("COMMIT", None, ConnectionResetError("server closed the connection"),
                                   connection_invalidated=True)


class FlakyDatabase:
    """Engine events making the commit of a transaction that inserted into ``table`` raise a lost
    connection (``commit_then_lose``: after writing it; else without), and, while ``down`` is
    set, every statement raise one."""

    def __init__(self, engine: sa.Engine, commit_then_lose: bool, table: str = "instances") -> None:
        self.down = threading.Event()
        self.commit_then_lose = commit_then_lose
        self.insert = f"INSERT INTO {table} "
        self.lost_commits = 0
        sa.event.listen(engine, "before_cursor_execute", self._before)
        sa.event.listen(engine, "after_cursor_execute", self._after)
        sa.event.listen(engine, "commit", self._commit)

    def _before(self, conn, cursor, statement, *args) -> None:
        if self.down.is_set():
            raise _lost_connection()

    def _after(self, conn, cursor, statement, *args) -> None:
        if statement.startswith(self.insert):
            conn.info["inserted the row"] = True

    def _commit(self, conn) -> None:
        if not conn.info.pop("inserted the row", False):
            return
        self.lost_commits += 1
        if self.commit_then_lose:
            conn.connection.dbapi_connection.commit()
        raise _lost_connection()


def _servers(api, project_id: str) -> dict[str, tuple[bool, str]]:
    with api.db.begin() as session:
        return {row.id: (row.deleted, row.vm_state)
                for row in session.scalars(sa.select(Instance).where(Instance.project_id == project_id))}


def _usage(api, project_id: str) -> dict[str, int]:
    with api.db.begin() as session:
        return {u.resource: u.in_use for u in session.scalars(
            sa.select(QuotaUsage).where(QuotaUsage.project_id == project_id))}


@pytest.fixture
def create(api):
    """(member, boot(status) -> response) for a project that may make servers."""
    member = api.make_member()
    flavor = make_flavor(api, vcpus=2, ram=256)
    image = make_image(api, member.project_id)
    return member, lambda status: boot(api, member, flavor, image, status=status)


def test_a_commit_written_before_the_connection_went_is_answered_202_once(api, create):
    member, send = create
    flaky = FlakyDatabase(api.db.engine, commit_then_lose=True)
    answer = send(202)
    assert flaky.lost_commits == 1
    server_id = answer.json["server"]["id"]
    assert _servers(api, member.project_id) == {server_id: (False, "building")}
    assert _usage(api, member.project_id) == {"instances": 1, "cores": 2, "ram": 256}
    # The scheduler was asked to build it, as for any create.
    assert [kwargs["instance_ids"] for kwargs in api.recorder.named("build_instances")] == [[server_id]]


def test_a_commit_lost_unwritten_is_answered_503_and_leaves_nothing(api, create):
    member, send = create
    flaky = FlakyDatabase(api.db.engine, commit_then_lose=False)
    answer = send(503)
    assert flaky.lost_commits == 1 and answer.headers["Retry-After"]
    assert _servers(api, member.project_id) == {}
    assert _usage(api, member.project_id) == {"instances": 0, "cores": 0, "ram": 0}


def test_a_commit_still_unknown_is_answered_503_and_undone_when_the_database_is_back(api, create, monkeypatch):
    member, send = create
    monkeypatch.setattr(in_doubt, "ANSWER_WITHIN", 0.2)
    flaky = FlakyDatabase(api.db.engine, commit_then_lose=True)
    original_commit = flaky._commit

    def commit_then_go_down(conn) -> None:
        try:
            original_commit(conn)
        except sa.exc.OperationalError:
            flaky.down.set()  # the database goes as the commit's answer is lost, and stays away
            raise

    sa.event.remove(api.db.engine, "commit", flaky._commit)
    sa.event.listen(api.db.engine, "commit", commit_then_go_down)
    send(503)
    undoing = [t for t in threading.enumerate() if t.name.startswith("undo the create of server(s)")]
    assert len(undoing) == 1
    flaky.down.clear()
    undoing[0].join(30)
    assert not undoing[0].is_alive()
    # Written after all, and undone: deleted (it was never placed), its quota given back.
    [(deleted, vm_state)] = _servers(api, member.project_id).values()
    assert deleted and vm_state == "deleted"
    assert _usage(api, member.project_id) == {"instances": 0, "cores": 0, "ram": 0}


# A transaction the database rolled back as a deadlock's victim (MariaDB picks victims among
# concurrent creates taking one project's quota rows) is run again: the client gets its 202 and
# exactly one server; one that stays a victim a 409 and nothing, never a 500.

def _deadlock() -> sa.exc.OperationalError:
    return sa.exc.OperationalError("UPDATE quota_usages", None,
                                   pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock"))


class Victim:
    """Makes the first ``times`` quota reservations fail as a deadlock's victim."""

    def __init__(self, engine: sa.Engine, times: int) -> None:
        self.left = times
        sa.event.listen(engine, "before_cursor_execute", self._before)

    def _before(self, conn, cursor, statement, *args) -> None:
        if statement.startswith("UPDATE quota_usages") and self.left:
            self.left -= 1
            raise _deadlock()


def test_a_create_chosen_as_a_deadlocks_victim_is_run_again_and_made_once(api, create):
    member, send = create
    victim = Victim(api.db.engine, times=servers.DEADLOCK_TRIES - 1)
    server_id = send(202).json["server"]["id"]
    assert victim.left == 0
    assert _servers(api, member.project_id) == {server_id: (False, "building")}
    assert _usage(api, member.project_id) == {"instances": 1, "cores": 2, "ram": 256}


def test_a_create_that_stays_a_victim_is_answered_409_without_a_trace(api, create):
    member, send = create
    Victim(api.db.engine, times=servers.DEADLOCK_TRIES)
    assert "deadlock's victim 3 times" in send(409).json["conflictingRequest"]["message"]
    assert _servers(api, member.project_id) == {}
    assert _usage(api, member.project_id) == {"instances": 0, "cores": 0, "ram": 0}


def test_deadlocks_are_told_from_other_errors_on_both_servers():
    assert is_deadlock(_deadlock())
    assert is_deadlock(sa.exc.OperationalError("UPDATE", None, psycopg.errors.DeadlockDetected("deadlock")))
    assert not is_deadlock(sa.exc.OperationalError("UPDATE", None, pymysql.err.OperationalError(2013, "lost")))
    assert not is_deadlock(sa.exc.OperationalError("UPDATE", None, psycopg.errors.LockNotAvailable("nowait")))
    assert not is_deadlock(sa.exc.IntegrityError("INSERT", None, ValueError("duplicate")))
