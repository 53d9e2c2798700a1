"""``fabric-manage db sync --expand | --contract``: the schema's half of a rolling upgrade."""

from __future__ import annotations

import pytest

from fabric import servicegroup
from fabric.cmd import manage
from fabric.db import Database, migration


@pytest.fixture
def database(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'fabric.sqlite'}"
    monkeypatch.setenv("FABRIC_DATABASE_URL", url)
    db = Database(url)
    migration.upgrade(db, "0005")
    yield db
    db.dispose()


def test_expand_then_contract(database, capsys):
    assert manage.main(["db", "sync", "--expand"]) == 0
    assert migration.pending(database, migration.EXPAND) == [] and migration.pending(database)
    assert "contract migration(s) pending" in (manage.main(["db", "version"]), capsys.readouterr().out)[1]
    assert manage.main(["db", "sync", "--contract"]) == 0
    assert migration.pending(database) == []
    assert manage.main(["db", "sync"]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_contract_is_refused_while_a_worker_of_another_release_is_up(database, capsys):
    manage.main(["db", "sync", "--expand"])
    servicegroup.register(database, host="h1", binary="fabric-compute", topic="compute", version="0.0.9")
    assert manage.main(["db", "sync", "--contract"]) == 2
    assert "fabric-compute on h1 (0.0.9)" in capsys.readouterr().err
    assert migration.pending(database, migration.CONTRACT)  # nothing was applied
