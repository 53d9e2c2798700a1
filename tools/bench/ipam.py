"""IPAM benchmark: allocations per second in-process and over RPC, on PostgreSQL and MariaDB.

Creates a throwaway database on each server asked for (and, for the RPC
part, a RabbitMQ vhost and signing keys), then measures:

* in-process: ``IpamManager.allocate`` called directly by one caller, in
  rounds alternating with the reference (raw committed single-row INSERTs on
  one connection of the same driver: psycopg, PyMySQL), and the ratio of the
  two; then from several threads (concurrent requests in one pool share a
  transaction: group commit; the figure in brackets is requests per
  transaction); then releases;
* over RPC: the same allocations through ``IpamAPI`` (signed calls over the
  real RabbitMQ) to each count of ``fabric-ipam`` worker processes (1 and 4),
  with many calls in flight from green threads, beside a reference of RPC
  calls that touch no database; each with the CPU time per call of the
  workers, of the database's server (PostgreSQL: its backends for this
  database; MariaDB: the whole server process, whoever else uses it) and of
  this caller (from /proc), and on PostgreSQL the transactions committed per
  allocation. ``--rounds`` repeats the worker counts in turn (1, 4, 1, 4 ...)
  and ends with the median rate of each count and their ratio: the machine is
  shared, and a load that comes and goes then weighs on every count alike.
  ``--one-host-queue`` sends every allocation to the first worker's host
  queue (``ipam.<host>``) instead of the shared one, as routing each pool
  to one worker would: the most such routing can give this one-pool run.

Every run allocates into a /16 subnet pool (lowest free first) and checks
at the end that no address was handed out twice. Prints one line per
figure, with the load average: compare ratios within one run, and CPU per
call across runs. Run from the repository root: ``python
tools/bench/ipam.py [--databases postgresql,mariadb] [--allocations N]
[--in-flight N] [--threads N] [--workers 1,4] [--rounds N]
[--skip-in-process] [--skip-rpc] [--one-host-queue]``. Removes the databases, the vhosts, the
keys and the workers it started.
"""

import sys

# The RPC part runs on eventlet's hub; the in-process part runs in a child
# process of its own with real threads and no monkey patching.
IN_PROCESS_CHILD = "--in-process-child" in sys.argv
if not IN_PROCESS_CHILD:
    import fabric.cmd.eventlet_entry  # noqa: F401, I001

import argparse  # noqa: E402
import contextlib  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import secrets  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import eventlet  # noqa: E402
import sqlalchemy as sa  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from _common import create_postgres_database, drop_postgres_database, rabbit_vhost, stop_processes  # noqa: E402

from fabric import config, rpc  # noqa: E402
from fabric.context import RequestContext  # noqa: E402
from fabric.db import Database  # noqa: E402
from fabric.db.models import AddressAllocation, Base  # noqa: E402
from fabric.ipam.manager import IpamManager  # noqa: E402
from fabric.ipam.rpcapi import IpamAPI  # noqa: E402
from fabric.rpc import signing  # noqa: E402
from tests.fixtures.subnets import make_subnet  # noqa: E402

CTX = RequestContext.admin()

MARIADB_ADMIN_URL = os.environ.get("FABRIC_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/mysql")


