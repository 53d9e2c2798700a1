"""Worker processes on memory://: SIGTERM finishes in-flight work and exits 0; launchers."""

from __future__ import annotations

import re
import signal
import sys

import sqlalchemy as sa

from fabric import servicegroup
from fabric.cmd import workers
from fabric.db import Database
from tests.fixtures.processes import REPO, python_module, wait_until
from tests.fixtures.recorder import ATTEMPTS, EFFECTS, create_effect_tables


def wait_for_rows(engine, table, count, worker):
    def enough():
        with engine.connect() as conn:
            rows = conn.execute(sa.select(table)).all()
        return rows if len(rows) >= count else None

    return wait_until(enough, what=f"{count} {table.name} row(s)", workers=[worker])


def spawn_recorder(spawn, db, effects_url: str, key: str, release, graceful_timeout: float):
    """A recorder worker (host w1, memory://) that casts ``record(key)`` to itself at start; its
    handler waits for the file ``release``."""
    return spawn(python_module("tests.fixtures.recorder_worker", "--effects", effects_url,
                               "--cast-to-self", key, "--release", str(release)),
                 env={"FABRIC_DATABASE_URL": db.url.render_as_string(hide_password=False),
                      "FABRIC_DEFAULT_HOST": "w1", "FABRIC_RPC_TRANSPORT_URL": "memory://",
                      "FABRIC_SERVICE_ADVERTISE_ADDRESS": "127.0.0.1",
                      "FABRIC_SERVICE_GRACEFUL_SHUTDOWN_TIMEOUT": str(graceful_timeout)},
                 name="recorder")


def test_sigterm_finishes_the_handler_in_flight_and_exits_0(spawn, sqlite_db, tmp_path):
    effects_url = f"sqlite:///{tmp_path / 'effects.sqlite'}"
    effects = create_effect_tables(effects_url)
    release = tmp_path / "release"
    worker = spawn_recorder(spawn, sqlite_db, effects_url, "in-flight", release, graceful_timeout=30)
    wait_for_rows(effects, ATTEMPTS, 1, worker)          # the handler is running
    worker.signal(signal.SIGTERM)
    worker.wait_for_log("stopped consuming")             # no new messages are taken
    with effects.connect() as conn:
        assert conn.execute(sa.select(EFFECTS)).all() == []  # still in flight
    release.touch()                                      # let the handler finish
    assert worker.wait(30) == 0, worker.log()
    with effects.connect() as conn:
        assert conn.execute(sa.select(EFFECTS.c.key, EFFECTS.c.host)).all() == [("in-flight", "w1")]
    assert "Stopped fabric-recorder on host w1" in worker.log()
    # Once started, the process moved what it made while starting out of the collector's reach.
    assert re.search(r"Froze the [1-9]\d{3,} objects alive after start-up", worker.log()), worker.log()
    [row] = servicegroup.list_services(sqlite_db)
    assert row.binary == "fabric-recorder" and row.capabilities["records"] is True


def test_fabric_all_syncs_an_empty_database_runs_every_worker_and_stops(spawn, tmp_path):
    data_dir = tmp_path / "data"
    worker = spawn([sys.executable, str(REPO / "bin/fabric-all")],
                   env={"FABRIC_DEFAULT_DATA_DIR": str(data_dir), "FABRIC_DEFAULT_HOST": "allinone",
                        "FABRIC_SERVICE_ADVERTISE_ADDRESS": "192.0.2.7",
                        "FABRIC_API_PORT": "0", "FABRIC_OBJECTSTORE_PORT": "0"},  # any free port: tests run side by side
                   name="fabric-all")
    for binary in workers.ALL_IN_ONE:
        worker.wait_for_log(f"Started {binary} on host allinone")
    assert "Created the schema" in worker.log()
    db = Database(f"sqlite:///{data_dir / 'fabric.sqlite'}")
    try:
        services = servicegroup.list_services(db)
        assert {s.binary for s in services} == set(workers.ALL_IN_ONE)
        assert all(s.up and s.host == "allinone" and s.address == "192.0.2.7" for s in services)
    finally:
        db.dispose()
    worker.signal(signal.SIGINT)  # Ctrl-C stops it as cleanly as SIGTERM
    assert worker.wait(30) == 0, worker.log()
    assert "Stopped fabric-api on host allinone" in worker.log()


def test_a_worker_launcher_refuses_a_database_without_schema(spawn, tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    worker = spawn([sys.executable, str(REPO / "bin/fabric-ipam")], env={"FABRIC_DATABASE_URL": url}, name="ipam")
    assert worker.wait(30) == 2
    lines = worker.log().strip().splitlines()
    assert lines[-1] == (f"fabric-ipam: error: Database {url} has no fabric schema yet: "
                         "run `fabric-manage db sync` first.")


def test_sigterm_waits_for_in_flight_work_no_longer_than_the_graceful_timeout(spawn, sqlite_db, tmp_path):
    effects_url = f"sqlite:///{tmp_path / 'effects.sqlite'}"
    effects = create_effect_tables(effects_url)
    never = tmp_path / "never-created"
    worker = spawn_recorder(spawn, sqlite_db, effects_url, "stuck", never, graceful_timeout=0.5)
    wait_for_rows(effects, ATTEMPTS, 1, worker)
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log()
    assert "in-flight work did not finish within" in worker.log()
    with effects.connect() as conn:
        assert conn.execute(sa.select(EFFECTS)).all() == []
