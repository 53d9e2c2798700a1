"""PostgreSQL connections as fabric's Database keeps them: a pooled connection is checked by
its socket, not a round trip (a healthy one is kept, one the server ended is replaced), and
a connection whose waits are parked on eventlet's hub runs statements of any size and keeps
the server's errors."""

from __future__ import annotations

import eventlet
import psycopg
import pytest
import sqlalchemy as sa

from fabric.db import green_psycopg
from fabric.db.models import Flavor
from tests.functional.db.test_connection_loss import _kill

pytestmark = pytest.mark.functional


def _statements(db) -> list[str]:
    seen: list[str] = []
    sa.event.listen(db.engine, "before_cursor_execute", lambda *args: seen.append(args[2]))
    return seen


def test_a_healthy_pooled_connection_is_kept_and_no_ping_is_sent(postgres_db):
    connects: list[int] = []
    sa.event.listen(postgres_db.engine.pool, "connect", lambda *args: connects.append(1))
    seen = _statements(postgres_db)
    for n in range(20):
        with postgres_db.begin() as session:
            session.add(Flavor(name=f"kept-{n}", vcpus=1, memory_mb=64, disk_gb=1))
    assert len(connects) <= 1  # the one connection the pool may not have held yet
    assert not any(s.strip().upper() == "SELECT 1" for s in seen)


def test_a_connection_the_server_ended_is_refused_at_checkout(postgres_db):
    with postgres_db.engine.connect() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        raw = conn.connection.dbapi_connection
    _kill(postgres_db, {pid})
    # The server has sent its FATAL and closed by the time the idle socket turns readable.
    for _ in range(200):
        try:
            green_psycopg.refuse_if_closing(raw, None, None)
        except sa.exc.DisconnectionError:
            break
        eventlet.sleep(0.01)
    else:
        pytest.fail("a connection whose backend was terminated passed the checkout check")
    with postgres_db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() != pid


def test_a_green_connection_runs_small_and_large_statements_and_keeps_errors(postgres_db):
    with postgres_db.engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        green_psycopg.make_green(raw)
        try:
            assert conn.exec_driver_sql("SELECT 41 + 1").scalar_one() == 42
            # Bigger than a socket buffer: written in several waits for the socket.
            big = "x" * (4 * 1024 * 1024)
            assert conn.execute(sa.text("SELECT length(:v)"), {"v": big}).scalar_one() == len(big)
            with pytest.raises(sa.exc.ProgrammingError) as err:
                conn.exec_driver_sql("SELECT * FROM no_such_table")
            assert isinstance(err.value.orig, psycopg.errors.UndefinedTable)
            conn.rollback()
            assert conn.exec_driver_sql("SELECT 1 + 1").scalar_one() == 2
        finally:
            del raw.wait  # back to psycopg's own wait for the next user of this pooled connection
