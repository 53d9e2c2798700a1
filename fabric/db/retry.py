"""Surviving a database restart: what a lost connection looks like, and running work again.

:func:`is_connection_error` says whether an error means the database could not
be reached (a connection refused, closed under a statement, or a server
shutting down or starting up), as opposed to an error the statement itself
caused (a constraint, a deadlock, bad SQL): the first kind goes away by
waiting, the second does not.

:func:`retry_on_disconnect` is the one retry loop: it runs a unit of work
again, after a growing pause, each time it fails on a lost connection. Only
work that is safe to run twice may go through it, because a connection lost
during COMMIT leaves unknown whether the first run was written:

* a read, or a compare-and-swap transition *together with the guard that
  recognises its own earlier success* (an RPC handler that starts by checking
  the row's state, as every worker handler does) is safe;
* a bare compare-and-swap retried on its own is not quite: if the first COMMIT
  was written, the retry finds the row moved and reports a conflict;
* an insert without a natural key (a fault row, an instance row the API
  creates) may be written twice: it is not retried here.

That is why the workers retry whole handlers (:mod:`fabric.rpc.server`), and
the API answers 503 with Retry-After (:mod:`fabric.api.errors`) and lets the
client decide, instead of retrying single statements.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

import eventlet
import sqlalchemy as sa

from fabric.exception import DatabaseUnavailable

LOG = logging.getLogger(__name__)

T = TypeVar("T")

#: First pause after a lost connection, and the longest: a restarted database is
#: noticed within about this long (a pause is jittered by up to a quarter).
FIRST_PAUSE = 0.05
LONGEST_PAUSE = 2.0

# PostgreSQL SQLSTATEs that mean "no usable server here right now": class 08
# (connection exception), admin_shutdown (a fast or smart shutdown terminating
# sessions), crash_shutdown, cannot_connect_now (starting up or shutting down).
_PG_UNREACHABLE_CLASS = "08"
_PG_UNREACHABLE_STATES = frozenset({"57P01", "57P02", "57P03"})
# MySQL/MariaDB client and server codes for the same: can't connect (local,
# TCP), server gone away, lost connection during query, server shutdown in
# progress, connection killed, lost connection (TLS), disconnected for inactivity.
_MYSQL_UNREACHABLE_CODES = frozenset({2002, 2003, 2006, 2013, 1053, 1927, 2055, 4031})


def is_connection_error(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or an error it was raised ``from``) means the database could not be reached.

    True for :class:`~fabric.exception.DatabaseUnavailable`, for a SQLAlchemy
    error SQLAlchemy itself found to be a disconnect, and for PostgreSQL
    (psycopg) and MariaDB/MySQL (PyMySQL) errors of a refused, lost or closed
    connection or of a server shutting down or starting up. False for
    everything else, deadlocks and lock timeouts included (they are the
    statement's own business).
    """
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, DatabaseUnavailable):
            return True
        if isinstance(exc, sa.exc.DBAPIError):
            if exc.connection_invalidated or _driver_says_unreachable(exc.orig):
                return True
        elif _driver_says_unreachable(exc):
            return True
        exc = exc.__cause__
        seen += 1
    return False


#: A transaction the database chose as a deadlock's victim, and rolled back whole: PostgreSQL's
#: deadlock_detected, MariaDB/MySQL's ER_LOCK_DEADLOCK.
_PG_DEADLOCK = "40P01"
_MYSQL_DEADLOCK = 1213


def is_deadlock(exc: BaseException | None) -> bool:
    """Whether ``exc`` says the database rolled the transaction back as a deadlock's victim:
    nothing of it was written, and running the whole transaction again may succeed."""
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    if orig is None:
        return False
    if type(orig).__module__.startswith("psycopg"):
        return getattr(orig, "sqlstate", None) == _PG_DEADLOCK
    if type(orig).__module__.startswith("pymysql"):
        return bool(orig.args) and orig.args[0] == _MYSQL_DEADLOCK
    return False


