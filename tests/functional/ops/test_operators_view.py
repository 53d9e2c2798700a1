"""What an operator sees of a running cloud: Prometheus scraping every worker, and
``fabric-manage status``.

Every worker is its own process (``bin/``, fake virt and network drivers) over RabbitMQ and
PostgreSQL, each with its own metrics port. A real Prometheus server (Debian's
``prometheus``) scrapes them every second while 20 servers are created through the API;
its query API must then return the series an operator graphs, with values that follow from
what happened (20 builds, 20 placements, 20 addresses, request latencies that are real
durations). Then ``fabric-manage status`` must say all is well (exit 0), and, after both
compute workers are stopped (a server created then is left waiting for them) and a forged
message is dead-lettered, name each of those as a reason for its non-zero exit.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import kombu
import pytest
import sqlalchemy as sa

from fabric.api.bootstrap import bootstrap
from fabric.db import Database
from tests.fixtures.process_cloud import COMPUTE, Api, prepare, start_cloud
from tests.fixtures.processes import REPO, free_port, stop_process, wait_until

pytestmark = [pytest.mark.functional]

SERVERS = 20
PASSWORD = "ops-admin-pw"


def _prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Debian's prometheus package is missing (tools/test installs it)")
        pytest.skip("prometheus is not installed")
    return found


class Prometheus:
    """A Prometheus server of the test's own: its config, data and port under tmp_path."""

    def __init__(self, tmp_path, targets: list[str]) -> None:
        self.port = free_port()
        directory = tmp_path / "prometheus"
        directory.mkdir()
        (directory / "prometheus.yml").write_text(json.dumps({  # YAML is a superset of JSON
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "fabric", "static_configs": [{"targets": targets}]}]}))
        self.log = open(directory / "prometheus.log", "wb")  # noqa: SIM115 - closed by stop()
        self.popen = subprocess.Popen(
            [_prometheus_binary(), f"--config.file={directory / 'prometheus.yml'}",
             f"--storage.tsdb.path={directory / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def query(self, expression: str) -> list[dict]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        with urllib.request.urlopen(url, timeout=10) as answer:
            document = json.load(answer)
        assert document["status"] == "success", document
        return document["data"]["result"]

    def value(self, expression: str) -> float | None:
        """The single value ``expression`` gives now, or None when it gives nothing yet."""
        try:
            result = self.query(expression)
        except OSError:
            return None  # not listening yet
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        stop_process(self.popen)
        self.log.close()


def _create_storm(api: Api, body: dict) -> list[str]:
    def create(n: int) -> str:
        return api.ok("POST", f"{COMPUTE}/servers", {"server": dict(body["server"], name=f"ops-{n}")})["server"]["id"]

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(create, range(SERVERS)))


def _statuses(api: Api) -> dict[str, str]:
    return {s["id"]: s["status"] for s in api.ok("GET", f"{COMPUTE}/servers/detail")["servers"]}


def _manage(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")} | env
    environment["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, str(REPO / "bin" / "fabric-manage"), *argv],
                          capture_output=True, text=True, env=environment, timeout=120, check=False)


def _manage_status(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return _manage(["status", *args], env)


def test_prometheus_scrapes_every_worker_and_status_names_what_needs_a_person(
        make_empty_database, spawn, tmp_path, rabbit, rabbit_vhost):
    db_url = make_empty_database("postgresql")
    # The schema as an operator makes it (status compares its revision with the code's).
    synced = _manage(["db", "sync"], {"FABRIC_DATABASE_URL": db_url})
    assert synced.returncode == 0, synced.stderr
    db = Database(db_url)
    prometheus = None
    try:
        bootstrap(db, PASSWORD)
        cloud = start_cloud(spawn, tmp_path, db_url, rabbit_vhost, metrics=True)
        prometheus = Prometheus(tmp_path, [f"127.0.0.1:{port}" for port in cloud.metrics_ports.values()])
        wait_until(lambda: prometheus.value("count(up == 1)") == len(cloud.metrics_ports), 60,
                   "Prometheus to scrape every worker", workers=cloud.workers, interval=0.5)

        api = Api(cloud.api_port)
        project = api.login(PASSWORD)
        body = prepare(api, project, SERVERS + 1)  # and one more, left waiting for stopped hosts
        ids = _create_storm(api, body)
        wait_until(lambda: all(_statuses(api).get(i) == "ACTIVE" for i in ids), 90, "every server ACTIVE",
                   workers=cloud.workers, interval=0.5)

        # Counters, once scraped after the storm, say exactly what happened: a build, a placement and a
        # plug per server; an address per server, and one for each host's DHCP port
        exactly = {
            'sum(fabric_compute_builds_total{result="active"})': SERVERS,
            'sum(fabric_scheduler_decisions_total{result="placed"})': SERVERS,
            "sum(fabric_network_plug_duration_seconds_count)": SERVERS,
            'sum(fabric_instances{vm_state="active"})': SERVERS,
            'sum(fabric_api_requests_total{route="/compute/v2.1/servers",method="POST",status="202"})': SERVERS,
            'sum(fabric_rpc_handled_total{kind="cast",topic="compute",method="build_instance",outcome="ok"})': SERVERS,
        }
        for expression, value in exactly.items():
            wait_until(lambda e=expression, v=value: prometheus.value(e) == v, 30, f"{expression} == {value}",
                       workers=cloud.workers, interval=0.5)
        # Every worker's database sessions carry its name and host (what an operator traces a
        # connection, a lock or a slow query to).
        with db.begin() as session:
            sessions = collections.Counter(session.scalars(sa.text(
                "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()")))
        assert {f"{binary}@{host}" for binary, host in cloud.started} <= sessions.keys(), sessions
        hosts_used = len({s["OS-EXT-SRV-ATTR:host"] for s in api.ok("GET", f"{COMPUTE}/servers/detail")["servers"]})
        allocated = 'sum(fabric_ipam_allocations_total{result="allocated"})'
        # (at least: an allocation asked again, by a redelivered build, is counted again)
        wait_until(lambda: (prometheus.value(allocated) or 0) >= SERVERS + hosts_used, 30,
                   f"{allocated} >= servers + DHCP ports",
                   workers=cloud.workers, interval=0.5)
        # The image went into the objectstore once and out to each host that built (the worker and
        # its helper process count separately; the scrape sums them).
        image_bytes = 4096
        wait_until(lambda: (prometheus.value("sum(fabric_objectstore_received_bytes_total)") or 0) >= image_bytes
                   and (prometheus.value("sum(fabric_objectstore_sent_bytes_total)") or 0) >= image_bytes * hosts_used,
                   30, "the objectstore's bytes in and out", workers=cloud.workers, interval=0.5)
        # Latency quantiles (since the workers started) are real durations: above zero, below the storm's.
        for histogram in ('fabric_api_request_duration_seconds_bucket{route="/compute/v2.1/servers",method="POST"}',
                          'fabric_rpc_call_duration_seconds_bucket{topic="ipam",method="allocate"}',
                          'fabric_rpc_handler_duration_seconds_bucket{topic="compute",method="build_instance"}',
                          "fabric_compute_build_duration_seconds_bucket",
                          "fabric_scheduler_decision_duration_seconds_bucket"):
            p99 = prometheus.value(f"histogram_quantile(0.99, sum by (le) ({histogram}))")
            assert p99 is not None and 0 < p99 < 30, (histogram, p99)

        # fabric-manage status: all is well, then three things that need a person.
        env = {"FABRIC_DATABASE_URL": db_url, "FABRIC_RPC_TRANSPORT_URL": rabbit_vhost,
               "FABRIC_SERVICE_SERVICE_DOWN_TIME": "4"}
        healthy = _manage_status(env)
        assert healthy.returncode == 0, healthy.stdout[-1500:] + healthy.stderr
        assert "All is well." in healthy.stdout
        assert "h1" in healthy.stdout and "fabric-compute" in healthy.stdout

        for host in ("h1", "h2"):
            stop_process(cloud.worker("fabric-compute", host).popen)
        # The scheduler still counts them up (60 s without heartbeats by default): the build waits.
        stuck = api.ok("POST", f"{COMPUTE}/servers", {"server": dict(body["server"], name="ops-stuck")})["server"]["id"]
        with kombu.Connection(rabbit_vhost) as connection:
            connection.Producer().publish(b'{"method": "schedule_and_build"}', exchange="fabric",
                                          routing_key="scheduler", content_type="application/json")
        wait_until(lambda: rabbit.queues("messages").get("scheduler.dead", {}).get("messages") == "1", 30,
                   "the forged message dead-lettered", workers=cloud.workers[:1])

        def reported() -> subprocess.CompletedProcess | None:
            done = _manage_status(env, "--stuck-after", "1")
            wanted = ("fabric-compute on h1 is down", "fabric-compute on h2 is down", f"server {stuck}")
            return done if done.returncode == 1 and all(w in done.stdout for w in wanted) else None

        report = wait_until(reported, 60, "status to report the stopped workers and the stuck server", interval=0.5)
        problems = report.stdout.split("Needs attention", 1)[1]
        assert "fabric-compute on h1 is down" in problems and "fabric-compute on h2 is down" in problems
        assert f"server {stuck} is stuck in task" in problems
        assert "queue scheduler has 1 dead letter(s)" in problems
        assert "no worker consumes it" in problems  # the build cast waiting in compute.<host>
        assert "fabric-api on ctl" not in problems  # what is healthy is not named
    finally:
        if prometheus is not None:
            prometheus.stop()
        db.dispose()
