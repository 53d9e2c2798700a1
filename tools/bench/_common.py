"""Helpers the benchmarks share: throwaway PostgreSQL databases and RabbitMQ vhosts.

A benchmark script imports this as ``_common`` (its own folder is first on
``sys.path`` when run as ``python tools/bench/<name>.py``), after putting the
repository root on ``sys.path``.
"""

from __future__ import annotations

import os
import secrets
import subprocess

import sqlalchemy as sa

from fabric.db import Database
from fabric.db.models import Base

POSTGRES_ADMIN_URL = os.environ.get("FABRIC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP = "amqp://guest:guest@127.0.0.1:5672/"


def rabbitmqctl(*args: str) -> None:
    """Run ``rabbitmqctl -q args``; raises CalledProcessError when it fails."""
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, stdout=subprocess.DEVNULL)


def create_postgres_database(prefix: str) -> tuple[str, str]:
    """A new PostgreSQL database ``<prefix>_<random>`` holding fabric's schema: (name, url).

    Drop it with :func:`drop_postgres_database` when done.
    """
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
    # CREATE/DROP DATABASE cannot run inside a transaction block.
    admin = Database(POSTGRES_ADMIN_URL)
    try:
        with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text(statement))
    finally:
        admin.dispose()