@contextlib.contextmanager
def scratch_database(backend: str) -> Iterator[str]:
    """A new database holding fabric's schema on ``backend``'s server (``postgresql`` or
    ``mariadb``), for the block: yields its URL; dropped after."""
    if backend == "postgresql":
        name, url = create_postgres_database("fabric_bench_ipam")
        try:
            yield url
        finally:
            drop_postgres_database(name)
        return
    if backend != "mariadb":
        raise SystemExit(f"--databases: {backend!r} is not postgresql or mariadb")
    name = f"fabric_bench_ipam_{secrets.token_hex(4)}"
    admin = Database(MARIADB_ADMIN_URL)
    url = sa.make_url(MARIADB_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"))
        try:
            db = Database(url)
            try:
                Base.metadata.create_all(db.engine)
            finally:
                db.dispose()
            yield url
        finally:
            with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
    finally:
        admin.dispose()


def load() -> str:
    return "load " + " ".join(f"{n:.1f}" for n in os.getloadavg())


def check_unique(db: Database, pool: str, expected: int) -> None:
    with db.engine.connect() as conn:
        total, distinct = conn.execute(
            sa.select(sa.func.count(), sa.func.count(sa.distinct(AddressAllocation.address)))
            .where(AddressAllocation.pool_id == pool)).one()
    if total != expected or distinct != expected:
        raise SystemExit(f"pool {pool}: {total} rows, {distinct} distinct addresses, expected {expected}")


@contextlib.contextmanager
def raw_reference(url: str) -> Iterator[Any]:
    """A cursor of a plain driver connection (psycopg or PyMySQL) in autocommit mode on a
    table of its own, for the reference: ``cursor.execute(RAW_INSERT, (i,))``."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "postgresql":
        import psycopg

        conn = psycopg.connect(parsed.set(drivername="postgresql").render_as_string(hide_password=False),
                               autocommit=True)
        create = "CREATE TABLE bench_reference (id serial PRIMARY KEY, v int)"
    else:
        import pymysql

        conn = pymysql.connect(host=parsed.host, port=parsed.port or 3306, user=parsed.username,
                               password=parsed.password or "", database=parsed.database, autocommit=True)
        create = "CREATE TABLE bench_reference (id int AUTO_INCREMENT PRIMARY KEY, v int) ENGINE=InnoDB"
    try:
        cursor = conn.cursor()
        cursor.execute(create)
        try:
            yield cursor
        finally:
            cursor.execute("DROP TABLE bench_reference")
    finally:
        conn.close()


RAW_INSERT = "INSERT INTO bench_reference (v) VALUES (%s)"


def raw_commit_rate(url: str, count: int = 1000) -> None:
    """Reference: committed single-row INSERTs per second on one plain driver connection."""
    with raw_reference(url) as cursor:
        started = time.perf_counter()
        for i in range(count):
            cursor.execute(RAW_INSERT, (i,))
        elapsed = time.perf_counter() - started
    print(f"reference: raw committed single-row INSERTs, 1 connection: {count / elapsed:,.0f}/s; {load()}",
          flush=True)


def one_caller(url: str, allocations: int, rounds: int = 50) -> None:
    """One caller's allocations, and the raw INSERT reference, in alternating rounds of the
    same size: the machine is shared, and a load that comes and goes then weighs on both alike.
    Then the releases, one at a time."""
    db = Database(url, pool_size=3)
    manager = IpamManager(config.load(None, environ={}), host="bench", db=db)
    subnet = make_subnet(db, "10.63.0.0/16", project_id="bench")
    manager.allocate(CTX, "warm-up", subnet_id=subnet)
    per_round = allocations // rounds
    raw = allocating = 0.0
    raw_cpu = allocating_cpu = 0.0
    with raw_reference(url) as cursor:
        for r in range(rounds):
            started, cpu = time.perf_counter(), time.process_time()
            for i in range(per_round):
                cursor.execute(RAW_INSERT, (i,))
            raw += time.perf_counter() - started
            raw_cpu += time.process_time() - cpu
            started, cpu = time.perf_counter(), time.process_time()
            for i in range(per_round):
                manager.allocate(CTX, f"r{r}-{i}", subnet_id=subnet)
            allocating += time.perf_counter() - started
            allocating_cpu += time.process_time() - cpu
    done = per_round * rounds
    check_unique(db, subnet, done + 1)
    started = time.perf_counter()
    for r in range(rounds):
        for i in range(per_round):
            manager.release(CTX, pool=subnet, request_token=f"r{r}-{i}")
    releasing = time.perf_counter() - started
    check_unique(db, subnet, 1)
    print(f"reference: raw committed single-row INSERTs, 1 connection: {done / raw:,.0f}/s "
          f"({rounds} rounds, alternating with the next line's; this process's CPU "
          f"{raw_cpu / done * 1e6:,.0f} µs each); {load()}", flush=True)
    print(f"in-process, 1 caller: {done} allocations in {allocating:.2f} s = {done / allocating:,.0f} allocations/s "
          f"= {raw / allocating:.2f} x the raw INSERTs (this process's CPU {allocating_cpu / done * 1e6:,.0f} µs each)",
          flush=True)
    print(f"in-process, 1 caller: {done} releases in {releasing:.2f} s = {done / releasing:,.0f} releases/s",
          flush=True)
    manager.cleanup_host()
    db.dispose()

def in_process(url: str, allocations: int, threads: int) -> None:
    settings = config.load(None, environ={})
    db = Database(url, pool_size=threads + 2)
    manager = IpamManager(settings, host="bench", db=db)
    subnet = make_subnet(db, "10.64.0.0/16", project_id="bench")
    manager.allocate(CTX, "warm-up", subnet_id=subnet)
    per_thread = allocations // threads

    def allocate(n: int) -> None:
        for i in range(per_thread):
            manager.allocate(CTX, f"t{n}-{i}", subnet_id=subnet)

    def release(n: int) -> None:
        for i in range(per_thread):
            manager.release(CTX, pool=subnet, request_token=f"t{n}-{i}")

    for label, fn in (("allocations", allocate), ("releases", release)):
        combiner = manager.allocator._allocations if label == "allocations" else manager.allocator._releases
        batches_before = combiner.batches if combiner is not None else 0
        workers = [threading.Thread(target=fn, args=(n,)) for n in range(threads)]
        started = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - started
        done = per_thread * threads
        batches = combiner.batches - batches_before if combiner is not None else done
        print(f"in-process, {threads} thread(s): {done} {label} in {elapsed:.2f} s = "
              f"{done / elapsed:,.0f} {label}/s ({done / max(batches, 1):.1f} per transaction)", flush=True)
        if label == "allocations":
            check_unique(db, subnet, done + 1)
    check_unique(db, subnet, 1)
    manager.cleanup_host()
    db.dispose()


def start_workers(count: int, url: str, amqp: str, key_dir: str) -> list[subprocess.Popen]:
    procs = []
    for n in range(count):
        env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}
        env.update(FABRIC_DATABASE_URL=url, FABRIC_RPC_TRANSPORT_URL=amqp, FABRIC_DEFAULT_HOST=f"ipam-bench-{n}",
                   FABRIC_DEFAULT_LOG_LEVEL="WARNING", FABRIC_SIGNING_KEY_DIR=key_dir, PYTHONPATH=str(REPO))
        # psycopg's C wait blocks eventlet's hub; its select() wait is green under monkey patching.
        env.setdefault("PSYCOPG_WAIT_FUNC", os.environ.get("BENCH_WAIT", "wait_select"))
        procs.append(subprocess.Popen([sys.executable, str(REPO / "bin" / "fabric-ipam")], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO))
    return procs


class CpuMeter:
    """CPU seconds (user + system, from /proc) used by the workers, by the database's
    server and by this process between :meth:`start` and :meth:`per_call`: on a shared
    machine the rates move with the load, CPU per call much less. PostgreSQL: the backends
    connected to this database; MariaDB (one process, a thread per connection): the whole
    server, so others' use of it while this runs counts too. On PostgreSQL also the
    transactions committed or rolled back in this database (reads included)."""

    def __init__(self, db: Database, workers: list[subprocess.Popen]) -> None:
        self.db = db
        self.workers = [p.pid for p in workers]
        self._before: dict[str, dict[int, float]] = {}
        self._transactions = 0
        self.server = "PostgreSQL" if db.backend == "postgresql" else "MariaDB (whole server)"

    def _server_pids(self) -> list[int]:
        if self.db.backend != "postgresql":
            return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
                    and _comm(p) in ("mariadbd", "mysqld")]
        with self.db.engine.connect() as conn:
            return list(conn.execute(sa.text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()")).scalars())

    def transactions(self) -> int:
        """PostgreSQL: this database's transactions so far, as its statistics hold them."""
        with self.db.engine.connect() as conn:
            return conn.execute(sa.text(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database "
                "WHERE datname = current_database()")).scalar_one()

    def _sample(self) -> dict[str, dict[int, float]]:
        own = resource.getrusage(resource.RUSAGE_SELF)
        return {"workers": _cpu_seconds(self.workers), self.server: _cpu_seconds(self._server_pids()),
                "this caller": {0: own.ru_utime + own.ru_stime}}

    def start(self) -> None:
        self._before = self._sample()
        if self.db.backend == "postgresql":
            self._transactions = self.transactions()

    def per_call(self, calls: int) -> str:
        after = self._sample()
        parts = []
        for kind, now in after.items():
            used = sum(cpu - self._before[kind].get(pid, 0.0) for pid, cpu in now.items())
            parts.append(f"{kind} {used / calls * 1e6:,.0f} µs")
        return "CPU per call: " + ", ".join(parts)

    def transactions_per_call(self, calls: int, workers: list[subprocess.Popen]) -> str:
        """After ``workers`` were stopped: the database's transactions per call since
        :meth:`start` (a backend reports its counts when it ends, so wait for theirs)."""
        if self.db.backend != "postgresql":
            return ""
        deadline = time.monotonic() + 10
        while self._server_pids() and time.monotonic() < deadline:
            eventlet.sleep(0.05)
        return f"; {(self.transactions() - self._transactions) / calls:.2f} transactions per call"


def _comm(proc: Path) -> str:
    try:
        return (proc / "comm").read_text().strip()
    except OSError:
        return ""

def _cpu_seconds(pids: list[int]) -> dict[int, float]:
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        found[pid] = (int(fields[11]) + int(fields[12])) / tick
    return found


def _in_flight(in_flight: int, total: int, request) -> float:
    """Seconds to make ``request(i)`` for i in 0..total-1 with ``in_flight`` green threads at once."""
    numbers = iter(range(total))

    def requester() -> None:
        for i in numbers:
            request(i)

    pool = eventlet.GreenPool(in_flight)
    started = time.perf_counter()
    for _ in range(in_flight):
        pool.spawn(requester)
    pool.waitall()
    return time.perf_counter() - started


def over_rpc(url: str, workers: int, allocations: int, in_flight: int, cidr: str,
             one_host_queue: bool = False) -> float:
    """Allocations per second through ``workers`` worker processes (printed with the reference)."""
    # Every message is signed, as deployed: keys made for the run, held by this
    # process (signing as the API) and by the workers.
    with rabbit_vhost("fabric_bench_ipam") as (_, amqp), tempfile.TemporaryDirectory() as key_dir:
        signing.generate(key_dir)
        signing.install(signing.load(key_dir, roles=["api"]))
        try:
            return _over_rpc(url, amqp, key_dir, workers, allocations, in_flight, cidr, one_host_queue)
        finally:
            signing.install(None)


def _over_rpc(url: str, amqp: str, key_dir: str, workers: int, allocations: int, in_flight: int,
              cidr: str, one_host_queue: bool) -> float:
    settings = config.load(None, environ={}).replace(rpc={"transport_url": amqp, "call_timeout": 60.0})
    transport = rpc.get_transport(settings.rpc)
    db = Database(url)
    procs = start_workers(workers, url, amqp, key_dir)
    try:
        api = IpamAPI(transport)
        subnet = make_subnet(db, cidr, project_id="bench")
        deadline = time.monotonic() + 60
        while True:  # until every worker consumes (describe answers from each host queue)
            try:
                for n in range(workers):
                    rpc.RPCClient(transport, rpc.Target(topic="ipam", server=f"ipam-bench-{n}")).call(
                        CTX, "describe", timeout=5)
                break
            except Exception:
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    raise
                eventlet.sleep(0.2)
        api.allocate(CTX, "warm-up", subnet_id=subnet)
        describe = rpc.RPCClient(transport, rpc.Target(topic="ipam"))
        cpu = CpuMeter(db, procs)
        cpu.start()
        elapsed = _in_flight(in_flight, allocations, lambda i: describe.call(CTX, "describe"))
        print(f"reference: RPC describe calls (no database), {workers} worker(s), {in_flight} in flight: "
              f"{allocations / elapsed:,.0f} calls/s; {cpu.per_call(allocations)}; {load()}", flush=True)
        cpu.start()
        if one_host_queue:  # IpamAPI.allocate's call, to one worker's host queue
            one = rpc.RPCClient(transport, rpc.Target(topic="ipam", server="ipam-bench-0"))
            elapsed = _in_flight(in_flight, allocations, lambda i: one.call(
                CTX, "allocate", request_token=f"r{i}", subnet_id=subnet))
        else:
            elapsed = _in_flight(in_flight, allocations, lambda i: api.allocate(CTX, f"r{i}", subnet_id=subnet))
        used = cpu.per_call(allocations)
        check_unique(db, subnet, allocations + 1)
        stop_processes(procs)
        used += cpu.transactions_per_call(allocations, procs)
        rate = allocations / elapsed
        where = ", all to ipam.ipam-bench-0" if one_host_queue else ""
        print(f"over RPC, {workers} worker(s){where}, {in_flight} calls in flight: {allocations} allocations in "
              f"{elapsed:.2f} s = {rate:,.0f} allocations/s; {used}; {load()}", flush=True)
        return rate
    finally:
        stop_processes(procs)
        transport.cleanup()
        db.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--databases", default="postgresql",
                        help="servers to run on, comma-separated: postgresql, mariadb")
    parser.add_argument("--allocations", type=int, default=5000)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--threads", type=int, default=64, help="threads for the concurrent in-process run")
    parser.add_argument("--workers", default="1,4", help="worker counts for the RPC part, comma-separated")
    parser.add_argument("--rounds", type=int, default=1, help="times the RPC part runs every worker count, in turn")
    parser.add_argument("--skip-rpc", action="store_true")
    parser.add_argument("--skip-in-process", action="store_true")
    parser.add_argument("--one-host-queue", action="store_true",
                        help="allocations to the first worker's host queue, not the shared one (see above)")
    parser.add_argument("--in-process-child", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_process_child:
        one_caller(args.in_process_child, args.allocations)
        in_process(args.in_process_child, args.allocations, args.threads)
        return 0
    counts = [int(n) for n in args.workers.split(",")]
    for backend in args.databases.split(","):
        print(f"--- {backend}", flush=True)
        with scratch_database(backend) as url:
            if not args.skip_in_process:
                subprocess.run([sys.executable, __file__, "--in-process-child", url, "--allocations",
                                str(args.allocations), "--threads", str(args.threads)], check=True)
            else:
                raw_commit_rate(url)
            if args.skip_rpc:
                continue
            rates: dict[int, list[float]] = {n: [] for n in counts}
            for r in range(args.rounds):
                for k, workers in enumerate(counts):
                    cidr = f"10.{(65 + r * len(counts) + k) % 256}.0.0/16"
                    rates[workers].append(over_rpc(url, workers, args.allocations, args.in_flight, cidr,
                                                    args.one_host_queue))
            first = statistics.median(rates[counts[0]])
            for workers in counts:
                median = statistics.median(rates[workers])
                print(f"{backend}, over RPC, {workers} worker(s): median {median:,.0f} allocations/s of "
                      f"{len(rates[workers])} round(s) = {median / first:.2f} x {counts[0]} worker(s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
