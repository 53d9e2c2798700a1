"""What one ``POST /compute/v2.1/servers`` costs the API: CPU and SQL statements.

The API's WSGI app (fabric.api.app.build_app, eventlet-patched as every launcher is) is
called directly, in-process, on a throwaway PostgreSQL database, as the storm's admin posts (a flavor, an
active image, one network with a subnet, the project's ``default`` security group). The
workers are recording clients: the scheduler's cast is staged in the outbox and "sent"
without a broker, so the figures are the API's own work (the storm's API CPU also holds
RabbitMQ publishing with confirms and the HTTP server's parsing).

Printed, over ``--rounds`` rounds of ``--posts`` servers after ``--warmup`` (tokens, caches
and quota rows warm): process CPU per POST (the median of the rounds), wall time, SQL
statements, transactions and pool checkouts per POST (each statement by its kind and
table), beside the same for the reference measured in every round just before: ``GET`` of
the flavor (token check, policy, one read: the floor every request pays), and the median
ratio of the two. Goal (issue 19):
POST /servers at most 8 ms of API CPU. ``--profile`` runs the timed POSTs under cProfile
and prints the hottest functions (by CPU time).

``--http`` serves the same app with fabric's green HTTP server (fabric.wsgi, eventlet.wsgi)
on a loopback port and sends the requests from a client process over one keep-alive
connection, so the figures add what the server's HTTP parsing and writing cost this
process (the client's CPU is its own); the difference from a run without it is that cost.

Run from the repository root with PostgreSQL up: ``.venv/bin/python tools/bench/post_cost.py
[--posts 100] [--rounds 5] [--profile]``. Drops the database it made.
"""

from __future__ import annotations  # noqa: I001 - eventlet_entry must stay first

import fabric.cmd.eventlet_entry  # noqa: F401, I001 - first: green (and psycopg's wait) as in every launcher

import argparse  # noqa: E402
import collections  # noqa: E402
import cProfile  # noqa: E402
import functools  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import pstats  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import sqlalchemy as sa  # noqa: E402
import webtest  # noqa: E402
from _common import create_postgres_database, drop_postgres_database  # noqa: E402

from fabric import config, wsgi  # noqa: E402
from fabric.api.app import FabricApp, build_app  # noqa: E402
from fabric.api.bootstrap import bootstrap  # noqa: E402
from fabric.db import Database  # noqa: E402
from fabric.db.models import Image  # noqa: E402
from fabric.ipam.manager import IpamManager  # noqa: E402
from tests.fixtures.recording_clients import RecordingClients  # noqa: E402

PASSWORD = "bench-post-pw"
COMPUTE = "/compute/v2.1"
GOAL_MS = 8.0


