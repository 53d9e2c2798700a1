"""Helpers the benchmarks share: throwaway PostgreSQL databases and RabbitMQ vhosts,
percentiles, stopping worker processes, a database seeded with servers to list, and
pinging a guest from a namespace.

A benchmark script imports this as ``_common`` (its own folder is first on
``sys.path`` when run as ``python tools/bench/<name>.py``), after putting the
repository root on ``sys.path``. Importing it loads only the standard library
(SQLAlchemy and fabric load when a database is made), so a script may import it
before it monkey-patches.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

POSTGRES_ADMIN_URL = os.environ.get("FABRIC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def rabbitmqctl(*args: str) -> None:
    """Run ``rabbitmqctl -q args``; raises CalledProcessError (with its stderr) when it fails."""
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def interrupt_on_stop_signals() -> None:
    """Have SIGTERM, and SIGINT even where it is ignored (a run started in the background by a
    shell without job control inherits SIGINT ignored), raise KeyboardInterrupt in the main
    thread, so a benchmark stopped either way still runs its ``finally`` blocks: stops the
    workers it started, drops its database and vhost, removes its directory."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.default_int_handler)


@contextlib.contextmanager
def rabbit_vhost(prefix: str = "fabric_bench", broker: str = "guest:guest@127.0.0.1:5672") -> Iterator[tuple[str, str]]:
    """A new vhost ``<prefix>_<random>`` on the local RabbitMQ, usable by ``broker``'s user,
    for the block: yields (name, amqp URL); deleted after, whatever happened."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, broker.split(":")[0], ".*", ".*", ".*")
        yield name, f"amqp://{broker}/{name}"
    finally:
        rabbitmqctl("delete_vhost", name)


def percentile(values: list[float], fraction: float) -> float:
    """The value at ``fraction`` (0.5 for the median, 0.99 for p99) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def stop_processes(procs: list[subprocess.Popen], timeout: float = 20.0) -> None:
    """SIGTERM every process still running, then wait for each (SIGKILL after ``timeout`` s)."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def create_postgres_database(prefix: str) -> tuple[str, str]:
    """A new PostgreSQL database ``<prefix>_<random>`` holding fabric's schema: (name, url).

    Drop it with :func:`drop_postgres_database` when done.
    """
    import sqlalchemy as sa

    from fabric.db import Database
    from fabric.db.models import Base

    name = f"{prefix}_{secrets.token_hex(4)}"
    _as_admin(f"CREATE DATABASE {name}")
    url = sa.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    db = Database(url)
    try:
        Base.metadata.create_all(db.engine)
    finally:
        db.dispose()
    return name, url


def drop_postgres_database(name: str) -> None:
    """Drop a database made by :func:`create_postgres_database`, closing its connections."""
    _as_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextlib.contextmanager
def scratch_cloud_backends(name: str) -> Iterator[tuple[str, str, str]]:
    """A throwaway PostgreSQL database, RabbitMQ vhost and working directory named after
    ``name``, for a benchmark that starts a whole cloud: (work directory, database URL,
    transport URL); all removed after."""
    import tempfile

    database, database_url = create_postgres_database(name)
    try:
        with rabbit_vhost(name) as (_vhost, transport_url), \
                tempfile.TemporaryDirectory(prefix=f"{name.replace('_', '-')}-") as work:
            yield work, database_url, transport_url
    finally:
        drop_postgres_database(database)


def _as_admin(statement: str) -> None:
    import sqlalchemy as sa

    from fabric.db import Database

    # CREATE/DROP DATABASE cannot run inside a transaction block.
    admin = Database(POSTGRES_ADMIN_URL)
    try:
        with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text(statement))
    finally:
        admin.dispose()


def seed_active_servers(db, count: int, password: str) -> None:
    """Give ``db`` fabric's schema, the bootstrap admin (``password``) and ``count`` active servers
    of the admin project on host1, each with one address (what a server list shows)."""
    from fabric.api.bootstrap import bootstrap
    from fabric.db.models import Base, Flavor, Image, Instance

    Base.metadata.create_all(db.engine)
    ids = bootstrap(db, password)
    with db.begin() as session:
        flavor = Flavor(name="bench", vcpus=1, memory_mb=64, disk_gb=1)
        image = Image(name="bench", owner=ids["project_id"], status="active", properties={})
        session.add_all([flavor, image])
        session.flush()
        session.add_all([Instance(display_name=f"vm-{n}", project_id=ids["project_id"], user_id=ids["user_id"],
                                  flavor_id=flavor.id, image_id=image.id, host="host1", vm_state="active",
                                  power_state=1, network_info=[{"network_id": "n1", "mac": "fa:16:3e:00:00:01",
                                                                "address": f"10.{n // 250}.{n % 250}.2"}])
                         for n in range(count)])


def _icmp_checksum(data: bytes) -> int:
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def ping_from(namespace: str, address: str, deadline: float, interval: float = 0.02,
              on_tick: Callable[[], None] | None = None) -> float | None:
    """Echo requests to ``address`` every ``interval`` s from network namespace ``namespace``
    (a raw ICMP socket, so a figure is not rounded up to a ping tool's one-second timeout),
    calling ``on_tick()`` before each; the time.monotonic() of the first reply, or None when
    ``deadline`` (a time.monotonic() value) passes first."""
    result: list[float | None] = [None]

    def run() -> None:
        from fabric.sim import netns

        netns.enter(namespace)  # this thread only: setns is per thread for network namespaces
        ident = threading.get_native_id() & 0xFFFF
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
            seq = 0
            while time.monotonic() < deadline:
                seq = (seq + 1) & 0xFFFF
                header = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"fabric-bench"
                packet = header[:2] + struct.pack("!H", _icmp_checksum(header)) + header[4:]
                if on_tick is not None:
                    on_tick()
                try:
                    sock.sendto(packet, (address, 0))
                except OSError:
                    pass  # no route or neighbour yet: the next tick tries again
                until = time.monotonic() + interval
                while (left := until - time.monotonic()) > 0:
                    if not select.select([sock], [], [], left)[0]:
                        break
                    data, (source, _port) = sock.recvfrom(2048)
                    icmp = data[(data[0] & 0x0F) * 4:]
                    if source == address and icmp[0] == 0 and struct.unpack("!H", icmp[4:6])[0] == ident:
                        result[0] = time.monotonic()
                        return

    thread = threading.Thread(target=run, name=f"ping-{address}")
    thread.start()
    thread.join()
    return result[0]
