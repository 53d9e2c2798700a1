"""Boot storm: 10,000 servers through the HTTP API onto 1,000 fake hosts, then delete them all.

Every worker is a process of its own over real RabbitMQ (a throwaway vhost) and PostgreSQL
(a throwaway database): ``fabric-api`` (``[api] workers`` processes on one port, when the
option exists), ``--schedulers`` ``fabric-scheduler`` workers, ``fabric-ipam``,
``fabric-objectstore`` (the image's bytes), and ``--host-processes`` processes of
:mod:`fabric.sim.fake_hosts`, each running its share of the ``--hosts`` fake hosts (per
host: the real compute and network managers on fake virt and network drivers).
``--clients`` threads of this process post the servers (``POST /compute/v2.1/servers``,
one keep-alive connection each) as fast as the API takes them. Reported:

* the POST rate (servers / time from the first POST to the last 202), and the servers
  reaching ACTIVE per second (servers / time from the first POST to the last ACTIVE);
* p50 / p99 / max from a server's POST to its ACTIVE (the row's ``launched_at``, which the
  compute worker writes with the ACTIVE state, minus the POST's start: no polling delay);
* CPU per server for each kind of worker (utime + stime from ``/proc/<pid>/stat`` of every
  process the bench started and their children, over the create phase, divided by the
  servers), and the API's CPU per POST; each also less the kind's idle CPU rate (measured for
  ``--idle-seconds`` before the first POST) over the phase: heartbeats and periodic tasks add
  more per server the longer a loaded machine makes the phase, the net figure does not;
* the whole machine over the same time (``/proc/stat``): how busy its CPUs were, its CPU per
  server counting every process (PostgreSQL, RabbitMQ and these clients too, which the kinds
  above leave out; and anything else running: run it on a quiet machine), and the most servers/s
  its CPUs could build at that cost: where that ceiling is below the goal, the run is bound by
  the machine's CPUs, and the CPU per server is what has to fall;
* of that rest, PostgreSQL's, RabbitMQ's and these clients' CPU per server (their processes'
  ``/proc/<pid>/stat``), each also less its idle rate: together a floor no change to fabric's
  workers alone lowers; and the database's transactions and rows written per server
  (``pg_stat_database``, every process), also less the idle cloud's;
* over-committed hosts (claims over capacity, or disagreeing with the servers placed
  there: ``tests.fixtures.scheduler.overcommitted``): must be 0; servers stuck (neither
  ACTIVE nor ERROR with a fault when the create phase ends): must be 0.

Then every server is deleted (``DELETE``, the same clients): the delete rate (servers /
time from the first DELETE to the last row marked deleted), and what is left: only the
servers' history may remain (their instance rows, ``deleted``; their actions and faults).
Live rows of a deleted server (ports, address allocations, port group memberships,
server group slots), outbox casts, claimed capacity on any host and quota usage must
all be back to zero.

``--profile`` samples the API processes with py-spy during the create phase and prints
their hottest functions (own time, and time including callees) in percent of samples.

The anchor: OpenStack's published 1,000-node tests booted each VM in about 13 s on average.
Goals (issue 19): at least 150 servers/s end to end, p99 POST -> ACTIVE under 5 s,
POST /servers at most 8 ms of API CPU each.

Run from the repository root with RabbitMQ and PostgreSQL up: ``.venv/bin/python
tools/bench/storm.py [--hosts 1000 --servers 10000 --clients 64]``. Removes every process,
vhost, database and file it made (``--keep-logs DIR`` keeps the workers' logs there).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import http.client
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import sqlalchemy as sa  # noqa: E402
from _common import (  # noqa: E402
    create_postgres_database,
    drop_postgres_database,
    interrupt_on_stop_signals,
    percentile,
    rabbit_vhost,
    stop_processes,
)

from fabric import config  # noqa: E402
from fabric.api.bootstrap import bootstrap  # noqa: E402
from fabric.db import Database  # noqa: E402
from fabric.db.models import (  # noqa: E402
    AddressAllocation,
    ComputeNode,
    Instance,
    InstanceFault,
    OutboxCast,
    Port,
    PortSecurityGroup,
    QuotaUsage,
    ServerGroupHost,
    Service,
)
from fabric.rpc import signing  # noqa: E402
from tests.fixtures.processes import free_port  # noqa: E402
from tests.fixtures.scheduler import overcommitted  # noqa: E402

PASSWORD = "bench-storm-pw"
COMPUTE = "/compute/v2.1"
#: Each fake host's capacity, the flavor and the allocation ratios: RAM bounds a host at 16
#: servers (1,000 hosts hold 16,000), so placement has to count for 10,000 to fit.
HOST = {"fake_vcpus": 4, "fake_memory_mb": 8192, "fake_disk_gb": 40}
FLAVOR = {"vcpus": 1, "ram": 512, "disk": 1}
RATIOS = {"ram_allocation_ratio": 1.0, "cpu_allocation_ratio": 4.0, "disk_allocation_ratio": 1.0}
#: The quota resources servers use (the storm's network and subnet keep theirs).
SERVER_QUOTAS = ("instances", "cores", "ram")
#: The end-to-end rate the storm must reach (issue 19's goal), servers/s.
GOAL_RATE = 150
#: The worker kind of the processes that simulate the hosts (their compute and network workers).
FAKE_HOSTS = "compute+network (fake hosts)"
#: The anchor the figures are printed beside.
OPENSTACK_ANCHOR = "OpenStack's published 1,000-node tests: about 13 s per VM boot on average"


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """(CPU seconds busy, CPU seconds elapsed) of the whole machine so far, summed over its
    CPUs (``/proc/stat``): what every process used, the broker and the database included."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is within user)
    tick = os.sysconf("SC_CLK_TCK")
    return (total - idle) / tick, total / tick


