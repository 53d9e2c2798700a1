"""Taking the machine's database server down and bringing it back, for resilience tests.

PostgreSQL is the cluster serving the test URL's port, stopped and started with
``pg_ctlcluster --skip-systemctl-redirect`` (no systemd here). MariaDB is
stopped by the PID in its own pid file (``start-stop-daemon --stop --pidfile``,
never by name) and started as ``tools/lib/common.sh`` starts it. Either way
:meth:`DatabaseServer.ensure_running` starts it again and waits until it
answers: call it in a ``finally`` so a failed test never leaves it down.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import sqlalchemy as sa

from fabric.db import Database
from tests.fixtures.databases import SERVER_URLS, unavailable

#: How long a server may take to answer again after a start.
START_TIMEOUT = 60.0
MARIADB_PID_FILE = "/run/mysqld/mysqld.pid"
MARIADB_DAEMON = "/usr/sbin/mariadbd"


def _run(argv: list[str], timeout: float = 60.0) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip() or done.stdout}")


class DatabaseServer:
    """The server behind ``SERVER_URLS[backend]``: ``stop()``, ``start()``, ``ensure_running()``."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.url = sa.make_url(SERVER_URLS[backend])
        if backend == "postgresql":
            if shutil.which("pg_ctlcluster") is None or shutil.which("pg_lsclusters") is None:
                unavailable("pg_ctlcluster is not installed (Debian's postgresql-common)")
            self.cluster = self._postgres_cluster()
        elif shutil.which("start-stop-daemon") is None or not os.path.exists(MARIADB_DAEMON):
            unavailable(f"start-stop-daemon or {MARIADB_DAEMON} is missing")

    def _postgres_cluster(self) -> tuple[str, str]:
        port = str(self.url.port or 5432)
        listing = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True,
                                 check=True, timeout=30).stdout
        for line in listing.splitlines():
            version, name, cluster_port, *_ = line.split()
            if cluster_port == port:
                return version, name
        unavailable(f"no local PostgreSQL cluster listens on port {port} (pg_lsclusters: {listing!r})")
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop the server: its sessions are ended, new connections refused."""
        if self.backend == "postgresql":
            _run(["pg_ctlcluster", "--skip-systemctl-redirect", "--mode", "fast", *self.cluster, "stop"])
        else:
            # The PID in its pid file, if that process is the mysql user's (start-stop-daemon
            # refuses to trust a pid file root does not own without a second condition).
            _run(["start-stop-daemon", "--stop", "--pidfile", MARIADB_PID_FILE, "--user", "mysql",
                  "--retry", "TERM/30/KILL/5"])

    def start(self) -> None:
        """Start the server and wait until it answers a query."""
        if self.backend == "postgresql":
            _run(["pg_ctlcluster", "--skip-systemctl-redirect", *self.cluster, "start"])
        else:
            _run(["mkdir", "-p", "/run/mysqld"])
            shutil.chown("/run/mysqld", "mysql", "mysql")
            _run(["start-stop-daemon", "--start", "--oknodo", "--background", "--exec", MARIADB_DAEMON])
        self.wait_until_answering()

    def answering(self) -> bool:
        db = Database(self.url.render_as_string(hide_password=False), connect_timeout=2)
        try:
            db.check_reachable()
            return True
        except Exception:  # noqa: BLE001 - any failure means not answering yet
            return False
        finally:
            db.dispose()

    def wait_until_answering(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not self.answering():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.backend} did not answer within {timeout}s of its start")
            time.sleep(0.1)

    def ensure_running(self) -> None:
        """Start the server unless it answers (for ``finally``: never leave it down)."""
        if self.answering():
            return
        self.start()