class StatementLog:
    """Every SQL statement ``db`` sends while ``on`` is set, and what goes around them:
    connections checked out of the pool (each checked first, on PostgreSQL by its socket
    without a round trip: fabric.db.green_psycopg) and transactions begun (each a BEGIN and
    a COMMIT or ROLLBACK, unless in autocommit as the token check is)."""

    def __init__(self, db: Database) -> None:
        self.on = False
        self.seen: list[str] = []
        self.checkouts = self.transactions = 0
        sa.event.listen(db.engine, "before_cursor_execute", self._record)
        sa.event.listen(db.engine, "begin", self._begun)
        sa.event.listen(db.engine.pool, "checkout", self._checked_out)

    def _record(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if self.on:
            self.seen.append(statement)

    def _begun(self, conn) -> None:
        # Autocommit begins nothing on the server (psycopg sends no BEGIN).
        self.transactions += self.on and conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT"

    def _checked_out(self, dbapi_connection, record, proxy) -> None:
        self.checkouts += self.on

    def clear(self) -> None:
        self.seen.clear()
        self.checkouts = self.transactions = 0


def kind_of(statement: str) -> str:
    """A statement's kind and table: ``SELECT instances``, ``UPDATE quota_usages``."""
    words = statement.split()
    verb = words[0].upper()
    table = ""
    lowered = [w.lower() for w in words]
    marker = {"SELECT": "from", "DELETE": "from", "INSERT": "into", "UPDATE": None}.get(verb)
    if verb == "UPDATE":
        table = words[1]
    elif marker in lowered:
        table = words[lowered.index(marker) + 1]
    return f"{verb} {table.strip('(),')}".strip()


def setup(db: Database, workdir: Path) -> tuple[FabricApp, webtest.TestApp, dict, dict]:
    """The app over ``db`` (and a test client of it), an admin token, and the storm's create body."""
    bootstrap(db, PASSWORD)
    settings = config.Settings().replace(default={"data_dir": str(workdir / "data")},
                                         api={"public_url": "http://fabric.bench"})
    recorder = RecordingClients(ipam=functools.cache(lambda: IpamManager(settings, host="bench", db=db)))
    wsgi_app = build_app(settings, db, recorder.clients)
    app = webtest.TestApp(wsgi_app)
    auth = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"id": "default"}, "password": PASSWORD}}},
        "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
    resp = app.post_json("/v3/auth/tokens", auth)
    headers = {"X-Auth-Token": resp.headers["X-Subject-Token"]}
    project = resp.json["token"]["project"]["id"]
    flavor = app.post_json(f"{COMPUTE}/flavors", {"flavor": {"name": "bench", "vcpus": 1, "ram": 512, "disk": 1}},
                           headers=headers).json["flavor"]["id"]
    with db.begin() as session:
        image = Image(name="bench", owner=project, status="active", visibility="public", disk_format="raw",
                      container_format="bare", size=4096, properties={})
        session.add(image)
        session.flush()
        image_id = image.id
    network = app.post_json("/networking/v2.0/networks", {"network": {"name": "bench"}},
                            headers=headers).json["network"]["id"]
    app.post_json("/networking/v2.0/subnets", {"subnet": {"network_id": network, "ip_version": 4,
                                                          "cidr": "10.64.0.0/14"}}, headers=headers)
    app.put_json(f"{COMPUTE}/os-quota-sets/{project}", {"quota_set": {"instances": -1, "cores": -1, "ram": -1}},
                 headers=headers)
    body = {"server": {"name": "b", "flavorRef": flavor, "imageRef": image_id, "networks": [{"uuid": network}]}}
    return wsgi_app, app, headers, body