#: The services a server's work goes through besides fabric's workers, by the command names
#: of their processes (``/proc/<pid>/comm``).
SERVICES = {"PostgreSQL": ("postgres",), "RabbitMQ": ("beam.smp", "erl_child_setup", "epmd", "inet_gethost")}


def services_cpu() -> dict[str, float]:
    """CPU seconds so far of the database's and the broker's processes on this machine, each
    with its reaped children's (a PostgreSQL backend that ended is counted in its postmaster's),
    and of this process: its HTTP clients' threads and its own reads of the database."""
    names = {comm: service for service, comms in SERVICES.items() for comm in comms}
    found = dict.fromkeys(SERVICES, 0.0)
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm, fields = (entry / "stat").read_text().split(" (", 1)[1].rsplit(")", 1)
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if comm in names:
            times = fields.split()[11:15]  # utime stime cutime cstime
            found[names[comm]] += sum(int(t) for t in times) / tick
    usage = resource.getrusage(resource.RUSAGE_SELF)
    found["this benchmark (its HTTP clients)"] = usage.ru_utime + usage.ru_stime
    return found


def database_work(db: Database) -> tuple[int, int]:
    """(transactions ended, rows written) on the storm's database so far, every process's
    (PostgreSQL's counts, ``pg_stat_database``)."""
    with db.begin() as session:
        row = session.execute(sa.text(
            "SELECT xact_commit + xact_rollback, tup_inserted + tup_updated + tup_deleted "
            "FROM pg_stat_database WHERE datname = current_database()")).one()
    return int(row[0]), int(row[1])


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (the API's and objectstore's helper processes)."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children[int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])].append(int(entry.name))
            except (OSError, IndexError):
                continue
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


@dataclasses.dataclass
class Worker:
    kind: str
    name: str
    popen: subprocess.Popen

    def pids(self) -> list[int]:
        return descendants(self.popen.pid)


class Cloud:
    """The worker processes of the storm, started from one configuration file."""

    def __init__(self, work: Path, conf: Path) -> None:
        self.work = work
        self.conf = conf
        self.workers: list[Worker] = []
        self.environ = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}
        self.environ["PYTHONPATH"] = str(REPO)

    def start(self, kind: str, name: str, argv: list[str], host: str, env: dict[str, str] | None = None) -> Worker:
        log = open(self.work / "logs" / f"{name}.log", "wb")  # noqa: SIM115 - the child holds it
        popen = subprocess.Popen([sys.executable, *argv, "--config-file", str(self.conf)], cwd=REPO,
                                 env=self.environ | {"FABRIC_DEFAULT_HOST": host} | (env or {}), stdout=log,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        worker = Worker(kind, name, popen)
        self.workers.append(worker)
        return worker

    def check_alive(self) -> None:
        for worker in self.workers:
            if worker.popen.poll() is not None:
                raise SystemExit(f"{worker.name} exited with {worker.popen.returncode}: see "
                                 f"{self.work / 'logs' / (worker.name + '.log')}")

    def cpu_by_kind(self) -> dict[str, float]:
        totals: dict[str, float] = collections.defaultdict(float)
        for worker in self.workers:
            totals[worker.kind] += sum(cpu_seconds(pid) for pid in worker.pids())
        return dict(totals)

    def stop(self) -> None:
        stop_processes([w.popen for w in self.workers], timeout=60)


def broker_connections(cloud: Cloud, vhost: str) -> dict[str, list[int]]:
    """The vhost's AMQP connections by worker kind, as a count per process of that kind
    (each worker's process tree): RabbitMQ's peer ports matched to local sockets by ``ss``."""
    listed = subprocess.run(["rabbitmqctl", "-q", "list_connections", "--no-table-headers", "vhost", "peer_port"],
                            check=True, capture_output=True, text=True, timeout=60).stdout
    ports = {int(port) for name, _, port in (line.partition("\t") for line in listed.splitlines())
             if name == vhost and port.strip().isdigit()}
    sockets = subprocess.run(["ss", "-Htnp", "state", "established"], check=True, capture_output=True, text=True,
                             timeout=60).stdout
    owner = {int(m[1]): int(m[2]) for m in re.finditer(r"\S+:(\d+)\s+\S+:5672\s+users:\(\(\"[^\"]*\",pid=(\d+)",
                                                     sockets)}
    counts: dict[str, list[int]] = collections.defaultdict(list)
    for worker in cloud.workers:
        pids = set(worker.pids())
        counts[worker.kind].append(sum(1 for port in ports if owner.get(port) in pids))
    return dict(counts)


class Client:
    """JSON over one keep-alive connection (one per client thread)."""

    def __init__(self, port: int, token: str = "") -> None:
        self.port = port
        self.token = token
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)

    def request(self, method: str, path: str, body=None, *, raw: bytes | None = None,
                expect=(200, 201, 202, 204)) -> tuple[dict, dict]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"X-Auth-Token": self.token, "Content-Type":
                   "application/octet-stream" if raw is not None else "application/json"}
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                text = resp.read()
                break
            except (ConnectionError, http.client.RemoteDisconnected):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
                if attempt == 2:
                    raise
        if resp.status not in expect:
            raise RuntimeError(f"{method} {path} -> {resp.status}: {text[:400]!r}")
        doc = json.loads(text) if text and resp.getheader("Content-Type", "").startswith("application/json") else {}
        return doc, {k.lower(): v for k, v in resp.getheaders()}

    def login(self) -> str:
        doc, headers = self.request("POST", "/v3/auth/tokens", {"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": "admin", "domain": {"id": "default"}, "password": PASSWORD}}},
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}})
        self.token = headers["x-subject-token"]
        return doc["token"]["project"]["id"]


