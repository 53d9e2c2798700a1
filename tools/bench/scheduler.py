"""Scheduler benchmark: scheduler workers, one per CPU, place 10,000 instances on 1,000 hosts.

Creates a throwaway PostgreSQL database and RabbitMQ vhost, inserts the
hosts (compute_nodes + services rows: no host processes) and the instances,
starts scheduler worker processes (``tests.fixtures.scheduler_worker``, the
real SchedulerManager behind a real Service, with the compute cast replaced
by a no-op), casts ``schedule_and_build`` for every instance, and waits
until every instance has a host or is in error. Prints:

* decisions per second (every instance decided / wall time from the first cast),
* p50 / p99 latency of one decision inside a worker (read request, filter,
  weigh, claim committed),
* the CPU the scheduler workers and the PostgreSQL backends serving them
  used per decision (the machine's other processes left out);
* the over-commit count from the database (hosts over capacity or whose
  usage disagrees with the instances on them): must be 0;
* each figure beside its goal (issue 19: at least 600 decisions/s, p99 under
  30 ms, no over-commit, with the default sizes on a 2-CPU machine).

One worker per CPU by default: a decision is CPU work, and more workers than CPUs
only queue for them, each batch waiting its turn for a CPU between its statements
(measured on 2 CPUs, same code and batch size 4: 4 workers gave p99 54-66 ms at 750-880
decisions/s, 2 workers 21-27 ms at 935-1,080/s). ``--workers 4`` measures the storm's four.

A worker decides the placements waiting for it together (fabric.scheduler.manager):
a decision's latency runs from the start of its batch to its outcome.

Run from the repository root: ``python tools/bench/scheduler.py [--hosts N
--instances N --workers N]``. Removes the database, the vhost, the
workers it started and their logs (kept, and named, when the run fails).
"""

import fabric.cmd.eventlet_entry  # noqa: F401, I001 - the RPC client runs on the hub

import argparse
import collections
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import eventlet
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from _common import (  # noqa: E402
    create_postgres_database,
    drop_postgres_database,
    percentile,
    rabbit_vhost,
    stop_processes,
)

from fabric import config, exception, rpc  # noqa: E402
from fabric.context import RequestContext  # noqa: E402
from fabric.db import Database  # noqa: E402
from fabric.db.models import Instance, InstanceFault  # noqa: E402
from fabric.scheduler.request import ANTI_AFFINITY  # noqa: E402
from fabric.scheduler.rpcapi import SchedulerAPI  # noqa: E402
from tests.fixtures import scheduler as build  # noqa: E402

#: (vcpus, memory_mb, disk_gb, share of instances)
FLAVORS = [(1, 512, 5, 0.3), (2, 2048, 20, 0.4), (4, 4096, 40, 0.2), (8, 8192, 80, 0.1)]
RAM_RATIO, CPU_RATIO, DISK_RATIO = 1.0, 4.0, 1.0
#: The goals of issue 19 (default sizes, this 2-CPU machine).
GOAL_RATE, GOAL_P99_MS = 600, 30.0


