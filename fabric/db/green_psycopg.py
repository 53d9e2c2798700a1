"""psycopg connections in an eventlet process: waits parked on the hub, liveness without a round trip.

Both are installed by :class:`fabric.db.Database` on every PostgreSQL connection it opens;
the waits only when the process is green (fabric.cmd.eventlet_entry).
"""

from __future__ import annotations

import functools
from typing import Any

import eventlet
import sqlalchemy as sa

#: The real poll(2), even when the process is green: a check with no wait must not switch
#: to the hub (the green select adds a timer and listeners for a zero timeout).
_select = eventlet.patcher.original("select")


def green_wait(connection: Any, gen: Any, interval: float | None = None, timeout: float | None = None) -> Any:
    """psycopg's wait for one of ``connection``'s operations, parked on eventlet's hub directly.

    psycopg's ``wait_select`` (what the launchers choose, fabric.cmd.eventlet_entry) calls the
    green ``select`` with psycopg's 0.1 s interval: a timer added and cancelled and listeners
    made for every wait, several times the cost of waiting on the socket itself (a fifth of
    ``POST /servers``' CPU under cProfile, two waits per statement). A wait with a timeout
    (psycopg's own cancellation) still goes to psycopg's."""
    from eventlet.green import select as green_select
    from eventlet.hubs import trampoline
    from psycopg import waiting

    fileno = connection.pgconn.socket
    if timeout is not None:
        return waiting.wait(gen, fileno, interval=interval or 0.1, timeout=timeout)
    try:
        wanted = next(gen)
        while True:
            if wanted == waiting.WAIT_R:
                trampoline(fileno, read=True)
                wanted = gen.send(waiting.READY_R)
            elif wanted == waiting.WAIT_W:
                trampoline(fileno, write=True)
                wanted = gen.send(waiting.READY_W)
            else:  # both (a statement bigger than the socket's buffer): the green select
                readable, writable, _ = green_select.select([fileno], [fileno], [])
                wanted = gen.send((waiting.READY_R if readable else 0) | (waiting.READY_W if writable else 0))
    except StopIteration as done:
        return done.value


def make_green(dbapi_connection: Any, _record: Any = None) -> None:
    """Let ``dbapi_connection`` (psycopg) wait through :func:`green_wait` (a pool ``connect`` listener)."""
    dbapi_connection.wait = functools.partial(green_wait, dbapi_connection)


def refuse_if_closing(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """A pool ``checkout`` listener: raise DisconnectionError (the pool then opens another
    connection) for a psycopg connection that is broken, or whose socket is readable while idle.

    An idle connection is owed nothing by the server: bytes or an end of file on it are the
    server closing it (a restart, ``pg_terminate_backend``: PostgreSQL sends its FATAL, then
    closes), so one poll(2) with no wait tells what a ping's round trip would (two checkouts
    per ``POST /servers``, a round trip each, were a tenth of its API CPU). A peer gone without
    a word is noticed by neither before the statement; TCP keepalives end that one
    (fabric.db.engine)."""
    from psycopg import pq

    pgconn = dbapi_connection.pgconn
    if pgconn.status != pq.ConnStatus.OK or pgconn.transaction_status != pq.TransactionStatus.IDLE:
        raise sa.exc.DisconnectionError("the pooled connection is broken or not idle")
    poller = _select.poll()
    poller.register(pgconn.socket, _select.POLLIN | _select.POLLERR | _select.POLLHUP)
    if poller.poll(0):
        raise sa.exc.DisconnectionError("the server is closing the pooled connection (it sent while idle)")
