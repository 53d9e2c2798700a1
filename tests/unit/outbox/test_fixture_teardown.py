"""A test database stops the outboxes left on it before it goes (tests/fixtures/outboxes.py):
their confirmed rows are deleted at once, while the database still exists, and outboxes on
other Database objects keep running."""

from __future__ import annotations

import logging
import types

from fabric.context import RequestContext
from fabric.db import Database
from fabric.rpc import outbox
from fabric.rpc.outbox import Outbox
from tests.fixtures.databases import _schema_database
from tests.fixtures.outboxes import stop_outboxes_of
from tests.fixtures.rpc import wait_for


class Compute:
    """A compute client whose every cast the broker confirms at once."""

    def instance_action(self, ctx, **kwargs):
        pass


def confirmed_cast(db: Database, instance_id: str) -> Outbox:
    """An API outbox on ``db`` holding one confirmed row that waits for its gathered DELETE."""
    box = Outbox(db, "api", types.SimpleNamespace(compute=Compute()))
    with db.begin() as session:
        staged = box.stage(session, "api.instance_action", RequestContext(), host="h1", action="stop_instance",
                           instance_id=instance_id)
    box.send(staged)
    assert box.sent == 1
    return box


def keys(db: Database) -> list[str]:
    return sorted(row["key"] for row in outbox.pending(db))


def test_stopping_a_databases_outboxes_deletes_their_confirmed_rows_at_once(sqlite_db):
    same_file = Database(str(sqlite_db.engine.url))  # another Database object: not stopped
    try:
        left = confirmed_cast(sqlite_db, "i-1")
        running = confirmed_cast(same_file, "i-2")
        assert keys(sqlite_db) == ["i-1", "i-2"], "deleted before DELETE_GATHER"
        stop_outboxes_of(sqlite_db)
        assert keys(sqlite_db) == ["i-2"]
        wait_for(lambda: keys(sqlite_db) == [], what="the other Database's outbox deleting its row")
        stop_outboxes_of(sqlite_db)  # a stopped outbox: nothing to do
        assert left.sent == running.sent == 1
    finally:
        running.stop()
        same_file.dispose()


def test_the_fixture_teardown_deletes_confirmed_rows_before_the_file_goes(_sqlite_template, caplog):
    caplog.set_level(logging.WARNING, logger=outbox.__name__)
    with _schema_database("sqlite", None, {}, _sqlite_template) as database:
        box = confirmed_cast(database, "i-1")
        assert keys(database) == ["i-1"], "deleted before DELETE_GATHER"
    # The deleter ran at teardown, its DELETE succeeded (a failure logs "Could not delete").
    assert box._deleter is None
    assert [r.getMessage() for r in caplog.records] == []
