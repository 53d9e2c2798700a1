"""Schema migrations (Alembic scripts in the top-level ``schema/`` folder), in two branches.

Since revision 0005 the history has two branches, after Keystone's rolling upgrades:

- ``expand``: what workers of the previous release keep working with: new tables, new
  columns that are nullable or have a server default, new indexes, data copied into them.
  Applied first (``fabric-manage db sync --expand``), while the old workers still run.
- ``contract``: what only the previous release needed goes (columns dropped or renamed,
  constraints tightened). Applied last (``fabric-manage db sync --contract``), once every
  worker runs the new release; refused while a worker of another version is up.

A contract migration names the expand migrations it needs in ``depends_on``.
``fabric-manage db sync`` without a phase applies both (a new install, or an upgrade with
every worker stopped). Revisions are shown as the sorted heads joined by ``", "``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from fabric.db.engine import Database

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic is imported where it is used: every worker imports this module to check that the
# database has a schema (table_names), which needs none of it, and importing it costs a
# worker a tenth of its start-up.


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
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(schema_dir()))
    return config


#: Upgrade targets: every branch's head, the expand branch's, the contract branch's.
HEADS, EXPAND, CONTRACT = "heads", "expand@head", "contract@head"


def head_revisions() -> tuple[str, ...]:
    """What the database's version table holds once every migration is applied, sorted: the
    code's heads, less those another head depends on (Alembic records only the latter)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_config())
    heads = set(script.get_heads())
    beneath = {r.revision for head in heads for r in script.iterate_revisions(head, "base") if r.revision != head}
    return tuple(sorted(heads - beneath))


def head_revision() -> str:
    """:func:`head_revisions` as one string (what :func:`current_revision` is once synced)."""
    return ", ".join(head_revisions())


def current_revisions(db: Database) -> tuple[str, ...]:
    """The heads the database is at, sorted (empty: never synced)."""
    from alembic.runtime.migration import MigrationContext

    with db.engine.connect() as connection:
        return tuple(sorted(MigrationContext.configure(connection).get_current_heads()))


def current_revision(db: Database) -> str | None:
    """The revisions the database is at as one string (None: empty, never synced)."""
    return ", ".join(current_revisions(db)) or None


def pending(db: Database, target: str = HEADS) -> list[str]:
    """Revisions ``upgrade(db, target)`` would apply, oldest first."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_config())
    current = current_revisions(db)
    applied: set[str] = set()
    for revision in current:
        applied.update(r.revision for r in script.iterate_revisions(revision, "base"))
    wanted = [r.revision for r in script.iterate_revisions(target, "base")]
    return [r for r in reversed(wanted) if r not in applied]


def upgrade(db: Database, revision: str = HEADS) -> tuple[str | None, str | None]:
    """Bring the schema to ``revision`` (every head by default); returns (before, after) revisions."""
    from alembic import command

    before = current_revision(db)
    _run(db, command.upgrade, revision)
    return before, current_revision(db)


def downgrade(db: Database, revision: str = "base") -> tuple[str | None, str | None]:
    from alembic import command

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