def write_config(work: Path, args: argparse.Namespace, db_url: str, amqp_url: str, api_port: int) -> Path:
    key_dir = work / "keys"
    signing.generate(key_dir)
    sections: dict[str, dict[str, object]] = {
        "DEFAULT": {"data_dir": work / "data", "log_level": "WARNING"},
        # Every process's pool within PostgreSQL's connection limit.
        "database": {"url": db_url, "pool_size": args.pool_size},
        "rpc": {"transport_url": amqp_url, "call_timeout": 120},
        "signing": {"key_dir": key_dir},
        "api": {"listen": "127.0.0.1", "port": api_port, "admin_password": PASSWORD},
        "objectstore": {"listen": "127.0.0.1", "port": free_port()},
        # A server stays in a transient state far longer than any build here takes only when
        # something lost it: the reaper must not hide that as an error.
        "service": {"report_interval": 10, "service_down_time": 120, "advertise_address": "127.0.0.1"},
        "compute": HOST | {"driver": "fake", "resource_report_interval": 30, "power_sync_interval": 60,
                           "reap_interval": 60, "transient_timeout": 3600},
        "network": {"driver": "fake"},
        "scheduler": dict(RATIOS),
    }
    if "workers" in {f.name for f in dataclasses.fields(config.ApiSection)}:
        sections["api"]["workers"] = args.api_workers
    if "workers" in {f.name for f in dataclasses.fields(config.ObjectstoreSection)}:
        sections["objectstore"]["workers"] = 1
    conf = work / "fabric.conf"
    conf.write_text("".join(f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in options.items())
                            for name, options in sections.items()))
    config.load(conf, environ={})  # refuses an option this tree does not know, before anything starts
    return conf


def start_cloud(cloud: Cloud, args: argparse.Namespace) -> None:
    cloud.start("ipam", "ipam", [str(REPO / "bin" / "fabric-ipam")], "storm-ctl")
    cloud.start("objectstore", "objectstore", [str(REPO / "bin" / "fabric-objectstore")], "storm-ctl")
    for index in range(args.schedulers):
        cloud.start("scheduler", f"scheduler-{index}", [str(REPO / "bin" / "fabric-scheduler")],
                    f"storm-sched-{index}")
    per_process = -(-args.hosts // args.host_processes)
    first = 1
    for index in range(args.host_processes):
        count = min(per_process, args.hosts - first + 1)
        if count <= 0:
            break
        cloud.start(FAKE_HOSTS, f"hosts-{index}",
                    ["-m", "fabric.sim.fake_hosts", "--hosts", str(count), "--prefix", "storm-h",
                     "--first", str(first), "--stagger", str(args.stagger)], f"storm-hosts-{index}",
                    # A few hundred hosts share the process's pool (each real host has its own).
                    {"FABRIC_DATABASE_POOL_SIZE": str(args.hosts_pool_size)})
        first += count
    cloud.start("api", "api", [str(REPO / "bin" / "fabric-api")], "storm-ctl")


def wait_ready(cloud: Cloud, db: Database, args: argparse.Namespace, api_port: int) -> None:
    """Until every host has its compute node and both workers registered, and the API answers."""
    deadline = time.monotonic() + args.start_timeout
    while True:
        cloud.check_alive()
        with db.begin() as session:
            nodes = session.scalar(sa.select(sa.func.count()).select_from(ComputeNode))
            registered = dict(session.execute(sa.select(Service.binary, sa.func.count()).group_by(Service.binary)).all())
        answering = False
        try:
            conn = http.client.HTTPConnection("127.0.0.1", api_port, timeout=2)
            conn.request("GET", "/")
            answering = conn.getresponse().status < 500
            conn.close()
        except OSError:
            pass
        if (nodes >= args.hosts and registered.get("fabric-compute", 0) >= args.hosts
                and registered.get("fabric-network", 0) >= args.hosts
                and registered.get("fabric-scheduler", 0) >= args.schedulers and answering):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"not ready after {args.start_timeout:.0f} s: {nodes} compute nodes, "
                             f"services {registered}, API answering: {answering}")
        time.sleep(1)