def _driver_says_unreachable(error: BaseException | None) -> bool:
    if error is None:
        return False
    module = type(error).__module__
    if module.startswith("psycopg"):
        import psycopg

        if not isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError)):
            return False
        sqlstate = getattr(error, "sqlstate", None)
        # No SQLSTATE: the failure is the connection's own (refused, closed, broken).
        return (sqlstate is None or sqlstate.startswith(_PG_UNREACHABLE_CLASS)
                or sqlstate in _PG_UNREACHABLE_STATES)
    if module.startswith("pymysql"):
        import pymysql

        if isinstance(error, pymysql.err.InterfaceError):
            return True  # PyMySQL raises it for a connection it has closed
        if isinstance(error, pymysql.err.OperationalError):
            code = error.args[0] if error.args else None
            return code in _MYSQL_UNREACHABLE_CODES
    return False


def describe(exc: BaseException) -> str:
    """The first line of what the driver said about a connection error (without
    SQLAlchemy's statement dump), found along the ``raise ... from`` chain."""
    found = exc
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, DatabaseUnavailable):
            return str(cause.fields.get("reason") or cause.message)
        if isinstance(cause, sa.exc.DBAPIError) or _driver_says_unreachable(cause):
            found = cause.orig if isinstance(cause, sa.exc.DBAPIError) and cause.orig is not None else cause
            break
        cause = cause.__cause__
    text = str(found).strip()
    return text.splitlines()[0] if text else type(found).__name__


def pauses() -> Callable[[], float]:
    """A source of pauses growing from FIRST_PAUSE to LONGEST_PAUSE, each jittered."""
    state = {"next": FIRST_PAUSE}

    def next_pause() -> float:
        pause = state["next"]
        state["next"] = min(LONGEST_PAUSE, pause * 2)
        return pause * random.uniform(0.75, 1.0)

    return next_pause


def _sleep(seconds: float) -> bool:
    eventlet.sleep(seconds)
    return False


def retry_on_disconnect(work: Callable[[], T], *, give_up_after: float | None = None,
                        pause: Callable[[float], bool] = _sleep,
                        what: str | Callable[[], str] = "a transaction") -> T:
    """``work()``, run again after a pause each time it fails on a lost connection.

    ``work`` must be safe to run twice (see the module docstring). Pauses grow
    from :data:`FIRST_PAUSE` to :data:`LONGEST_PAUSE`; ``pause(seconds)``
    waits (default: sleeps on the eventlet hub) and returns True to give up
    early. Errors that are not connection errors (:func:`is_connection_error`)
    propagate at once. Raises DatabaseUnavailable, naming what the driver
    said last, once ``give_up_after`` seconds have passed or ``pause`` gave up.
    ``what`` names the work in the log, or returns its name (asked only on a failure).

    The first attempt costs little more than ``work()``: the pauses are set up, and the
    name made, once it has failed (every RPC handler and fanout runs through here).
    """
    started = time.monotonic()
    try:
        return work()
    except Exception as exc:
        if not is_connection_error(exc):
            raise
        failed = exc
    name = what() if callable(what) else what
    next_pause = pauses()
    failures = 0
    while True:
        failures += 1
        reason = describe(failed)
        if failures == 1:
            LOG.warning("%s could not reach the database (%s); running it again when it answers", name, reason)
        seconds = next_pause()
        if give_up_after is not None and time.monotonic() - started + seconds > give_up_after:
            raise DatabaseUnavailable(f"The database is unreachable: {reason}", url="", reason=reason) from failed
        if pause(seconds):
            raise DatabaseUnavailable(f"The database is unreachable: {reason}", url="", reason=reason) from failed
        try:
            result = work()
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            failed = exc
            continue
        LOG.info("%s went through after %d failed attempt(s) over %.1fs without the database",
                 name, failures, time.monotonic() - started)
        return result
