"""A server create whose transaction the database rolls back as a deadlock's victim is run again
(MariaDB picks victims among concurrent creates taking one project's quota rows): the client
gets its 202 and exactly one server; one that stays a victim a 409 and nothing, never a 500."""

from __future__ import annotations

import psycopg
import pymysql
import pytest
import sqlalchemy as sa

from fabric.api.compute import servers
from fabric.db.retry import is_deadlock
from tests.unit.api.test_compute import boot, make_flavor, make_image
from tests.unit.api.test_create_in_doubt import _servers, _usage


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


@pytest.fixture
def create(api):
    member = api.make_member()
    flavor = make_flavor(api, vcpus=2, ram=256)
    image = make_image(api, member.project_id)
    return member, lambda status: boot(api, member, flavor, image, status=status)


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
