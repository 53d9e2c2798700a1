"""fabric.api.quota's cost on the hot path: what a POST /servers reservation sends to the database."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from fabric import exception
from fabric.api import quota
from fabric.db.models import Project, QuotaUsage


@pytest.fixture
def project(sqlite_db):
    with sqlite_db.begin() as session:
        session.add(Project(id="p1", name="p1"))
    return "p1"


@pytest.fixture
def any_project(db):
    """Project p1 in ``db`` (each backend in turn)."""
    with db.begin() as session:
        session.add(Project(id="p1", name="p1"))
    return "p1"


def statements(db):
    """The SQL statements ``db`` runs from now on (a list that grows)."""
    seen: list[str] = []
    sa.event.listen(db.engine, "before_cursor_execute", lambda conn, cursor, sql, *rest: seen.append(sql))
    return seen


def in_use(db, project_id):
    with db.begin() as session:
        return dict(session.execute(sa.select(QuotaUsage.resource, QuotaUsage.in_use)
                                    .where(QuotaUsage.project_id == project_id)).all())


def test_three_resources_reserved_in_one_statement_and_known_rows_never_looked_up_again(db, any_project):
    """One guarded UPDATE returning what it took where the backend can (PostgreSQL, SQLite);
    MariaDB, whose UPDATE returns nothing, reads first."""
    deltas = {"instances": 1, "cores": 2, "ram": 512}
    quota.ensure_usage_rows(db, any_project, deltas)
    seen = statements(db)
    quota.ensure_usage_rows(db, any_project, deltas)
    assert seen == []  # the rows are known to exist: no transaction at all
    with db.begin() as session:
        quota.reserve(session, any_project, deltas)
    work = [s.split()[0] for s in seen if s.split()[0] in ("SELECT", "UPDATE")]
    assert work == (["UPDATE"] if db.backend != "mysql" else ["SELECT", "UPDATE"]), seen
    assert in_use(db, any_project) == {"instances": 1, "cores": 2, "ram": 512}


def test_a_refusal_names_the_first_resource_refused_with_its_usage_and_limit(db, any_project):
    quota.set_limit(db, any_project, "cores", 4)
    quota.set_limit(db, any_project, "ram", 1024)
    quota.ensure_usage_rows(db, any_project, ["instances", "cores", "ram"])
    with db.begin() as session:
        quota.reserve(session, any_project, {"instances": 1, "cores": 3, "ram": 512})
    # cores and ram both refused, instances taken by the UPDATE: cores (sorted first) is named,
    # with its usage and limit before this request; the rollback gives instances back.
    with pytest.raises(exception.QuotaExceeded) as err, db.begin() as session:
        quota.reserve(session, any_project, {"instances": 1, "cores": 2, "ram": 1024})
    assert (err.value.fields["resource"], err.value.fields["requested"], err.value.fields["in_use"],
            err.value.fields["limit"]) == ("cores", 2, 3, 4)
    assert in_use(db, any_project) == {"instances": 1, "cores": 3, "ram": 512}


def test_the_one_update_honours_own_limits_defaults_and_unlimited(sqlite_db, project):
    quota.set_limit(sqlite_db, project, "cores", 4)
    quota.set_limit(sqlite_db, project, "ram", -1)
    quota.ensure_usage_rows(sqlite_db, project, ["instances", "cores", "ram"])
    with sqlite_db.begin() as session:
        quota.reserve(session, project, {"instances": 10, "cores": 4, "ram": 10**9})
    with pytest.raises(exception.QuotaExceeded) as err, sqlite_db.begin() as session:
        quota.reserve(session, project, {"instances": 1, "ram": 1})
    assert err.value.fields["resource"] == "instances"  # the default limit, 10
    assert (err.value.fields["in_use"], err.value.fields["limit"]) == (10, 10)
    assert in_use(sqlite_db, project) == {"instances": 10, "cores": 4, "ram": 10**9}  # nothing half-taken


def test_a_row_gone_since_it_was_known_is_refused_then_created_again(sqlite_db, project):
    quota.ensure_usage_rows(sqlite_db, project, ["instances"])
    with sqlite_db.begin() as session:
        session.execute(sa.delete(QuotaUsage))
    with pytest.raises(exception.QuotaExceeded), sqlite_db.begin() as session:
        quota.reserve(session, project, {"instances": 1})
    quota.ensure_usage_rows(sqlite_db, project, ["instances"])
    with sqlite_db.begin() as session:
        quota.reserve(session, project, {"instances": 1})
    assert in_use(sqlite_db, project) == {"instances": 1}
