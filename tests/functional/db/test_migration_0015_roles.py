"""Migrations 0015 (expand) and 0015_contract with data in place, on every backend: ``roles``
gains ``domain_id``, names become unique per domain (cloud-wide too until the contract) without
losing a role, a grant or an inference rule (on SQLite the table is swapped in beside the old
one, so no ON DELETE CASCADE fires), and back."""

from __future__ import annotations

import datetime

import pytest
import sqlalchemy as sa

from fabric.db import Database, migration
from tests.functional.db.test_migrations import BACKENDS

NOW = datetime.datetime(2026, 12, 5)


@pytest.fixture(params=BACKENDS)
def db_at_0014(request, make_empty_database):
    database = Database(make_empty_database(request.param))
    migration.upgrade(database, "0014")
    yield database
    database.dispose()


def _tables(conn) -> dict[str, sa.Table]:
    metadata = sa.MetaData()
    return {name: sa.Table(name, metadata, autoload_with=conn)
            for name in ("roles", "projects", "users", "role_assignments", "implied_roles")}


def _seed(db: Database) -> None:
    with db.engine.begin() as conn:
        t = _tables(conn)
        conn.execute(t["roles"].insert(), [{"id": "r1", "name": "reader-ish"}, {"id": "r2", "name": "auditor"}])
        conn.execute(t["projects"].insert(), {"id": "p1", "name": "p1", "domain_id": "default", "description": "",
                                              "enabled": True, "created_at": NOW})
        conn.execute(t["users"].insert(), {"id": "u1", "name": "u1", "domain_id": "default", "password_hash": "x",
                                           "enabled": True, "created_at": NOW})
        conn.execute(t["role_assignments"].insert(), {"user_id": "u1", "project_id": "p1", "role_id": "r1"})
        conn.execute(t["implied_roles"].insert(), {"prior_role_id": "r2", "implied_role_id": "r1"})


def _counts(db: Database) -> dict[str, int]:
    with db.engine.connect() as conn:
        return {name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()
                for name, table in _tables(conn).items()}


def test_domain_roles_arrive_and_leave_with_every_row_kept(db_at_0014):
    _seed(db_at_0014)
    before = _counts(db_at_0014)

    migration.upgrade(db_at_0014, "0015")

    assert _counts(db_at_0014) == before
    with db_at_0014.engine.begin() as conn:
        roles = _tables(conn)["roles"]
        assert dict(conn.execute(sa.select(roles.c.id, roles.c.domain_id)).tuples().all()) == {"r1": "", "r2": ""}
        conn.execute(roles.insert(), {"id": "d0", "name": "domain-only", "domain_id": "default"})
    # Expanded only: a worker of the previous release may run, so names stay unique cloud-wide.
    with pytest.raises(sa.exc.IntegrityError), db_at_0014.engine.begin() as conn:
        conn.execute(_tables(conn)["roles"].insert(), {"id": "d1", "name": "auditor", "domain_id": "default"})

    migration.upgrade(db_at_0014, "0015_contract")

    assert _counts(db_at_0014) == dict(before, roles=before["roles"] + 1)
    with db_at_0014.engine.begin() as conn:
        roles = _tables(conn)["roles"]
        # The same name in two domains (and globally) is allowed...
        conn.execute(roles.insert(), [{"id": "d1", "name": "auditor", "domain_id": "default"},
                                      {"id": "d2", "name": "auditor", "domain_id": "other"}])
    # ... twice in one domain it is not.
    with pytest.raises(sa.exc.IntegrityError), db_at_0014.engine.begin() as conn:
        conn.execute(_tables(conn)["roles"].insert(), {"id": "d3", "name": "auditor", "domain_id": "default"})
    with db_at_0014.engine.begin() as conn:  # a global role's create of the previous release
        conn.execute(sa.text("INSERT INTO roles (id, name) VALUES ('r3', 'plain')"))

    migration.downgrade(db_at_0014, "0006_contract")  # the contract goes first (it needs 0015)
    migration.downgrade(db_at_0014, "0014")

    after = _counts(db_at_0014)
    assert after == dict(before, roles=before["roles"] + 1)  # the domain roles went, r3 stayed
    with pytest.raises(sa.exc.IntegrityError), db_at_0014.engine.begin() as conn:
        conn.execute(_tables(conn)["roles"].insert(), {"id": "r4", "name": "auditor"})
