"""fabric.db.retry: which errors mean "the database is unreachable", and running work again."""

from __future__ import annotations

import psycopg
import pymysql
import pytest
import sqlalchemy as sa

from fabric.db import retry
from fabric.exception import Conflict, DatabaseUnavailable, FabricError


def refused() -> sa.exc.OperationalError:
    """A real error of a database that refuses connections (nothing listens on loopback port 1)."""
    engine = sa.create_engine("postgresql+psycopg://fabric@127.0.0.1:1/fabric", poolclass=sa.pool.NullPool)
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as exc:
        return exc
    finally:
        engine.dispose()
    raise AssertionError("a connection to port 1 was accepted")


def wrapped(orig: Exception) -> sa.exc.DBAPIError:
    """``orig`` as SQLAlchemy wraps a driver's error from a statement."""
    return sa.exc.DBAPIError.instance("SELECT 1", {}, orig, type(orig).__mro__[1])


def sqlite_error() -> sa.exc.OperationalError:
    engine = sa.create_engine("sqlite://")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT * FROM no_such_table"))
    except sa.exc.OperationalError as exc:
        return exc
    finally:
        engine.dispose()
    raise AssertionError("the query ran")


@pytest.mark.parametrize("error", [
    pytest.param(lambda: refused(), id="refused"),
    pytest.param(lambda: wrapped(psycopg.errors.AdminShutdown("terminating connection due to administrator "
                                                              "command")), id="pg-admin-shutdown"),
    pytest.param(lambda: wrapped(psycopg.errors.CannotConnectNow("the database system is starting up")),
                 id="pg-starting-up"),
    pytest.param(lambda: wrapped(psycopg.OperationalError("server closed the connection unexpectedly")),
                 id="pg-closed"),
    pytest.param(lambda: wrapped(psycopg.InterfaceError("the connection is closed")), id="pg-interface"),
    pytest.param(lambda: wrapped(pymysql.err.OperationalError(2013, "Lost connection to server during query")),
                 id="mysql-lost"),
    pytest.param(lambda: wrapped(pymysql.err.OperationalError(2003, "Can't connect to MySQL server")),
                 id="mysql-refused"),
    pytest.param(lambda: wrapped(pymysql.err.OperationalError(1053, "Server shutdown in progress")),
                 id="mysql-shutdown"),
    pytest.param(lambda: DatabaseUnavailable(url="db", reason="down"), id="fabric-unavailable"),
])
def test_lost_refused_and_restarting_databases_are_connection_errors(error):
    exc = error()
    assert retry.is_connection_error(exc)
    # An error raised *from* one (a translation) is one too.
    try:
        raise FabricError("could not finish") from exc
    except FabricError as translated:
        assert retry.is_connection_error(translated)


@pytest.mark.parametrize("error", [
    pytest.param(lambda: sqlite_error(), id="sqlite-no-table"),
    pytest.param(lambda: wrapped(psycopg.errors.DeadlockDetected("deadlock detected")), id="pg-deadlock"),
    pytest.param(lambda: wrapped(psycopg.errors.LockNotAvailable("could not obtain lock")), id="pg-lock"),
    pytest.param(lambda: wrapped(psycopg.errors.UniqueViolation("duplicate key")), id="pg-unique"),
    pytest.param(lambda: wrapped(pymysql.err.OperationalError(1213, "Deadlock found")), id="mysql-deadlock"),
    pytest.param(lambda: wrapped(pymysql.err.OperationalError(1205, "Lock wait timeout")), id="mysql-lock"),
    pytest.param(lambda: Conflict(reason="busy"), id="fabric-conflict"),
    pytest.param(lambda: RuntimeError("disk on fire"), id="other"),
])
def test_errors_of_the_statement_itself_are_not_connection_errors(error):
    assert not retry.is_connection_error(error())


def test_an_error_merely_raised_while_handling_a_lost_connection_is_not_one():
    # Only an explicit ``raise ... from`` says "this is that failure"; a new error raised in
    # an except block (a Conflict after giving up, say) is the code's own decision.
    try:
        try:
            raise refused()
        except sa.exc.OperationalError:
            raise Conflict(reason="gave up") from None
    except Conflict as exc:
        assert not retry.is_connection_error(exc)


def test_describe_gives_the_drivers_first_line_not_the_statement():
    assert "127.0.0.1" in retry.describe(refused()) and "SELECT" not in retry.describe(refused())
    assert retry.describe(DatabaseUnavailable(url="db", reason="it is down")) == "it is down"


class Flaky:
    """Work that fails with a lost connection ``failures`` times, then answers."""

    def __init__(self, failures: int, error=refused) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error()
        return "done"


class Pauses:
    """Records the pauses asked for instead of waiting; gives up after ``limit`` if given."""

    def __init__(self, limit: int | None = None) -> None:
        self.asked: list[float] = []
        self.limit = limit

    def __call__(self, seconds: float) -> bool:
        self.asked.append(seconds)
        return self.limit is not None and len(self.asked) >= self.limit


def test_work_failing_on_lost_connections_runs_again_with_growing_pauses():
    work, pauses = Flaky(8), Pauses()
    assert retry.retry_on_disconnect(work, pause=pauses) == "done"
    assert work.calls == 9 and len(pauses.asked) == 8
    # Doubling from FIRST_PAUSE, jittered by at most a quarter, never above LONGEST_PAUSE.
    assert retry.FIRST_PAUSE * 0.75 <= pauses.asked[0] <= retry.FIRST_PAUSE
    assert all(b > a for a, b in zip(pauses.asked[:5], pauses.asked[1:6], strict=True))
    assert max(pauses.asked) <= retry.LONGEST_PAUSE
    assert pauses.asked[-1] >= retry.LONGEST_PAUSE * 0.75


def test_other_errors_are_not_run_again():
    work, pauses = Flaky(1, error=lambda: wrapped(psycopg.errors.UniqueViolation("duplicate key"))), Pauses()
    with pytest.raises(sa.exc.DBAPIError):
        retry.retry_on_disconnect(work, pause=pauses)
    assert work.calls == 1 and pauses.asked == []


def test_giving_up_raises_database_unavailable_from_the_last_error():
    work = Flaky(1000)
    with pytest.raises(DatabaseUnavailable) as err:
        retry.retry_on_disconnect(work, pause=Pauses(limit=3))
    assert work.calls == 3
    assert isinstance(err.value.__cause__, sa.exc.OperationalError)
    assert "127.0.0.1" in err.value.fields["reason"] and err.value.code == 503
    # A time limit: with none left, the first failure is the last.
    work = Flaky(1000)
    with pytest.raises(DatabaseUnavailable):
        retry.retry_on_disconnect(work, give_up_after=0.0, pause=Pauses())
    assert work.calls == 1