def prepare(client: Client, project: str, servers: int, security_group: str) -> dict:
    flavor = client.request("POST", f"{COMPUTE}/flavors", {"flavor": {"name": "storm", **FLAVOR}})[0]["flavor"]["id"]
    image = client.request("POST", "/image/v2/images", {"name": "storm", "disk_format": "raw",
                                                        "container_format": "bare"})[0]["id"]
    client.request("PUT", f"/image/v2/images/{image}/file", raw=b"\0" * 4096)
    network = client.request("POST", "/networking/v2.0/networks", {"network": {"name": "storm"}})[0]["network"]["id"]
    client.request("POST", "/networking/v2.0/subnets", {"subnet": {"network_id": network, "ip_version": 4,
                                                                   "cidr": "10.64.0.0/14"}})
    client.request("PUT", f"{COMPUTE}/os-quota-sets/{project}", {"quota_set": {
        "instances": servers, "cores": servers * FLAVOR["vcpus"], "ram": servers * FLAVOR["ram"]}})
    body = {"flavorRef": flavor, "imageRef": image, "networks": [{"uuid": network}]}
    if security_group == "plain":
        # Egress only, as every new group starts: no rule names a remote group.
        client.request("POST", "/networking/v2.0/security-groups", {"security_group": {"name": "storm-plain"}})
        body["security_groups"] = [{"name": "storm-plain"}]
    return body