def direct_call(wsgi_app, method: str, path: str, headers: dict, body: dict | None, status: int) -> bytes:
    """Call the WSGI app itself, as the HTTP server would (no test client's checks and parsing in
    the measured CPU); SystemExit unless it answers ``status``."""
    data = json.dumps(body).encode() if body is not None else b""
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "fabric.bench",
               "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
               "wsgi.input": io.BytesIO(data), "wsgi.errors": sys.stderr, "wsgi.version": (1, 0),
               "wsgi.multithread": False, "wsgi.multiprocess": False, "wsgi.run_once": False,
               "CONTENT_LENGTH": str(len(data)), "CONTENT_TYPE": "application/json" if body is not None else "",
               **{"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()}}
    answered = []
    out = b"".join(wsgi_app(environ, lambda status_line, _headers, exc_info=None: answered.append(status_line)))
    if not answered[0].startswith(str(status)):
        raise SystemExit(f"{method} {path} -> {answered[0]}: {out[:300]!r}")
    return out


#: The ``--http`` client: reads "<method> <path> <count>" lines, sends that request ``count``
#: times over its one connection (the body and headers given once, as JSON, in argv), and
#: answers "ok" or the first unexpected status.
_CLIENT = """
import http.client, json, sys
port, headers, body = int(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3].encode()
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for line in sys.stdin:
    method, path, count = line.split()
    error = ""
    for _ in range(int(count)):
        conn.request(method, path, body=body if method == "POST" else None,
                     headers=dict(headers, **({"Content-Type": "application/json"} if method == "POST" else {})))
        resp = conn.getresponse()
        data = resp.read()
        if resp.status not in (200, 202):
            error = f"{method} {path} -> {resp.status}: {data[:300]!r}"
            break
    print(error or "ok", flush=True)
"""


class HttpClient:
    """A client process sending requests to ``port`` (see _CLIENT); ``batch`` waits greenly."""

    def __init__(self, port: int, headers: dict, body: dict) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _CLIENT, str(port), json.dumps(headers), json.dumps(body)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def batch(self, method: str, path: str, count: int) -> None:
        self.proc.stdin.write(f"{method} {path} {count}\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        if answer != "ok":
            raise SystemExit(answer or "the HTTP client process died")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def measure(count: int, request, log: StatementLog, profile: cProfile.Profile | None = None) -> dict:
    """Run ``request(count)`` (the request ``count`` times): CPU and wall ms, statements,
    transactions and pool checkouts per request, and the statements by kind."""
    log.clear()
    log.on = True
    cpu, wall = time.process_time(), time.perf_counter()
    if profile:
        profile.enable()
    request(count)
    if profile:
        profile.disable()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    log.on = False
    kinds = collections.Counter(kind_of(s) for s in log.seen)
    return {"cpu_ms": cpu * 1000 / count, "wall_ms": wall * 1000 / count, "statements": len(log.seen) / count,
            "transactions": log.transactions / count, "checkouts": log.checkouts / count,
            "kinds": {k: v / count for k, v in kinds.most_common()}}


def report(label: str, rounds: list[dict]) -> float:
    """Print the median of ``rounds`` and the last round's statements; the median CPU ms."""
    cpu = statistics.median(r["cpu_ms"] for r in rounds)
    last = rounds[-1]
    each = ", ".join(f"{r['cpu_ms']:.2f}" for r in rounds)
    print(f"{label}: {cpu:.2f} ms CPU (median of {len(rounds)} rounds: {each}), {statistics.median(r['wall_ms'] for r in rounds):.2f} "
          f"ms wall; {last['statements']:.1f} SQL statements, {last['transactions']:.1f} transactions, "
          f"{last['checkouts']:.1f} pool checkouts per request")
    for kind, per in last["kinds"].items():
        print(f"    {per:5.2f}  {kind}")
    return cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=100, help="POSTs (and reference GETs) per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of GETs then POSTs (a loaded machine's "
                                                             "drift falls on both alike)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--profile", action="store_true", help="cProfile the timed POSTs")
    parser.add_argument("--http", action="store_true", help="through fabric's HTTP server, from a client process")
    args = parser.parse_args()
    name, url = create_postgres_database("fabric_bench_post")
    db = Database(url)
    try:
        with tempfile.TemporaryDirectory() as workdir:
            wsgi_app, app, headers, body = setup(db, Path(workdir))
            log = StatementLog(db)
            flavor = body["server"]["flavorRef"]

            server = client = None
            if args.http:
                server = wsgi.GreenServer(wsgi.listen("127.0.0.1", 0), wsgi_app).start()
                client = HttpClient(server.port, headers, body)

                def show_flavor(times=1):
                    client.batch("GET", f"{COMPUTE}/flavors/{flavor}", times)

                def post(times=1):
                    client.batch("POST", f"{COMPUTE}/servers", times)
            else:
                def show_flavor(times=1):
                    for _ in range(times):
                        direct_call(wsgi_app, "GET", f"{COMPUTE}/flavors/{flavor}", headers, None, 200)

                def post(times=1):
                    for _ in range(times):
                        direct_call(wsgi_app, "POST", f"{COMPUTE}/servers", headers, body, 202)

            for _ in range(args.warmup):
                show_flavor()
                post()
            # CPU time, not wall: what the goal counts (waits for PostgreSQL cost the API nothing).
            profile = cProfile.Profile(time.process_time) if args.profile else None
            references, posts = [], []
            for _ in range(args.rounds):
                references.append(measure(args.posts, show_flavor, log))
                posts.append(measure(args.posts, post, log, profile))
            report("reference GET /flavors/{id}", references)
            posted = report("POST /servers", posts)
            ratio = statistics.median(p["cpu_ms"] / r["cpu_ms"] for p, r in zip(posts, references, strict=True))
            last = posts[-1]
            print(f"POST /servers: {posted:.2f} ms API CPU each (goal <= {GOAL_MS:.0f} ms), {ratio:.1f}x the "
                  f"reference GET (median of the rounds' ratios); {last['statements']:.1f} statements and "
                  f"{last['transactions']:.1f} transactions against the GET's {references[-1]['statements']:.1f} "
                  f"and {references[-1]['transactions']:.1f}")
            if profile:
                for order in ("tottime", "cumulative"):
                    out = io.StringIO()
                    pstats.Stats(profile, stream=out).sort_stats(order).print_stats(35)
                    print(out.getvalue())
            if client is not None:
                client.close()
                server.stop()
            wsgi_app.deps.outbox.stop()  # its last confirmed rows deleted before the database goes
    finally:
        db.dispose()
        drop_postgres_database(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