def populate(db: Database, hosts: int, instances: int, rng: random.Random) -> list[str]:
    """Hosts of three sizes; instances of mixed flavors needing ~90% of the RAM; some groups."""
    build.add_hosts(db, hosts // 2, prefix="small", vcpus=8, memory_mb=16384, disk_gb=800)
    build.add_hosts(db, hosts - hosts // 2 - hosts // 4, prefix="medium", vcpus=16, memory_mb=32768, disk_gb=1200)
    build.add_hosts(db, hosts // 4, prefix="large", vcpus=32, memory_mb=49152, disk_gb=1600)
    ids: list[str] = []
    groups = [build.add_group(db, ANTI_AFFINITY) for _ in range(instances // 100)]
    for vcpus, memory_mb, disk_gb, share in FLAVORS:
        count = round(instances * share) if (vcpus, memory_mb) != FLAVORS[-1][:2] else instances - len(ids)
        ids += build.add_instances(db, count, vcpus=vcpus, memory_mb=memory_mb, disk_gb=disk_gb)
    # One instance in ten joins an anti-affinity group of ten.
    with db.begin() as session:
        for index, group in enumerate(groups):
            members = ids[index * 10:(index + 1) * 10] if index * 10 < len(ids) else []
            session.execute(sa.update(Instance).where(Instance.id.in_(members)).values(server_group_id=group))
    rng.shuffle(ids)
    # Statistics, as a running cloud's database has (autovacuum's analyze comes a minute or more
    # after a fill): on tables just filled PostgreSQL plans the claim's UPDATE of one instance
    # (by id, vm_state, ...) through the vm_state index, reading every building instance per claim
    # (measured: 28 million index tuples in 25 s, more backend CPU than the workers' own).
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("ANALYZE"))
    return ids


def start_workers(count: int, db_url: str, amqp_url: str, logdir: Path,
                  decisions: int, batch_size: int | None) -> list[subprocess.Popen]:
    workers = []
    for index in range(count):
        env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}
        env.update({
            "PYTHONPATH": str(REPO), "FABRIC_DATABASE_URL": db_url, "FABRIC_RPC_TRANSPORT_URL": amqp_url,
            "FABRIC_DEFAULT_HOST": f"bench-scheduler-{index}", "FABRIC_DEFAULT_LOG_LEVEL": "WARNING",
            "FABRIC_SIGNING_KEY_DIR": os.environ["FABRIC_SIGNING_KEY_DIR"],
            "FABRIC_SERVICE_SERVICE_DOWN_TIME": "86400",
            "FABRIC_SCHEDULER_MAX_CONCURRENT_DECISIONS": str(decisions),
            "FABRIC_SCHEDULER_RAM_ALLOCATION_RATIO": str(RAM_RATIO),
            "FABRIC_SCHEDULER_CPU_ALLOCATION_RATIO": str(CPU_RATIO),
            "FABRIC_SCHEDULER_DISK_ALLOCATION_RATIO": str(DISK_RATIO),
        })
        if batch_size is not None:
            env["FABRIC_SCHEDULER_BATCH_SIZE"] = str(batch_size)
        log = open(logdir / f"scheduler-{index}.log", "wb")  # noqa: SIM115 - kept for the process's life
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "tests.fixtures.scheduler_worker", "scheduler", "--compute", "none"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
    return workers


def wait_ready(api: SchedulerAPI, count: int, workers: list[subprocess.Popen], timeout: float = 60) -> None:
    ctx = RequestContext.admin()
    deadline = time.monotonic() + timeout
    for index in range(count):
        while True:
            if workers[index].poll() is not None:
                raise SystemExit(f"scheduler worker {index} exited with {workers[index].returncode}")
            try:
                api.decision_stats(ctx, f"bench-scheduler-{index}", reset=True)
                break
            except (exception.FabricError, RuntimeError) as exc:
                # Not consuming yet (Unroutable, timeout), or the RPC layer's first-call race.
                if time.monotonic() > deadline:
                    print(f"last error: {exc!r}")
                    raise SystemExit(f"scheduler worker {index} did not answer within {timeout}s") from None
                eventlet.sleep(0.2)


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backends_cpu(db: Database, db_name: str) -> dict[int, float]:
    """CPU seconds used so far by each PostgreSQL backend connected to ``db_name`` (but this process's)."""
    with db.engine.connect() as conn:
        pids = conn.execute(sa.text("SELECT pid FROM pg_stat_activity WHERE datname = :name "
                                    "AND pid <> pg_backend_pid()"), {"name": db_name}).scalars().all()
    used = {}
    for pid in pids:
        try:
            used[pid] = cpu_seconds(pid)
        except (FileNotFoundError, ProcessLookupError):
            pass  # gone meanwhile
    return used


def decided(db: Database) -> int:
    with db.begin() as session:
        return session.execute(sa.select(sa.func.count()).select_from(Instance).where(
            sa.or_(Instance.host.is_not(None), Instance.vm_state == "error"))).scalar_one()


def fault_reasons(db: Database) -> dict[str, int]:
    """How many instances went to error for each reason (their faults' messages, counts elided)."""
    with db.begin() as session:
        messages = session.execute(sa.select(InstanceFault.message)).scalars().all()
    # "RamFilter removed 12 of 1000": the same reason whatever the counts.
    return collections.Counter(re.sub(r"\d+", "N", message) for message in messages)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--instances", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="scheduler worker processes (default: one per CPU)")
    parser.add_argument("--senders", type=int, default=8, help="green threads casting requests")
    # Measured with 4 workers on 2 cores: 4 at once gave the same rate as 1, with
    # 3x the lost claims and 7x the p99 (hence the option's default of 1).
    parser.add_argument("--decisions", type=int, default=1,
                        help="[scheduler] max_concurrent_decisions of each worker")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="[scheduler] batch_size of each worker (default: the option's)")
    args = parser.parse_args()
    from fabric.rpc import signing

    # Every message is signed, as deployed: keys made for the run, for this process and the workers.
    with tempfile.TemporaryDirectory(prefix="fabric-bench-keys-") as key_dir, rabbit_vhost() as (vhost, amqp_url):
        signing.generate(key_dir)
        os.environ["FABRIC_SIGNING_KEY_DIR"] = key_dir
        return run(args, vhost, amqp_url)


def run(args: argparse.Namespace, vhost: str, amqp_url: str) -> int:
    rng = random.Random(7)
    db_name, db_url = create_postgres_database("fabric_bench")
    db = Database(db_url)
    logdir = Path(tempfile.mkdtemp(prefix=f"{vhost}-logs-"))  # removed after a run that ended well
    workers: list[subprocess.Popen] = []
    transport = None
    ended_well = False
    try:
        ids = populate(db, args.hosts, args.instances, rng)
        print(f"populated {args.hosts} hosts and {len(ids)} instances in database {db_name}")
        workers = start_workers(args.workers, db_url, amqp_url, logdir, args.decisions, args.batch_size)
        settings = config.Settings().replace(rpc={"transport_url": amqp_url, "call_timeout": 5})
        transport = rpc.get_transport(settings.rpc)
        api = SchedulerAPI(transport, timeout=5)
        wait_ready(api, args.workers, workers)
        ctx = RequestContext.admin()

        load_before = os.getloadavg()[0]  # the machine is shared: its load says how far to trust the latencies
        cpu_before = sum(cpu_seconds(worker.pid) for worker in workers)
        backends_before = backends_cpu(db, db_name)
        started = time.monotonic()
        pool = eventlet.GreenPool(args.senders)
        for iid in ids:
            pool.spawn_n(api.schedule_and_build, ctx, iid)
        pool.waitall()
        cast_done = time.monotonic()
        deadline = cast_done + 600
        done = 0
        while done < len(ids):
            if time.monotonic() > deadline:
                raise SystemExit(f"only {done} of {len(ids)} instances decided after 600 s")
            for index, worker in enumerate(workers):
                if worker.poll() is not None:
                    raise SystemExit(f"scheduler worker {index} died: see {logdir}")
            eventlet.sleep(0.1)
            done = decided(db)
        elapsed = time.monotonic() - started
        worker_cpu = sum(cpu_seconds(worker.pid) for worker in workers) - cpu_before
        # Backends that ended during the run are not counted (the workers' pools keep theirs).
        backend_cpu = sum(used - backends_before.get(pid, 0.0) for pid, used in backends_cpu(db, db_name).items())
        load = os.getloadavg()[0]

        latencies: list[float] = []
        outcomes: dict[str, int] = {}
        lost = rows = 0
        for index in range(args.workers):
            stats = api.decision_stats(ctx, f"bench-scheduler-{index}")
            latencies += stats["latencies_ms"]
            lost += stats["claims_lost"]
            rows += stats["rows_read"]
            for key, value in stats["outcomes"].items():
                outcomes[key] = outcomes.get(key, 0) + value
        over = build.overcommitted(db, ram_ratio=RAM_RATIO, cpu_ratio=CPU_RATIO, disk_ratio=DISK_RATIO)
        with db.begin() as session:
            placed = session.execute(sa.select(sa.func.count()).select_from(Instance)
                                     .where(Instance.host.is_not(None))).scalar_one()
        print(f"hosts={args.hosts} instances={len(ids)} scheduler_workers={args.workers} on {os.cpu_count()} CPUs "
              f"batch_size={args.batch_size or config.SchedulerSection().batch_size}")
        print(f"casts sent in {cast_done - started:.1f} s; all decided in {elapsed:.1f} s")
        print(f"decisions/s: {len(ids) / elapsed:.0f}")
        print(f"decision latency ms: p50 {statistics.median(latencies):.1f}  "
              f"p99 {percentile(latencies, 0.99):.1f}  max {max(latencies):.1f}  (n={len(latencies)})")
        print(f"placed {placed}, error {len(ids) - placed}; outcomes {outcomes}")
        for reason, count in fault_reasons(db).items():
            print(f"  {count} in error: {reason}")
        print(f"claims lost to other workers: {lost}; host rows read whole by caches: {rows} "
              f"({rows / len(ids):.1f} per decision)")
        print(f"scheduler workers' CPU: {worker_cpu * 1000 / len(ids):.2f} ms per decision, their PostgreSQL "
              f"backends' {backend_cpu * 1000 / len(ids):.2f} ms (machine load average {load_before:.1f} at the "
              f"first cast, {load:.1f} at the end, on "
              f"{os.cpu_count()} CPUs)")
        print(f"over-commit count: {len(over)}")
        p99 = percentile(latencies, 0.99)
        for what, value, met in ((f"decisions/s >= {GOAL_RATE}", f"{len(ids) / elapsed:.0f}", len(ids) / elapsed >= GOAL_RATE),
                                 (f"p99 < {GOAL_P99_MS} ms", f"{p99:.1f}", p99 < GOAL_P99_MS),
                                 ("over-commit = 0", str(len(over)), not over)):
            print(f"goal {what}: {value} {'met' if met else 'NOT met'}")
        ended_well = True
        return 1 if over else 0
    finally:
        stop_processes(workers, timeout=30)
        if transport is not None:
            transport.cleanup()
        db.dispose()
        drop_postgres_database(db_name)
        if ended_well:
            shutil.rmtree(logdir, ignore_errors=True)
        else:
            print(f"the workers' logs are kept in {logdir}")


if __name__ == "__main__":
    sys.exit(main())
