"""The API killed between committing a create and the broker's confirm: nothing is lost.

Every worker is its own process (``bin/fabric-api``, ``-scheduler``, ``-ipam``,
``-objectstore``, a ``fabric-network`` and a ``fabric-compute`` with fake drivers) over RabbitMQ and
PostgreSQL. The API runs with ``OUTBOX_KILL_AFTER_COMMIT=api.schedule``, so the first
``POST /servers`` commits the server and its outbox row and the API kills itself
(SIGKILL) before it publishes the scheduler's cast. Then the server sits in BUILD with
its cast in the outbox and nothing sent; the API is started again (without the fault),
its relay sends what the dead one left, and the server goes ACTIVE: one instance, one
claim, an empty outbox.
"""

from __future__ import annotations

import http.client
import os
import signal
import sys

import pytest
import sqlalchemy as sa

from fabric.api.bootstrap import bootstrap
from fabric.compute import states
from fabric.db import Database
from fabric.db.models import ComputeNode, Instance, OutboxCast
from fabric.rpc import outbox
from tests.fixtures.databases import create_schema_database
from tests.fixtures.processes import REPO, free_port, wait_until
from tests.functional.resilience.test_database_restart import COMPUTE, PASSWORD, Api, _prepare

pytestmark = [pytest.mark.functional]


def _launch(spawn, binary: str, host: str, env: dict[str, str], name: str | None = None):
    # The launchers refuse FABRIC_ variables they do not know; ``env -u`` drops the test's own.
    unset = [arg for key in sorted(os.environ) if key.startswith("FABRIC_TEST_") for arg in ("-u", key)]
    worker = spawn(["env", *unset, sys.executable, str(REPO / "bin" / binary)],
                   env=env | {"FABRIC_DEFAULT_HOST": host}, name=name or f"{binary}-{host}")
    worker.wait_for_log(f"Started {binary} on host {host}", timeout=120)
    return worker


def _instances(db: Database, project: str) -> list[Instance]:
    with db.begin() as session:
        rows = session.scalars(sa.select(Instance).where(Instance.project_id == project)).all()
        session.expunge_all()
        return rows


def test_a_create_committed_by_an_api_killed_before_the_confirm_is_built_after_restart(
        database_servers, spawn, tmp_path, rabbit_vhost):
    db = Database(create_schema_database(database_servers, "postgresql"))
    try:
        bootstrap(db, PASSWORD)
        port = free_port()
        env = {"FABRIC_RPC_TRANSPORT_URL": rabbit_vhost,
               "FABRIC_DATABASE_URL": db.url.render_as_string(hide_password=False),
               "FABRIC_DEFAULT_DATA_DIR": str(tmp_path / "data"), "FABRIC_COMPUTE_DRIVER": "fake",
               "FABRIC_NETWORK_DRIVER": "fake", "FABRIC_SERVICE_ADVERTISE_ADDRESS": "127.0.0.1",
               "FABRIC_SERVICE_REPORT_INTERVAL": "2", "FABRIC_COMPUTE_RESOURCE_REPORT_INTERVAL": "2",
               "FABRIC_DATABASE_POOL_SIZE": "3", "FABRIC_API_LISTEN": "127.0.0.1", "FABRIC_API_PORT": str(port),
               "FABRIC_OBJECTSTORE_LISTEN": "127.0.0.1", "FABRIC_OBJECTSTORE_PORT": str(free_port()),
               # One API process: the one that commits the create is the one that kills itself.
               "FABRIC_API_WORKERS": "1"}
        workers = [_launch(spawn, binary, host, env) for binary, host in (
            ("fabric-ipam", "ctl"), ("fabric-scheduler", "ctl"), ("fabric-objectstore", "ctl"),
            ("fabric-network", "h1"), ("fabric-compute", "h1"))]
        doomed = _launch(spawn, "fabric-api", "ctl", env | {"OUTBOX_KILL_AFTER_COMMIT": "api.schedule"},
                         name="fabric-api-doomed")
        wait_until(lambda: _host_reported(db), 60, "the compute host to report", workers=workers)
        api = Api(port)
        project, body = _prepare(api)

        with pytest.raises((ConnectionError, http.client.HTTPException)):
            api.request("POST", f"{COMPUTE}/servers", {"server": dict(body["server"], name="survivor")})
        assert doomed.wait(30) == -signal.SIGKILL
        # Committed, and never sent: the server waits in BUILD with its cast in the outbox.
        [instance] = _instances(db, project)
        assert (instance.vm_state, instance.task_state, instance.host) == (states.BUILDING, states.SCHEDULING, None)
        left = outbox.pending(db)
        assert [(row["kind"], row["cast"], row["key"]) for row in left] == [("api", "api.schedule", instance.id)]
        assert left[0]["writer"].split(":")[1] == str(doomed.pid)

        restarted = _launch(spawn, "fabric-api", "ctl", env, name="fabric-api-restarted")
        workers.append(restarted)
        wait_until(lambda: _instances(db, project)[0].vm_state == states.ACTIVE, 60,
                   "the server committed by the killed API to go ACTIVE", workers=workers, interval=0.2)
        # Sent by the restart itself (before the service reported started), not by a later sweep.
        log = restarted.log()
        assert -1 < log.find("took over 1 outbox cast") < log.find("Started fabric-api on host ctl"), log[-3000:]
        wait_until(lambda: outbox.pending(db) == [], 10, "the outbox to empty", workers=workers)
        [built] = _instances(db, project)
        assert (built.vm_state, built.task_state, built.host) == (states.ACTIVE, None, "h1")
        with db.begin() as session:
            node = session.scalars(sa.select(ComputeNode).where(ComputeNode.host == "h1")).one()
            assert (node.running_vms, node.memory_mb_used) == (1, built.memory_mb)
            assert session.scalar(sa.select(sa.func.count()).select_from(OutboxCast)) == 0
    finally:
        db.dispose()


def _host_reported(db: Database) -> bool:
    with db.begin() as session:
        return session.scalar(sa.select(ComputeNode.id).where(ComputeNode.host == "h1")) is not None
