"""API benchmark.

1. ``GET /compute/v2.1/servers/detail`` with 1,000 servers in the project:
   p50/p99 latency over HTTP against the API served by eventlet.wsgi
   (in-process server on a green thread; this module imports
   fabric.cmd.eventlet_entry first, as the launchers do, so psycopg's waits are
   green), on a SQLite file and on a throwaway PostgreSQL database
   (``--databases``), with the process's CPU time per request.
2. ``POST /servers`` throughput through to ACTIVE: a ``fabric-all`` process on
   RabbitMQ (a throwaway vhost) with the fake virt driver and the recording
   network driver; N servers are posted as fast as the API takes them, then
   polled until every one is ACTIVE.

Run from the repository root: ``python tools/bench/api.py [--servers 1000]
[--requests 200] [--boots 50] [--databases sqlite,postgresql] [--skip-boot]``. Prints its figures; removes the
vhost, process and files it made.
"""

from __future__ import annotations  # noqa: I001 - eventlet_entry must stay first

import fabric.cmd.eventlet_entry  # noqa: F401, I001 - first: green (and psycopg's wait) as in every launcher

import argparse  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import sqlalchemy as sa  # noqa: E402
from _common import (  # noqa: E402
    create_postgres_database,
    drop_postgres_database,
    percentile,
    rabbit_vhost,
    seed_active_servers,
    stop_processes,
)

from fabric import config  # noqa: E402
from fabric.api.bootstrap import bootstrap  # noqa: E402
from fabric.api.server import ApiServer  # noqa: E402
from fabric.db import Database  # noqa: E402
from fabric.db.models import Base, Instance  # noqa: E402
from tests.fixtures.processes import free_port  # noqa: E402
from tests.fixtures.recording_clients import RecordingClients  # noqa: E402

PASSWORD = "bench-pw"


