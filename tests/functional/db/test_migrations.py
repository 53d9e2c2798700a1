"""Migrations go from empty to head and back to empty on every backend, and the
migrated schema is exactly what the models describe."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from fabric.db import Database, migration
from fabric.db.models import Base

BACKENDS = ["sqlite", "postgresql", "mariadb"]


@pytest.fixture(params=BACKENDS)
def empty_db(request, make_empty_database):
    database = Database(make_empty_database(request.param))
    yield database
    database.dispose()


def test_upgrade_to_head_then_down_to_empty(empty_db):
    assert migration.current_revision(empty_db) is None

    before, after = migration.upgrade(empty_db)

    assert before is None
    assert after == migration.head_revision()
    assert set(Base.metadata.tables) <= migration.table_names(empty_db)

    migration.downgrade(empty_db)

    assert migration.current_revision(empty_db) is None
    assert migration.table_names(empty_db) - {"alembic_version"} == set()


def test_migrated_schema_matches_models(empty_db):
    migration.upgrade(empty_db)

    with empty_db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)

    assert differences == [], f"models and migrations disagree: {differences}"


def test_upgrade_is_idempotent(empty_db):
    migration.upgrade(empty_db)
    before, after = migration.upgrade(empty_db)
    assert before == after == migration.head_revision()


def test_expand_then_contract_is_a_full_sync(empty_db):
    """A rolling upgrade's two phases, one after the other, end where ``db sync`` does."""
    migration.upgrade(empty_db, "0005")
    migration.upgrade(empty_db, migration.EXPAND)
    assert migration.pending(empty_db, migration.EXPAND) == []
    assert migration.pending(empty_db) and all(r in migration.pending(empty_db, migration.CONTRACT)
                                               for r in migration.pending(empty_db))
    migration.upgrade(empty_db, migration.CONTRACT)
    assert migration.pending(empty_db) == []
    assert migration.current_revision(empty_db) == migration.head_revision()
