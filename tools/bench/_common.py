"""Helpers the benchmarks share: throwaway PostgreSQL databases and RabbitMQ vhosts,
percentiles, and stopping worker processes.

A benchmark script imports this as ``_common`` (its own folder is first on
``sys.path`` when run as ``python tools/bench/<name>.py``), after putting the
repository root on ``sys.path``. Importing it loads only the standard library
(SQLAlchemy and fabric load when a database is made), so a script may import it
before it monkey-patches.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator

POSTGRES_ADMIN_URL = os.environ.get("FABRIC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def rabbitmqctl(*args: str) -> None:
    """Run ``rabbitmqctl -q args``; raises CalledProcessError (with its stderr) when it fails."""
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@contextlib.contextmanager
def rabbit_vhost(prefix: str = "fabric_bench", broker: str = "guest:guest@127.0.0.1:5672") -> Iterator[tuple[str, str]]:
    """A new vhost ``<prefix>_<random>`` on the local RabbitMQ, usable by ``broker``'s user,
    for the block: yields (name, amqp URL); deleted after, whatever happened."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, broker.split(":")[0], ".*", ".*", ".*")
        yield name, f"amqp://{broker}/{name}"
    finally:
        rabbitmqctl("delete_vhost", name)


def percentile(values: list[float], fraction: float) -> float:
    """The value at ``fraction`` (0.5 for the median, 0.99 for p99) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def stop_processes(procs: list[subprocess.Popen], timeout: float = 20.0) -> None:
    """SIGTERM every process still running, then wait for each (SIGKILL after ``timeout`` s)."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def create_postgres_database(prefix: str) -> tuple[str, str]:
    """A new PostgreSQL database ``<prefix>_<random>`` holding fabric's schema: (name, url).

    Drop it with :func:`drop_postgres_database` when done.
    """
    import sqlalchemy as sa

    from fabric.db import Database
    from fabric.db.models import Base

    name = f"{prefix}_{secrets.token_hex(4)}"
    _as_admin(f"CREATE DATABASE {name}")
    url = sa.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    db = Database(url)
    try:
        Base.metadata.create_all(db.engine)
    finally:
        db.dispose()
    return name, url


def drop_postgres_database(name: str) -> None:
    """Drop a database made by :func:`create_postgres_database`, closing its connections."""
    _as_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _as_admin(statement: str) -> None:
    import sqlalchemy as sa

    from fabric.db import Database

    # CREATE/DROP DATABASE cannot run inside a transaction block.
    admin = Database(POSTGRES_ADMIN_URL)
    try:
        with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text(statement))
    finally:
        admin.dispose()