def run_clients(count: int, jobs: list, work, deadline: float) -> list:
    """``work(client_index, job)`` for every job, from ``count`` threads, until the jobs or the
    time (``deadline``, a time.monotonic() value) run out; the results in job order (None for a
    job never started). The first exception ends the run (raised here)."""
    results: list = [None] * len(jobs)
    cursor = iter(range(len(jobs)))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def loop(index: int) -> None:
        while not errors and time.monotonic() < deadline:
            with lock:
                n = next(cursor, None)
            if n is None:
                return
            try:
                results[n] = work(index, jobs[n])
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

    threads = [threading.Thread(target=loop, args=(i,), name=f"client-{i}") for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


class Profile:
    """py-spy sampling some worker processes from the first POST on."""

    def __init__(self, pids: list[int], out: Path, seconds: float, what: str) -> None:
        self.what = what
        exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
        if exe is None:
            raise SystemExit("--profile needs py-spy (pip install py-spy into the venv)")
        self.outputs = [out.with_name(f"{out.stem}-{pid}.txt") for pid in pids]
        self.procs = [subprocess.Popen([exe, "record", "--pid", str(pid), "--format", "raw", "--rate", "200",
                                        "--duration", str(int(seconds)), "--nonblocking", "--output", str(path)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                      for pid, path in zip(pids, self.outputs, strict=True)]

    def report(self, top: int = 18) -> None:
        for proc in self.procs:
            proc.wait(600)
        own: collections.Counter[str] = collections.Counter()
        inclusive: collections.Counter[str] = collections.Counter()
        total = 0
        for path in self.outputs:
            if not path.exists():
                continue
            for line in path.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                if not stack or not count.isdigit():
                    continue
                frames = [f.strip() for f in stack.split(";") if f.strip()]
                if not frames:
                    continue
                samples = int(count)
                total += samples
                own[frames[-1]] += samples
                for frame in set(frames):
                    inclusive[frame] += samples
        if not total:
            print("  profile: no samples")
            return
        print(f"  profile of {self.what} ({total} samples over {len(self.outputs)} processes), own time:")
        for frame, samples in own.most_common(top):
            print(f"    {samples * 100 / total:5.1f}%  {frame}")
        print("  ... including callees (fabric's own functions):")
        shown = 0
        for frame, samples in inclusive.most_common():
            if "fabric/" in frame and shown < top:
                print(f"    {samples * 100 / total:5.1f}%  {frame}")
                shown += 1


def instance_rows(db: Database, ids: list[str]) -> list:
    rows = []
    with db.begin() as session:
        for start in range(0, len(ids), 1000):
            rows += session.execute(sa.select(Instance.id, Instance.vm_state, Instance.task_state, Instance.host,
                                              Instance.launched_at, Instance.deleted)
                                    .where(Instance.id.in_(ids[start:start + 1000]))).all()
    return rows


def database_sessions(db: Database) -> int:
    """Sessions the server has opened on the storm's database so far (PostgreSQL's count)."""
    with db.begin() as session:
        return session.scalar(sa.text("SELECT sessions FROM pg_stat_database WHERE datname = current_database()"))


def count_where(db: Database, query) -> int:
    with db.begin() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(query.subquery()))


def leftovers(db: Database, ids: list[str], port_ids: list[str]) -> dict[str, int]:
    """Rows that must be gone once every server is deleted (all zero when clean)."""
    found: dict[str, int] = {}

    def chunks(values: list[str]):
        for start in range(0, max(len(values), 1), 1000):
            yield values[start:start + 1000]

    found["instances not deleted"] = sum(count_where(db, sa.select(Instance.id).where(
        Instance.id.in_(part), Instance.deleted.is_(False))) for part in chunks(ids))
    found["ports of the servers"] = sum(count_where(db, sa.select(Port.id).where(Port.device_id.in_(part)))
                                       for part in chunks(ids)) + sum(
        count_where(db, sa.select(Port.id).where(Port.id.in_(part))) for part in chunks(port_ids))
    found["address allocations of servers"] = count_where(db, sa.select(AddressAllocation.id).where(
        AddressAllocation.request_token.like("instance:%")))
    found["port group memberships of the servers' ports"] = sum(count_where(db, sa.select(
        PortSecurityGroup.port_id).where(PortSecurityGroup.port_id.in_(part))) for part in chunks(port_ids))
    found["server group slots"] = count_where(db, sa.select(ServerGroupHost.id))
    found["outbox casts"] = count_where(db, sa.select(OutboxCast.id))
    found["hosts with claimed capacity"] = count_where(db, sa.select(ComputeNode.id).where(sa.or_(
        ComputeNode.vcpus_used != 0, ComputeNode.memory_mb_used != 0, ComputeNode.disk_gb_used != 0)))
    found["server quota usage not zero"] = count_where(db, sa.select(QuotaUsage.id).where(
        QuotaUsage.resource.in_(SERVER_QUOTAS), QuotaUsage.in_use != 0))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--servers", type=int, default=10000)
    parser.add_argument("--clients", type=int, default=64, help="concurrent HTTP clients")
    parser.add_argument("--host-processes", type=int, default=4, help="processes the fake hosts are spread over")
    parser.add_argument("--schedulers", type=int, default=4)
    parser.add_argument("--api-workers", type=int, default=2, help="[api] workers (when this tree has it)")
    parser.add_argument("--pool-size", type=int, default=8, help="[database] pool_size of every process")
    parser.add_argument("--security-group", choices=("default", "plain"), default="default",
                        help="the servers' group: the project's default (ingress from its own members: every "
                             "plug and unplug is announced to every host) or a new one with egress rules only")
    parser.add_argument("--hosts-pool-size", type=int, default=16, help="[database] pool_size of each fake-hosts process")
    parser.add_argument("--stagger", type=float, default=10.0,
                        help="seconds over which each process starts its hosts (spreads their periodic work)")
    parser.add_argument("--idle-seconds", type=float, default=10.0,
                        help="seconds the workers' idle CPU is measured for before the first POST")
    parser.add_argument("--start-timeout", type=float, default=600.0)
    parser.add_argument("--send-timeout", type=float, default=900.0,
                        help="seconds the clients may take posting; the servers posted by then are measured")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds each phase may take to settle")
    parser.add_argument("--profile", metavar="KINDS", help="py-spy these worker kinds from the first POST on: "
                        "api, scheduler, ipam, objectstore, compute+network (comma-separated)")
    parser.add_argument("--profile-seconds", type=float, default=30.0)
    parser.add_argument("--profile-top", type=int, default=18, help="functions the profile lists in each view")
    parser.add_argument("--keep-logs", type=Path, help="copy the workers' logs here")
    args = parser.parse_args()
    capacity = args.hosts * min(HOST["fake_memory_mb"] * RATIOS["ram_allocation_ratio"] // FLAVOR["ram"],
                                HOST["fake_vcpus"] * RATIOS["cpu_allocation_ratio"] // FLAVOR["vcpus"],
                                HOST["fake_disk_gb"] * RATIOS["disk_allocation_ratio"] // FLAVOR["disk"])
    if args.servers > capacity:
        parser.error(f"--servers {args.servers}: {args.hosts} hosts hold at most {capacity:.0f}")
    interrupt_on_stop_signals()  # a run of half an hour is stopped with SIGINT or SIGTERM: it still cleans up
    db_name, db_url = create_postgres_database("fabric_storm")
    try:
        with rabbit_vhost("fabric_storm") as (vhost, amqp_url), \
                tempfile.TemporaryDirectory(prefix="fabric-storm-") as tmp:
            return storm(args, Path(tmp), db_url, amqp_url, vhost)
    finally:
        drop_postgres_database(db_name)


def storm(args: argparse.Namespace, work: Path, db_url: str, amqp_url: str, vhost: str) -> int:
    (work / "logs").mkdir()
    db = Database(db_url)
    bootstrap(db, PASSWORD)
    api_port = free_port()
    conf = write_config(work, args, db_url, amqp_url, api_port)
    cloud = Cloud(work, conf)
    try:
        started = time.monotonic()
        start_cloud(cloud, args)
        wait_ready(cloud, db, args, api_port)
        print(f"{args.hosts} fake hosts in {args.host_processes} processes, {args.schedulers} schedulers, "
              f"1 IPAM, API with [api] workers = {args.api_workers}, servers in the {args.security_group} "
              f"security group: ready after {time.monotonic() - started:.0f} s "
              f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)", flush=True)
        by_kind = broker_connections(cloud, vhost)
        print(f"broker connections: {sum(map(sum, by_kind.values()))} in all; per process: " + ", ".join(
            f"{kind} {'/'.join(map(str, counts))}" for kind, counts in sorted(by_kind.items())), flush=True)
        admin = Client(api_port)
        project = admin.login()
        body = prepare(admin, project, args.servers, args.security_group)
        clients = [Client(api_port, admin.token) for _ in range(args.clients)]
        return measure(args, cloud, db, clients, body, work)
    finally:
        cloud.stop()
        if args.keep_logs:
            shutil.copytree(work / "logs", args.keep_logs, dirs_exist_ok=True)
        db.dispose()


def wait_settled(cloud: Cloud, db: Database, unsettled, timeout: float, what: str) -> float:
    """Poll until no instance row matches ``unsettled`` (a WHERE clause: the database holds only
    the storm's servers); time.time() then. Gives up (saying so) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if count_where(db, sa.select(Instance.id).where(unsettled)) == 0:
            return time.time()
        if time.monotonic() > deadline:
            print(f"  {what}: gave up after {timeout:.0f} s", flush=True)
            return time.time()
        cloud.check_alive()
        time.sleep(0.5)


def measure(args: argparse.Namespace, cloud: Cloud, db: Database, clients: list[Client], body: dict,
            work: Path) -> int:
    n = args.servers
    # What each kind spends with nothing to build (heartbeats, resource reports, periodic
    # tasks): over a phase that lasts longer on a loaded machine it adds more CPU per server,
    # so the figures are also given less this idle rate (comparable across loads).
    idle_start, idle_from = cloud.cpu_by_kind(), time.monotonic()
    services_idle_start, work_idle_start = services_cpu(), database_work(db)
    time.sleep(args.idle_seconds)
    idle_end, idle_seconds = cloud.cpu_by_kind(), time.monotonic() - idle_from
    services_idle_end, work_idle_end = services_cpu(), database_work(db)
    idle_rate = {kind: (idle_end[kind] - idle_start.get(kind, 0.0)) / idle_seconds for kind in idle_end}
    idle_rate.update({service: (services_idle_end[service] - services_idle_start[service]) / idle_seconds
                      for service in services_idle_end})
    idle_work = [(end - start) / idle_seconds for start, end in zip(work_idle_start, work_idle_end, strict=True)]
    print(f"idle for {idle_seconds:.0f} s before the first POST, CPU per second: " + ", ".join(
        f"{kind} {rate * 1000:.0f} ms" for kind, rate in sorted(idle_rate.items())) +
        f"; database {idle_work[0]:.0f} transactions and {idle_work[1]:.0f} rows written per second"
        f" (load average {os.getloadavg()[0]:.1f})", flush=True)
    cpu_before = cloud.cpu_by_kind()
    profile = None
    if args.profile:
        kinds = {kind.strip() for kind in args.profile.split(",")}
        pids = [pid for worker in cloud.workers if worker.kind.split()[0] in kinds for pid in worker.pids()]
        profile = Profile(pids, work / "profile", args.profile_seconds, ", ".join(sorted(kinds)))

    def create(index: int, number: int) -> tuple[str, float, float]:
        posted = time.time()
        doc, _ = clients[index].request("POST", f"{COMPUTE}/servers",
                                        {"server": dict(body, name=f"storm-{number}")}, expect=(202,))
        return doc["server"]["id"], posted, time.time()

    sessions_before = database_sessions(db)
    work_before = database_work(db)
    services_before = services_cpu()
    machine_before = machine_cpu()
    first_post = time.time()
    created = [c for c in run_clients(args.clients, list(range(n)), create, time.monotonic() + args.send_timeout)
               if c is not None]
    if not created:
        raise SystemExit(f"no POST /servers was accepted within --send-timeout {args.send_timeout:.0f} s")
    accepted = max(c[2] for c in created)
    ids = [c[0] for c in created]
    posted_at = {c[0]: c[1] for c in created}
    if len(ids) < n:
        print(f"POST /servers: only {len(ids)} of {n} accepted within --send-timeout {args.send_timeout:.0f} s; "
              "the figures below are for those", flush=True)
    n = len(ids)
    print(f"POST /servers x{n} from {args.clients} clients: {n / (accepted - first_post):.1f}/s "
          f"(all accepted after {accepted - first_post:.1f} s)", flush=True)
    cpu_api_posts = cloud.cpu_by_kind().get("api", 0.0) - cpu_before.get("api", 0.0)
    # Connections opened meanwhile (a pool's overflow closed and opened again under a burst
    # costs its process a connect each), and how loaded the machine was: the CPU figures of
    # two runs compare only at a similar load.
    print(f"  database sessions opened meanwhile (every process): {database_sessions(db) - sessions_before}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)

    wait_settled(cloud, db, Instance.vm_state.not_in(("active", "error")), args.timeout, "create")
    rows = instance_rows(db, ids)
    cpu_after, phase_seconds, machine_after = cloud.cpu_by_kind(), time.time() - first_post, machine_cpu()
    services_after, work_after = services_cpu(), database_work(db)
    if profile is not None:
        profile.report(args.profile_top)
    active = [r for r in rows if r.vm_state == "active"]
    with db.begin() as session:
        faulted = set(session.scalars(sa.select(InstanceFault.instance_id).where(InstanceFault.instance_id.in_(
            [r.id for r in rows if r.vm_state == "error"] or [""]))))
    errors = [r for r in rows if r.vm_state == "error"]
    stuck = [r for r in rows if r.vm_state not in ("active", "error") or (r.vm_state == "error" and r.id not in faulted)]
    latencies = [_epoch(r.launched_at) - posted_at[r.id] for r in active]
    last_active = max((_epoch(r.launched_at) for r in active), default=first_post)
    over = overcommitted(db, ram_ratio=RATIOS["ram_allocation_ratio"], cpu_ratio=RATIOS["cpu_allocation_ratio"],
                         disk_ratio=RATIOS["disk_allocation_ratio"])
    per_host = collections.Counter(r.host for r in active)
    print(f"ACTIVE: {len(active)} of {n} ({len(errors)} ERROR with a fault, {len(stuck)} stuck) on "
          f"{len(per_host)} hosts (most on one: {max(per_host.values(), default=0)}); "
          f"{len(active) / max(last_active - first_post, 1e-9):.1f} servers/s end to end (goal >= {GOAL_RATE})",
          flush=True)
    if latencies:
        print(f"POST -> ACTIVE: p50 {percentile(latencies, 0.5):.2f} s, p99 {percentile(latencies, 0.99):.2f} s, "
              f"max {max(latencies):.2f} s (goal p99 < 5 s; anchor: {OPENSTACK_ANCHOR})", flush=True)
    print(f"API CPU per POST /servers: {cpu_api_posts * 1000 / n:.1f} ms (goal <= 8 ms; the API's CPU from the first "
          "POST to the last 202, over the servers)")
    print(f"CPU per server by worker kind (first POST to last ACTIVE, {phase_seconds:.0f} s; and less the idle "
          "rate over that time):")
    for kind in sorted(cpu_after):
        spent = cpu_after[kind] - cpu_before.get(kind, 0.0)
        net = spent - idle_rate.get(kind, 0.0) * phase_seconds
        print(f"  {kind:30s} {spent * 1000 / n:7.2f} ms  ({spent:.1f} s in all); less idle {net * 1000 / n:7.2f} ms")
    spent_by_kind = {kind: cpu_after[kind] - cpu_before.get(kind, 0.0) for kind in cpu_after}
    print_machine_bound(machine_before, machine_after, sum(spent_by_kind.values()), spent_by_kind.get(FAKE_HOSTS, 0.0), n)
    print_services(services_before, services_after, work_before, work_after, n,
                   {service: rate * phase_seconds for service, rate in idle_rate.items()},
                   [rate * phase_seconds for rate in idle_work])
    print(f"over-committed hosts: {len(over)} (must be 0); servers stuck: {len(stuck)} (must be 0)", flush=True)
    if stuck:
        print(f"  stuck, by state: {collections.Counter((r.vm_state, r.task_state) for r in stuck)}")

    with db.begin() as session:
        port_ids = [p for part in range(0, len(ids), 1000) for p in session.scalars(
            sa.select(Port.id).where(Port.device_id.in_(ids[part:part + 1000])))]
    first_delete = time.time()
    run_clients(args.clients, ids, lambda index, server: clients[index].request(
        "DELETE", f"{COMPUTE}/servers/{server}", expect=(204,)), float("inf"))
    deletes_sent = time.time()
    gone_at = wait_settled(cloud, db, Instance.deleted.is_(False), args.timeout, "delete")
    gone = sum(1 for r in instance_rows(db, ids) if r.deleted)
    print(f"DELETE x{n}: sent at {n / (deletes_sent - first_delete):.1f}/s; {gone} deleted after "
          f"{gone_at - first_delete:.1f} s = {gone / (gone_at - first_delete):.1f} servers/s", flush=True)
    # The claim and the quota are given back just after the row is marked deleted.
    settle_deadline = time.monotonic() + 30
    while any((left := leftovers(db, ids, port_ids)).values()) and time.monotonic() < settle_deadline:
        time.sleep(0.5)
    print(f"  everything released {time.time() - first_delete:.1f} s after the first DELETE", flush=True)
    history = count_where(db, sa.select(Instance.id).where(Instance.deleted.is_(True)))
    print(f"left after the deletes: {left}; history kept: {history} deleted instance rows", flush=True)
    clean = not over and not stuck and not any(left.values()) and gone == n
    return 0 if clean else 1


def print_machine_bound(before: tuple[float, float], after: tuple[float, float], workers_cpu: float,
                        hosts_cpu: float, servers: int) -> None:
    """The whole machine over the create phase: how busy its CPUs were, its CPU per server (every
    process: fabric's workers, PostgreSQL, RabbitMQ, this benchmark's clients, and anything else
    running), and the most servers/s its CPUs could build at that cost: the rate's ceiling here
    whatever the scheduling, and what the goal asks of the CPU per server. Then the same without
    ``hosts_cpu``, the simulated hosts' own processes: on a real cloud each host's compute and
    network workers run on that host, not on the machine of the API, schedulers, database and
    broker (their statements and messages still count, in PostgreSQL's and RabbitMQ's CPU)."""
    busy, elapsed = after[0] - before[0], after[1] - before[1]
    cpus = os.cpu_count() or 1
    per_server = busy / servers
    print(f"machine over the same time (/proc/stat): {busy / max(elapsed, 1e-9) * cpus:.2f} of {cpus} CPUs busy "
          f"({busy / max(elapsed, 1e-9):.0%}); {per_server * 1000:.1f} ms of CPU per server in all, of which "
          f"fabric's workers {workers_cpu * 1000 / servers:.1f} ms and the rest (PostgreSQL, RabbitMQ, these "
          f"clients, anything else) {(busy - workers_cpu) * 1000 / servers:.1f} ms", flush=True)
    print(f"  at that CPU per server, {cpus} CPUs build at most {cpus / max(per_server, 1e-9):.1f} servers/s; "
          f"{GOAL_RATE}/s needs at most {cpus / GOAL_RATE * 1000:.1f} ms per server in all", flush=True)
    central = (busy - hosts_cpu) / servers
    print(f"  without the simulated hosts' own processes ({hosts_cpu * 1000 / servers:.1f} ms per server): "
          f"{central * 1000:.1f} ms per server, at most {cpus / max(central, 1e-9):.1f} servers/s on {cpus} CPUs",
          flush=True)


def print_services(before: dict[str, float], after: dict[str, float], work_before: tuple[int, int],
                   work_after: tuple[int, int], servers: int, idle: dict[str, float], idle_work: list[float]) -> None:
    """The rest of the machine's CPU per server, by service, and what the database did per server;
    each also less what the idle cloud (heartbeats, periodic tasks) would have spent over the
    phase, ``idle`` and ``idle_work``. Their sum less idle is a floor under the CPU per server
    that no change to fabric's workers alone lowers: the goal's rate needs the whole machine
    under ``cpus / GOAL_RATE`` per server, these included; only fewer statements, messages or
    requests per server lower it."""
    cpus = os.cpu_count() or 1
    spent = {service: after[service] - before[service] for service in after}
    net = {service: seconds - idle.get(service, 0.0) for service, seconds in spent.items()}
    print("  of the rest, per server (less idle): " + ", ".join(
        f"{service} {seconds * 1000 / servers:.1f} ms ({net[service] * 1000 / servers:.1f})"
        for service, seconds in spent.items()), flush=True)
    floor = sum(net.values()) / servers
    print(f"  those alone, less idle: {floor * 1000:.1f} ms per server, at most {cpus / max(floor, 1e-9):.1f} "
          f"servers/s on {cpus} CPUs were fabric's workers free (goal {GOAL_RATE}/s: "
          f"{cpus / GOAL_RATE * 1000:.1f} ms per server in all)", flush=True)
    done = [end - start for start, end in zip(work_before, work_after, strict=True)]
    print(f"  database per server (every process, pg_stat_database): {done[0] / servers:.1f} transactions "
          f"({(done[0] - idle_work[0]) / servers:.1f} less idle), {done[1] / servers:.1f} rows written "
          f"({(done[1] - idle_work[1]) / servers:.1f} less idle)", flush=True)


def _epoch(naive_utc: datetime.datetime) -> float:
    """Seconds since the epoch of a stored timestamp (naive UTC, :func:`fabric.db.types.utcnow`)."""
    return naive_utc.replace(tzinfo=datetime.UTC).timestamp()


if __name__ == "__main__":
    sys.exit(main())