class Http:
    """A tiny JSON client over one keep-alive connection."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.token = ""

    def raw(self, method: str, path: str, body=None, expect=(200,)) -> tuple[bytes, dict]:
        """The response body unparsed (the timed loop: the API's cost, not the client's JSON parse)."""
        headers = {"X-Auth-Token": self.token, "Content-Type": "application/json"}
        data = json.dumps(body).encode() if body is not None else None
        self.conn.request(method, path, body=data, headers=headers)
        resp = self.conn.getresponse()
        raw = resp.read()
        if resp.status not in expect:
            raise SystemExit(f"{method} {path} -> {resp.status}: {raw[:300]!r}")
        return raw, dict(resp.getheaders())

    def request(self, method: str, path: str, body=None, expect=(200,)) -> tuple[dict, dict]:
        raw, headers = self.raw(method, path, body, expect)
        return (json.loads(raw) if raw else {}), headers

    def login(self) -> str:
        auth = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "domain": {"id": "default"}, "password": PASSWORD}}},
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
        doc, headers = self.request("POST", "/v3/auth/tokens", auth, expect=(201,))
        self.token = headers.get("X-Subject-Token") or headers["x-subject-token"]
        return doc["token"]["project"]["id"]


def bench_list(workdir: Path, servers: int, requests: int, backend: str) -> None:
    pg_name, url = (create_postgres_database("fabric_bench") if backend == "postgresql"
                    else (None, f"sqlite:///{workdir / 'list.sqlite'}"))
    try:
        _bench_list(workdir, Database(url), servers, requests)
    finally:
        if pg_name:
            drop_postgres_database(pg_name)


def _bench_list(workdir: Path, db: Database, servers: int, requests: int) -> None:
    seed_active_servers(db, servers, PASSWORD)
    settings = config.Settings().replace(default={"data_dir": str(workdir / "data")},
                                         api={"listen": "127.0.0.1", "port": 0})
    server = ApiServer(settings, db, RecordingClients().clients).start()
    try:
        client = Http(server.port)
        client.login()
        doc, _ = client.request("GET", "/compute/v2.1/servers/detail")
        assert len(doc["servers"]) == servers, len(doc["servers"])
        timings = []
        cpu_started = time.process_time()
        for _ in range(requests):
            started = time.perf_counter()
            client.raw("GET", "/compute/v2.1/servers/detail")
            timings.append((time.perf_counter() - started) * 1000)
        cpu_ms = (time.process_time() - cpu_started) * 1000 / requests
        # Client and server share this process: its CPU time per request is a figure that a
        # busy machine distorts far less than wall-clock latency.
        print(f"GET /servers/detail with {servers} servers on {db.backend}, {requests} requests: "
              f"p50 {statistics.median(timings):.1f} ms, p99 {percentile(timings, 0.99):.1f} ms, "
              f"max {max(timings):.1f} ms; CPU {cpu_ms:.1f} ms per request (server, and client without parsing); "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        # The worst case: every server changed since the last poll, so none of their
        # encoded documents can be reused.
        timings, cpu = [], 0.0
        for n in range(max(1, requests // 5)):
            with db.begin() as session:
                session.execute(sa.update(Instance).values(power_state=n % 2 + 1))
            started, cpu_started = time.perf_counter(), time.process_time()
            client.raw("GET", "/compute/v2.1/servers/detail")
            timings.append((time.perf_counter() - started) * 1000)
            cpu += time.process_time() - cpu_started
        print(f"  ... with every server changed before each request, {len(timings)} requests: "
              f"p50 {statistics.median(timings):.1f} ms, max {max(timings):.1f} ms; "
              f"CPU {cpu * 1000 / len(timings):.1f} ms per request")
    finally:
        server.stop()
        db.dispose()


def bench_boot(workdir: Path, boots: int) -> None:
    with rabbit_vhost() as (_, amqp_url):
        _bench_boot(workdir, boots, amqp_url)


def _bench_boot(workdir: Path, boots: int, amqp_url: str) -> None:
    db_path = workdir / "boot.sqlite"
    db = Database(f"sqlite:///{db_path}")
    Base.metadata.create_all(db.engine)
    bootstrap(db, PASSWORD)
    port = free_port()
    conf = workdir / "fabric.conf"
    conf.write_text(f"[DEFAULT]\nhost = bench1\ndata_dir = {workdir / 'data'}\nlog_level = WARNING\n"
                    f"[database]\nurl = sqlite:///{db_path}\n"
                    f"[rpc]\ntransport_url = {amqp_url}\n"
                    f"[api]\nlisten = 127.0.0.1\nport = {port}\n[objectstore]\nport = {free_port()}\n")
    log = open(workdir / "fabric-all.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "fabric.cmd.all", "--config-file", str(conf)], cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        deadline = time.monotonic() + 60
        while b"fabric API listening" not in (workdir / "fabric-all.log").read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("fabric-all did not start:\n" + (workdir / "fabric-all.log").read_text())
            time.sleep(0.1)
        client = Http(port)
        project = client.login()
        flavor, _ = client.request("POST", "/compute/v2.1/flavors",
                                   {"flavor": {"name": "tiny", "ram": 64, "vcpus": 1, "disk": 1}})
        image, _ = client.request("POST", "/image/v2/images", {"name": "img", "disk_format": "raw",
                                                               "container_format": "bare"}, expect=(201,))
        client.conn.request("PUT", f"/image/v2/images/{image['id']}/file", body=b"x" * 4096,
                            headers={"X-Auth-Token": client.token, "Content-Type": "application/octet-stream"})
        client.conn.getresponse().read()
        net, _ = client.request("POST", "/networking/v2.0/networks", {"network": {"name": "n"}}, expect=(201,))
        client.request("POST", "/networking/v2.0/subnets", {"subnet": {"network_id": net["network"]["id"],
                                                                       "cidr": "10.0.0.0/16"}}, expect=(201,))
        client.request("PUT", f"/compute/v2.1/os-quota-sets/{project}",
                       {"quota_set": {"instances": boots, "cores": boots, "ram": 64 * boots}})
        started = time.perf_counter()
        ids = []
        for n in range(boots):
            doc, _ = client.request("POST", "/compute/v2.1/servers", {"server": {
                "name": f"b{n}", "flavorRef": flavor["flavor"]["id"], "imageRef": image["id"],
                "networks": [{"uuid": net["network"]["id"]}]}}, expect=(202,))
            ids.append(doc["server"]["id"])
        accepted = time.perf_counter() - started
        deadline = time.monotonic() + 300
        while True:
            doc, _ = client.request("GET", "/compute/v2.1/servers/detail")
            states = [s["status"] for s in doc["servers"]]
            if states.count("ACTIVE") == boots or "ERROR" in states:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"servers did not all become ACTIVE: {sorted(set(states))}")
            time.sleep(0.05)
        total = time.perf_counter() - started
        if "ERROR" in states:
            raise SystemExit(f"a server went to ERROR: {[s.get('fault') for s in doc['servers'] if 'fault' in s]}")
        print(f"POST /servers x{boots} over RabbitMQ with the fake driver: accepted at {boots / accepted:.1f}/s "
              f"({accepted * 1000 / boots:.1f} ms each); all ACTIVE after {total:.2f} s = {boots / total:.1f} "
              "servers/s end to end")
    finally:
        stop_processes([proc], timeout=30)
        log.close()
        db.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--boots", type=int, default=50)
    parser.add_argument("--databases", default="sqlite,postgresql", help="listing benchmark backends, comma-separated")
    parser.add_argument("--skip-boot", action="store_true", help="only the listing benchmark")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fabric-bench-api-") as tmp:
        for backend in args.databases.split(","):
            bench_list(Path(tmp), args.servers, args.requests, backend.strip())
        if not args.skip_boot:
            bench_boot(Path(tmp), args.boots)
    return 0


if __name__ == "__main__":
    sys.exit(main())
