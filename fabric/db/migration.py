"""Schema migrations (Alembic scripts in the top-level ``schema/`` folder)."""

from __future__ import annotations

import sys
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from fabric.db.engine import Database


def schema_dir() -> Path:
    """Where the migration scripts are: the source tree, or the installed data files."""
    candidates = [
        Path(__file__).resolve().parents[2] / "schema",
        Path(sys.prefix) / "share" / "cloudfabric" / "schema",
    ]
    for candidate in candidates:
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError(f"fabric's schema/ folder is not at any of {candidates}")


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(schema_dir()))
    return config


def head_revision() -> str:
    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(db: Database) -> str | None:
    """The revision the database is at (None: empty, never synced)."""
    with db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(db: Database, revision: str = "head") -> tuple[str | None, str]:
    """Bring the schema to ``revision``; returns (before, after) revisions."""
    before = current_revision(db)
    _run(db, command.upgrade, revision)
    return before, current_revision(db)


def downgrade(db: Database, revision: str = "base") -> tuple[str | None, str | None]:
    before = current_revision(db)
    _run(db, command.downgrade, revision)
    return before, current_revision(db)


def _run(db: Database, fn, revision: str) -> None:
    config = _config()
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        fn(config, revision)


def table_names(db: Database) -> set[str]:
    return set(sa.inspect(db.engine).get_table_names())
