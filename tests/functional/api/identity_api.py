"""A ``fabric-api`` process of its own for the identity functional tests: its own PostgreSQL
database and RabbitMQ vhost, a bootstrapped admin, and whatever extra configuration
sections a test needs (lock-out, LDAP); stopped by its own PID."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from fabric.api.bootstrap import bootstrap
from fabric.db import Database
from tests.fixtures.databases import create_schema_database
from tests.fixtures.processes import REPO, Worker, fabric_conf, free_port, stop_process
from tests.fixtures.rabbitmq import RabbitVhost, broker_problem, unavailable

ADMIN_PASSWORD = "admin-pw"


@contextlib.contextmanager
def running_api(database_servers, workdir: Path, signing_keys: Path, **sections: dict) -> Iterator[str]:
    """Start fabric-api with ``sections`` added to its configuration; yields its auth URL."""
    problem = broker_problem()
    if problem:
        unavailable(problem)
    db = Database(create_schema_database(database_servers))
    vhost = RabbitVhost()
    vhost.create()
    port = free_port()
    conf = fabric_conf(workdir / "fabric.conf", host="idtest", api_port=port, transport_url=vhost.url,
                       database_url=db.url.render_as_string(hide_password=False), **sections)
    bootstrap(db, ADMIN_PASSWORD)
    log_path = workdir / "fabric-api.log"
    with open(log_path, "wb") as out:
        popen = subprocess.Popen([sys.executable, "-m", "fabric.cmd.api", "--config-file", str(conf)], cwd=REPO,
                                 stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=dict(os.environ, PYTHONPATH=str(REPO), FABRIC_SIGNING_KEY_DIR=str(signing_keys)))
    try:
        Worker(popen, log_path, "fabric-api").wait_for_log("fabric API listening on", timeout=60)
        yield f"http://127.0.0.1:{port}/v3"
    finally:
        stop_process(popen)
        vhost.delete()
        db.dispose()
