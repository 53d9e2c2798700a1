"""Column types and helpers that behave the same on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import datetime
import uuid

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

#: Naive UTC timestamps with microseconds on every backend (MariaDB's
#: DATETIME drops them unless asked).
Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

#: JSON documents (MariaDB stores them as checked LONGTEXT).
Json = sa.JSON()


def utcnow() -> datetime.datetime:
    """Now, as a naive UTC datetime (how every timestamp is stored)."""
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def new_uuid() -> str:
    return str(uuid.uuid4())
