"""Pooled connections the server has dropped are replaced before use, and a transaction
whose connection is killed under it fails as a connection error that a retry gets through
(PostgreSQL, then MariaDB; the server itself keeps running)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from fabric.db import Database, retry
from fabric.db.models import Flavor
from tests.fixtures.databases import SERVER_URLS

pytestmark = pytest.mark.functional


def _session_ids(db: Database) -> set[int]:
    """The server-side ids of every connection ``db``'s pool holds open (each checked out once)."""
    held, ids = [], set()
    try:
        for _ in range(db.engine.pool.size()):
            conn = db.engine.connect()
            held.append(conn)
            query = "SELECT pg_backend_pid()" if db.backend == "postgresql" else "SELECT CONNECTION_ID()"
            ids.add(conn.execute(sa.text(query)).scalar_one())
    finally:
        for conn in held:
            conn.close()
    return ids


def _kill(db: Database, session_ids: set[int]) -> None:
    """End those sessions from another connection, as a server restart would, and return
    only once they have ended.

    PostgreSQL's ``pg_terminate_backend(pid)`` only signals the backend and returns at once, so
    a pre-ping could still be answered by a backend about to exit and the statement after it
    fail; with a timeout it waits until the backend is gone. MariaDB's KILL shuts the idle
    session's socket before it returns."""
    admin = Database(SERVER_URLS["mariadb" if db.backend == "mysql" else "postgresql"])
    try:
        with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for session_id in session_ids:
                if db.backend == "postgresql":
                    ended = conn.execute(sa.text("SELECT pg_terminate_backend(:pid, 10000)"),
                                         {"pid": session_id}).scalar_one()
                    assert ended, f"backend {session_id} still running 10 s after it was told to end"
                else:
                    conn.execute(sa.text(f"KILL {int(session_id)}"))
    finally:
        admin.dispose()


def test_connections_the_server_dropped_are_replaced_before_use(server_db):
    killed = _session_ids(server_db)
    assert len(killed) == server_db.engine.pool.size()
    _kill(server_db, killed)
    # Every pooled connection is dead now; each of these transactions checks one out.
    for n in range(server_db.engine.pool.size() + 1):
        with server_db.begin() as session:
            session.add(Flavor(name=f"after-kill-{n}", vcpus=1, memory_mb=64, disk_gb=1))
    assert not killed & _session_ids(server_db)
    with server_db.begin() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Flavor)) == server_db.engine.pool.size() + 1


def test_a_transaction_whose_connection_is_killed_is_a_connection_error_a_retry_gets_through(server_db):
    attempts = []

    def work() -> int:
        with server_db.begin() as session:
            attempts.append(1)
            session.add(Flavor(name="retried", vcpus=1, memory_mb=64, disk_gb=1))
            session.flush()
            if len(attempts) == 1:
                # The server ends this very session in the middle of the transaction.
                _kill(server_db, {session.connection().exec_driver_sql(
                    "SELECT pg_backend_pid()" if server_db.backend == "postgresql"
                    else "SELECT CONNECTION_ID()").scalar_one()})
            return session.scalar(sa.select(sa.func.count()).select_from(Flavor))

    with pytest.raises(sa.exc.DBAPIError) as err:
        work()
    assert retry.is_connection_error(err.value) and err.value.connection_invalidated
    # Nothing of the killed transaction was written, so running it again is safe here.
    assert retry.retry_on_disconnect(work) == 1
    assert len(attempts) == 2
