"""Database.read(): reads without BEGIN and COMMIT on the servers, and connections back in
the pool as transactional as before (on PostgreSQL and MariaDB; SQLite's is a transaction)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from fabric.db import Database
from fabric.db.models import Flavor


def _in_transaction(session) -> bool:
    """Whether the session's connection is inside a transaction on the server's side, as its
    driver knows it: psycopg by the server's own transaction status, PyMySQL by autocommit."""
    dbapi = session.connection().connection.dbapi_connection
    if hasattr(dbapi, "get_autocommit"):
        return not dbapi.get_autocommit()
    from psycopg.pq import TransactionStatus

    return dbapi.info.transaction_status != TransactionStatus.IDLE


def test_a_read_runs_its_statements_alone_and_sees_what_is_committed(server_db):
    with server_db.begin() as session:
        session.add(Flavor(id="read-1", name="read-1", vcpus=1, memory_mb=64, disk_gb=0))
    with server_db.read() as session:
        assert session.get(Flavor, "read-1").name == "read-1"
        assert not _in_transaction(session)
        # Committed meanwhile by another transaction: the next statement sees it.
        with server_db.begin() as other:
            other.add(Flavor(id="read-2", name="read-2", vcpus=1, memory_mb=64, disk_gb=0))
        assert session.scalar(sa.select(Flavor.name).where(Flavor.id == "read-2")) == "read-2"
        assert not _in_transaction(session)


def test_the_connection_a_read_used_goes_back_transactional(server_db):
    one = Database(server_db.url.render_as_string(hide_password=False), pool_size=1)
    try:
        with one.read() as session:
            session.execute(sa.text("SELECT 1"))
            used = session.connection().connection.dbapi_connection
        with pytest.raises(RuntimeError):
            with one.begin() as session:
                assert session.connection().connection.dbapi_connection is used
                session.add(Flavor(id="never", name="never", vcpus=1, memory_mb=64, disk_gb=0))
                session.flush()
                assert _in_transaction(session)
                raise RuntimeError("changed my mind")
        with one.read() as session:
            assert session.get(Flavor, "never") is None
    finally:
        one.dispose()
