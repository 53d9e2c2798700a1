"""``tools/run --hosts N``: a cloud of N simulated hosts, every worker its own process.

On the local RabbitMQ and PostgreSQL (``tools/run`` installs and starts them as
``tools/test`` does): a vhost and a database named ``fabric_run`` (made once,
kept across runs, the schema brought up to date with the migrations), a
configuration file under ``<data_dir>/run-hosts/``, ``fabric-ipam``,
``fabric-scheduler``, ``fabric-objectstore`` and ``fabric-api`` in the root namespace, and N simulated
hosts (:mod:`fabric.sim.hosts`). Stays in the foreground; SIGINT or SIGTERM
removes every process and namespace it made (the database and vhost stay).
"""

from __future__ import annotations

import argparse
import secrets
import signal
import subprocess
import sys
import threading
from pathlib import Path

import sqlalchemy as sa

from fabric import config
from fabric.db import Database, migration
from fabric.exception import FabricError
from fabric.sim import cli, hosts

NAME = "fabric_run"
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
RABBIT = "guest:guest@127.0.0.1:5672"
CONTROL_WORKERS = ("fabric-ipam", "fabric-scheduler", "fabric-objectstore", "fabric-api")


def ensure_database() -> str:
    """The URL of PostgreSQL database ``fabric_run`` (created if missing) at the newest schema."""
    admin = Database(POSTGRES_ADMIN_URL, connect_timeout=5)
    try:
        admin.check_reachable()
        with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if conn.scalar(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": NAME}) is None:
                conn.execute(sa.text(f"CREATE DATABASE {NAME}"))
    finally:
        admin.dispose()
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{NAME}"
    db = Database(url)
    try:
        migration.upgrade(db)
    finally:
        db.dispose()
    return url


def ensure_vhost() -> str:
    """The amqp URL of RabbitMQ vhost ``fabric_run`` (created if missing)."""
    listed = subprocess.run(["rabbitmqctl", "-q", "list_vhosts"], capture_output=True, text=True, check=True)
    if NAME not in listed.stdout.split():
        subprocess.run(["rabbitmqctl", "-q", "add_vhost", NAME], capture_output=True, check=True)
        subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", NAME, "guest", ".*", ".*", ".*"],
                       capture_output=True, check=True)
    return f"amqp://{RABBIT}/{NAME}"


def write_config(directory: Path, database_url: str, transport_url: str) -> tuple[Path, str]:
    """The run's fabric.conf (its admin password kept from a previous run); (path, admin password)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "fabric.conf"
    password = secrets.token_urlsafe(12)
    if path.exists():
        password = config.load(path).api.admin_password or password
    path.write_text(f"""# written by tools/run --hosts; rewritten on every run
[DEFAULT]
host = control
data_dir = {directory / 'data'}
[database]
url = {database_url}
[rpc]
transport_url = {transport_url}
[service]
report_interval = 5
[api]
listen = 127.0.0.1
admin_password = {password}
""")
    return path, password


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/run --hosts", description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, required=True, help="number of simulated hosts")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        conf, password = write_config(Path(config.DefaultSection().data_dir) / "run-hosts", ensure_database(),
                                      ensure_vhost())
        settings = config.load(conf)
        cloud = hosts.SimulatedHosts(conf, args.hosts, cloud="run")
        cloud.up(control=CONTROL_WORKERS)
    except (FabricError, subprocess.CalledProcessError) as exc:
        print(f"tools/run: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 1
    print(cloud.describe())
    print(f"every worker is its own process (logs in {cloud.log_dir}); the openstack CLI:\n"
          f"  export OS_AUTH_URL=http://127.0.0.1:{settings.api.port}/v3 OS_USERNAME=admin OS_PROJECT_NAME=admin "
          f"OS_USER_DOMAIN_NAME=Default OS_PROJECT_DOMAIN_NAME=Default OS_PASSWORD={password}\n"
          "Ctrl-C removes every process and namespace.", flush=True)
    cli.serve(cloud, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
