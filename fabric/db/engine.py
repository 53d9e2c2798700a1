"""Engines and sessions for the shared database.

One :class:`Database` per process: it owns the engine and hands out short
transactions (``with db.begin() as session``). URLs are normalised to the
drivers fabric ships with (psycopg 3 for PostgreSQL, PyMySQL for MariaDB and
MySQL); a SQLite file's directory is created if missing.

A server database may restart under a running process: every pooled
connection is checked when it is checked out (a dead one is replaced: on
PostgreSQL by looking at its socket, fabric.db.green_psycopg, elsewhere by a
ping), an error
:func:`fabric.db.retry.is_connection_error` recognises counts as a disconnect
(SQLAlchemy then drops every connection older than it, not just the one that
failed), and PostgreSQL connections send TCP keepalives so a peer that vanished
without closing them is noticed within about a minute.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import eventlet
import sqlalchemy as sa
from sqlalchemy import event, orm

from fabric.db import green_psycopg
from fabric.db.retry import is_connection_error
from fabric.exception import DatabaseUnavailable, InvalidSetting

if TYPE_CHECKING:
    from fabric.config import Settings

_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
}


def normalize_url(url: str) -> sa.URL:
    """Parse a database URL and pick fabric's driver for its backend.

    Raises InvalidSetting when the URL cannot be parsed or names a backend
    fabric does not support.
    """
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise InvalidSetting(source="settings", section="database", option="url", value=url,
                             reason="not a database URL (postgresql://, mysql://, sqlite:///path)") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed
    if backend not in _DRIVERS:
        raise InvalidSetting(source="settings", section="database", option="url", value=url,
                             reason="unsupported backend; use postgresql, mysql/mariadb or sqlite")
    if "+" not in parsed.drivername:
        parsed = parsed.set(drivername=_DRIVERS[backend])
    return parsed


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_lock_for_update(conn, clauseelement, _multiparams, _params, _options) -> None:
    # Python's sqlite3 opens a transaction only before a write, so a SELECT ... FOR UPDATE
    # (which SQLite does not have) would read outside any transaction, and two
    # read-modify-write transactions at once would lose one's change. Taking the database's
    # write lock first makes them take turns, as the row lock does on the servers.
    if getattr(clauseelement, "_for_update_arg", None) is None:
        return
    dbapi_connection = conn.connection.dbapi_connection
    if not dbapi_connection.in_transaction:
        dbapi_connection.execute("BEGIN IMMEDIATE")


def _mark_disconnects(context: sa.engine.ExceptionContext) -> None:
    # SQLAlchemy's own test misses some (PostgreSQL's "the database system is
    # shutting down" on a live connection, MariaDB's "server shutdown in progress").
    if not context.is_disconnect and is_connection_error(context.original_exception):
        context.is_disconnect = True


#: libpq keepalives: idle seconds before the first probe, seconds between probes, probes.
_PG_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}


def redacted(url: sa.URL | str) -> str:
    """A URL with its password hidden, for messages and logs."""
    if isinstance(url, str):
        try:
            url = sa.make_url(url)
        except sa.exc.ArgumentError:
            return url
    return url.render_as_string(hide_password=True)


class Database:
    """The shared database as one process sees it."""

    def __init__(self, url: str, *, pool_size: int = 10, connect_timeout: int = 10, pre_ping: bool = True) -> None:
        """``pre_ping=False`` skips the check per checkout (on MariaDB and MySQL a round trip):
        only for callers that run every statement through
        :func:`fabric.db.retry.retry_on_disconnect` themselves."""
        self.url = normalize_url(url)
        backend = self.url.get_backend_name()
        kwargs: dict = {"future": True}
        #: Connections this process opens at most (None: SQLite's own pool, not bounded here).
        self.capacity: int | None = None
        if backend == "sqlite":
            database = self.url.database or ""
            if database and database != ":memory:" and not database.startswith("file:"):
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            connect_args: dict = {"connect_timeout": connect_timeout}
            if backend == "postgresql":
                connect_args.update(_PG_KEEPALIVES)
            # PostgreSQL's check is refuse_if_closing, below: no round trip.
            self.capacity = pool_size * 3
            kwargs.update(pool_size=pool_size, max_overflow=self.capacity - pool_size,
                          pool_pre_ping=pre_ping and backend != "postgresql", pool_recycle=3600,
                          isolation_level="READ COMMITTED", connect_args=connect_args)
        self.engine = sa.create_engine(self.url, **kwargs)
        if backend == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "before_execute", _sqlite_lock_for_update)
        else:
            event.listen(self.engine, "handle_error", _mark_disconnects)
        if backend == "postgresql":
            if pre_ping:
                event.listen(self.engine.pool, "checkout", green_psycopg.refuse_if_closing)
            if eventlet.patcher.is_monkey_patched("select"):
                event.listen(self.engine.pool, "connect", green_psycopg.make_green)
        self.sessionmaker = orm.sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        """The database ``settings`` name (``database_url``), with its pool size and connect timeout."""
        return cls(settings.database_url, pool_size=settings.database.pool_size,
                   connect_timeout=settings.database.connect_timeout)

    @property
    def backend(self) -> str:
        """``sqlite``, ``postgresql`` or ``mysql``."""
        return self.url.get_backend_name()

    @contextlib.contextmanager
    def begin(self) -> Iterator[orm.Session]:
        """One short transaction: committed on success, rolled back on error."""
        with self.sessionmaker.begin() as session:
            yield session

    @contextlib.contextmanager
    def read(self) -> Iterator[orm.Session]:
        """A session for reads only, each statement on its own: no BEGIN and no COMMIT, two round
        trips fewer than :meth:`begin` (a host's security-state read: 3.75 -> 3.40 ms of CPU with
        300 members, alternated in one process). What the reads see is the
        same: at READ COMMITTED, which every server connection here runs, each statement of a
        transaction sees what was committed when it started anyway. Never write through it (the
        write would commit at once, alone). On SQLite, a transaction as :meth:`begin` gives."""
        if self.backend == "sqlite":
            with self.sessionmaker.begin() as session:
                yield session
            return
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection, \
                orm.Session(bind=connection, expire_on_commit=False) as session:
            yield session

    @contextlib.contextmanager
    def single_statement(self) -> Iterator[sa.Connection]:
        """A connection for one write that needs no transaction around it (a single UPDATE is
        atomic on its own): on PostgreSQL in autocommit, no BEGIN and no COMMIT sent (two round
        trips of three); elsewhere a transaction committed at the end. Run one write through it:
        two would commit apart."""
        if self.backend == "postgresql":
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                yield connection
        else:
            with self.engine.begin() as connection:
                yield connection

    def check_reachable(self) -> None:
        """Raise DatabaseUnavailable (naming the URL and the cause) if unreachable."""
        try:
            with self.engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
        except sa.exc.DBAPIError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise DatabaseUnavailable(url=redacted(self.url), reason=reason) from None

    def dispose(self) -> None:
        self.engine.dispose()
