"""Objectstore benchmark: fabric-objectstore beside moto_server and nginx, in one run.

For each server: PUT then GET of 1,000 objects of 64 KiB by 16 concurrent clients
(ops/s, p50, p99), then a GET of one 1 GiB object by curl (MB/s, to /dev/null).

The three servers run side by side for the whole run, and the PUT/GET phases are measured in
``--rounds`` rounds (default 3), the servers' order rotated each round (fabric first in round 1,
moto first in round 2 ...), each round on new keys. The table gives each figure's median over the
rounds, and the fabric/moto ratios are the median of each round's own ratio: this machine is
shared (a CI run, other agents), its load swings within seconds, and servers measured one after
the other would be compared under different loads. The load average is printed with each round.

Beside them, the disk's own ceiling for fabric's promise: 16 threads of this process writing
1,000 blobs of the same size through fabric's BlobStore as a PUT does (small ones appended to a
segment, each round of appends made durable by one fdatasync; no HTTP, no database). moto keeps objects in memory and fsyncs nothing; no PUT that keeps the
promise can be faster than this line.

- fabric-objectstore: its own process (``python -m fabric.cmd.objectstore``) on a throwaway
  PostgreSQL database, bytes under a temporary directory (fsynced, as always).
- moto_server (PyPI ``moto[server]``, what Python users reach for): bench-only, installed on
  first use into its own virtualenv (``$XDG_CACHE_HOME/fabric-bench/moto-venv``, default
  ``~/.cache``) so the project's venv stays as setup.py says.
- nginx (Debian ``nginx-light`` or ``nginx``; installed with apt-get when missing and run as
  root) serving the same bytes as static files from a temporary directory, WebDAV PUT for
  the uploads, on a loopback port with its own configuration, stopped by its PID.

The load generator is the same for all three: ``wrk`` (Debian package, C, one epoll loop per
thread; installed with apt-get when missing), 2 threads holding 16 keep-alive connections,
each connection sending its next request when the answer to the last one has arrived. A Lua
script (written next to the run) replays requests built before the clock starts: for the S3
servers signed with SigV4 by botocore's signer (UNSIGNED-PAYLOAD, so signing costs the
servers nothing and the client no time); nginx gets the same requests unsigned. Python
client threads were the first load generator: they spent about as much CPU per request as
the servers on the same 2 cores, which capped what any server could show. wrk stops each
thread after its share of the 1,000 requests has been answered; up to one request per
connection already sent by then is also counted (PUTs of 16 further keys, GETs of keys
already read), in ops/s as in the latencies. wrk itself would sleep out its whole ``-d``
after that; the runner interrupts it (SIGINT) once every thread has said it is done, so the
phase's wall time ends with its last answer. ops/s = answered requests / wall time of the
phase; p50/p99 are wrk's latencies (write of the request to the end of the answer). Any
answer other than 2xx fails the run. The 1 GiB GET goes through a presigned URL for the S3
servers.

Run from the repository root: ``python tools/bench/objectstore.py [--objects 1000]
[--clients 16] [--size 65536] [--big-mib 1024] [--rounds 3] [--skip moto,nginx] [--workers N]``. Prints a
table; removes every process, database and file it made.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from _common import create_postgres_database, drop_postgres_database, stop_processes  # noqa: E402

from tests.fixtures.processes import free_port  # noqa: E402

REGION = "us-east-1"
ACCESS, SECRET = "benchaccesskey0000000000000000", "benchsecret0000000000000000000000000000"
#: Database connections each objectstore process keeps: one per concurrent request it may get, or
#: it opens and closes overflow connections all the time (each a PostgreSQL backend start).
POOL_SIZE = 16
MOTO_VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fabric-bench" / "moto-venv"


def wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited ({proc.returncode}) before listening")
        try:
            http.client.HTTPConnection("127.0.0.1", port, timeout=1).connect()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not listen on {port} within {timeout}s")


# --- the three servers ---------------------------------------------------------------------------


class Server:
    name = ""
    signed = True
    port = 0
    procs: list[subprocess.Popen]

    def path(self, bucket: str, key: str) -> str:
        return f"/{bucket}/{key}"

    def stop(self) -> None:
        stop_processes(self.procs)


class Fabric(Server):
    name = "fabric-objectstore"

    def __init__(self, workdir: Path, workers: int = 0) -> None:
        from fabric.api.bootstrap import bootstrap
        from fabric.db import Database
        from fabric.db.models import Ec2Credential

        self.pg_name, url = create_postgres_database("fabric_bench_s3")
        db = Database(url)
        ids = bootstrap(db, "bench-pw")
        with db.begin() as session:
            session.add(Ec2Credential(access=ACCESS, secret=SECRET, user_id=ids["user_id"],
                                      project_id=ids["project_id"]))
        db.dispose()
        self.port = free_port()
        conf = workdir / "fabric.conf"
        conf.write_text(f"[DEFAULT]\nhost = bench\ndata_dir = {workdir / 'fabric'}\nlog_level = WARNING\n"
                        f"[database]\nurl = {url}\npool_size = {POOL_SIZE}\n[objectstore]\nlisten = 127.0.0.1\nport = {self.port}\nworkers = {workers}\n"
                        f"[signing]\nenabled = false\n")
        self.log = open(workdir / "fabric-objectstore.log", "wb")
        # BENCH_OBJECTSTORE_PROFILE=<file>: run the server under cProfile, its statistics written there at stop.
        # Only the worker's own process is profiled: run it with --workers 1 to profile every request.
        entry = ["-m", "fabric.cmd.objectstore", "--config-file", str(conf)]
        if os.environ.get("BENCH_OBJECTSTORE_PROFILE"):
            entry = ["-c", "import fabric.cmd.eventlet_entry, cProfile, sys; from fabric.cmd.objectstore import main; "
                           f"cProfile.run('main([\"--config-file\", \"{conf}\"])', "
                           f"{os.environ['BENCH_OBJECTSTORE_PROFILE']!r})"]
        self.procs = [subprocess.Popen([sys.executable, *entry],
                                       cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT,
                                       env=dict(os.environ, PYTHONPATH=str(REPO)))]
        wait_port(self.port, self.procs[0], self.name)

    def stop(self) -> None:
        super().stop()
        drop_postgres_database(self.pg_name)


class Moto(Server):
    name = "moto_server"

    def __init__(self, workdir: Path) -> None:
        binary = MOTO_VENV / "bin" / "moto_server"
        if not binary.exists():
            print(f"(installing moto[server] into {MOTO_VENV})", flush=True)
            subprocess.run([sys.executable, "-m", "venv", str(MOTO_VENV)], check=True)
            subprocess.run([str(MOTO_VENV / "bin" / "pip"), "install", "-q", "moto[server]"], check=True)
        self.port = free_port()
        self.log = open(workdir / "moto.log", "wb")
        self.procs = [subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(self.port)], stdout=self.log,
                                       stderr=subprocess.STDOUT)]
        wait_port(self.port, self.procs[0], self.name)


class Nginx(Server):
    name = "nginx (static files)"
    signed = False

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            print("(installing Debian's nginx-light)", flush=True)
            subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "nginx-light"], check=True,
                           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"), stdout=subprocess.DEVNULL)
        self.root = workdir / "nginx-root"
        (self.root / "bench").mkdir(parents=True)
        self.port = free_port()
        conf = workdir / "nginx.conf"
        conf.write_text(f"""daemon off;
user root;
worker_processes auto;
pid {workdir / 'nginx.pid'};
error_log {workdir / 'nginx-error.log'} warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {workdir / 'nginx-body'};
    proxy_temp_path {workdir / 'nginx-proxy'};
    fastcgi_temp_path {workdir / 'nginx-fastcgi'};
    uwsgi_temp_path {workdir / 'nginx-uwsgi'};
    scgi_temp_path {workdir / 'nginx-scgi'};
    client_max_body_size 2g;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{self.port};
        root {self.root};
        location / {{ dav_methods PUT; create_full_put_path on; }}
    }}
}}
""")
        self.procs = [subprocess.Popen([binary, "-c", str(conf), "-p", str(workdir)], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.STDOUT)]
        wait_port(self.port, self.procs[0], self.name)


def cpu_seconds(procs: list[subprocess.Popen]) -> float:
    """User+system CPU seconds used so far by ``procs`` and their children (nginx's workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    roots = {p.pid for p in procs}
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) in roots or int(fields[1]) in roots:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


# --- the clients -------------------------------------------------------------------------------------


def signed_headers(server: Server, method: str, path: str, length: int | None) -> dict[str, str]:
    headers = {"Content-Length": str(length)} if length is not None else {}
    if not server.signed:
        return headers
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    class Unsigned(S3SigV4Auth):
        def payload(self, request):
            return "UNSIGNED-PAYLOAD"

    request = AWSRequest(method, f"http://127.0.0.1:{server.port}{path}", headers=headers)
    Unsigned(Credentials(ACCESS, SECRET), "s3", REGION).add_auth(request)
    return dict(request.headers.items())


WRK_SCRIPT = r"""
-- Replays the requests in REQUESTS (one a line: method TAB path TAB header TAB header...)
-- with the body in BODY for PUTs; thread ``id`` of ``threads`` takes every threads-th one.
local counter = 0
function setup(thread)
   thread:set("id", counter)
   counter = counter + 1
end

function init(args)
   local body = ""
   if BODY ~= "" then
      local f = assert(io.open(BODY, "rb")); body = f:read("*a"); f:close()
   end
   -- wrk calls thread 0's request() once before the run, to check what it returns
   -- (script_verify_request): that thread starts one behind, so its first key is still sent.
   mine, answered = {}, 0
   index = (id == 0) and -1 or 0
   local n = 0
   for line in io.lines(REQUESTS) do
      if n % THREADS == id then
         local parts = {}
         for part in string.gmatch(line, "[^\t]+") do parts[#parts + 1] = part end
         local head = parts[1] .. " " .. parts[2] .. " HTTP/1.1\r\n"
         for i = 3, #parts do head = head .. parts[i] .. "\r\n" end
         local payload = (parts[1] == "PUT") and body or ""
         mine[#mine + 1] = head .. "\r\n" .. payload
      end
      n = n + 1
   end
   -- The thread's share of the counted requests; the rest are the extras a connection may send meanwhile.
   share = 0
   for i = 0, COUNT - 1 do if i % THREADS == id then share = share + 1 end end
end

function request()
   index = index + 1
   return mine[(index - 1) % #mine + 1]
end

function response(status, headers, body)
   answered = answered + 1
   if answered == share then
      -- wrk's main thread sleeps out the whole -d even after every thread stopped: tell the
      -- runner, which interrupts that sleep (SIGINT) once every thread has said so.
      io.write("THREAD-DONE\n"); io.stdout:flush()
      wrk.thread:stop()
   end
end

function done(summary, latency, requests)
   io.write(string.format("WRK %d %d %d %d %d %d %d %d\n", summary.requests, summary.duration,
      latency:percentile(50), latency:percentile(99), summary.errors.status,
      summary.errors.connect + summary.errors.read + summary.errors.write, summary.errors.timeout,
      summary.bytes))
end
"""
WRK_THREADS = 2


def wrk_binary() -> str:
    binary = shutil.which("wrk")
    if binary is None:
        print("(installing Debian's wrk)", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "wrk"], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"), stdout=subprocess.DEVNULL)
        binary = shutil.which("wrk") or "/usr/bin/wrk"
    return binary


def _run_wrk(command: list[str]) -> tuple[str, str, int]:
    """Run wrk until every thread has had its share answered: (stdout, stderr, exit status).

    wrk's main thread sleeps for the whole ``-d`` even when every thread has stopped, and
    counts that sleep in the phase's duration; SIGINT ends the sleep (wrk then reports as
    usual), so it is sent as soon as each thread has printed THREAD-DONE. The delay that adds
    (reading a pipe line, one signal) is well under a millisecond, the same for every server."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines, finished = [], 0
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("THREAD-DONE"):
                finished += 1
                if finished == WRK_THREADS:
                    proc.send_signal(signal.SIGINT)
        stderr = proc.stderr.read()
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return "".join(lines), stderr, proc.returncode


def run_phase(server: Server, workdir: Path, requests: list[tuple[str, str, dict]], count: int, body: bytes,
              clients: int) -> tuple[float, float, float, int]:
    """Send ``requests`` (method, path, headers; PUTs carry ``body``) with wrk over ``clients``
    connections until the first ``count`` are answered: (ops/s, p50 s, p99 s, requests answered)."""
    listing = workdir / "requests.txt"
    listing.write_text("".join("\t".join([method, path, *(f"{k}: {v}" for k, v in headers.items())]) + "\n"
                               for method, path, headers in requests))
    body_file = workdir / "body.bin"
    body_file.write_bytes(body)
    script = workdir / "replay.lua"
    script.write_text(f"REQUESTS = {str(listing)!r}\nBODY = {str(body_file) if body else ''!r}\n"
                      f"THREADS = {WRK_THREADS}\nCOUNT = {count}\n" + WRK_SCRIPT)
    stdout, stderr, returncode = _run_wrk([wrk_binary(), "-t", str(WRK_THREADS), "-c", str(clients), "-d", "300s",
                                           "--timeout", "60s", "-s", str(script),
                                           f"http://127.0.0.1:{server.port}/"])
    line = next((out for out in stdout.splitlines() if out.startswith("WRK ")), None)
    if returncode != 0 or line is None:
        raise SystemExit(f"{server.name}: wrk failed ({returncode}): {stdout[-2000:]} {stderr[-2000:]}")
    answered, duration, p50, p99, bad_status, socket_errors, timeouts, _ = (int(v) for v in line.split()[1:])
    if bad_status or socket_errors or timeouts or answered < count:
        raise SystemExit(f"{server.name}: {bad_status} non-2xx answer(s), {socket_errors} socket error(s), "
                         f"{timeouts} timeout(s), {answered} of {count} answered")
    return answered / (duration / 1e6), p50 / 1e6, p99 / 1e6, answered


def create_bucket(server: Server) -> None:
    if not server.signed:
        return
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("PUT", "/bench", None, signed_headers(server, "PUT", "/bench", 0))
    answer = conn.getresponse()
    answer.read()
    if answer.status != 200:
        raise SystemExit(f"{server.name}: CreateBucket answered {answer.status}")


def big_get(server: Server, workdir: Path, mib: int) -> float:
    """PUT (untimed) then GET one object of ``mib`` MiB with curl; the GET's MB/s."""
    source = workdir / "big.bin"
    if not source.exists():
        with open(source, "wb") as out:
            block = os.urandom(1024 * 1024)
            for _ in range(mib):
                out.write(block)
    path = server.path("bench", "big.bin")
    url = f"http://127.0.0.1:{server.port}{path}"
    if server.signed:
        import boto3
        import botocore.config

        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{server.port}", region_name=REGION,
                              aws_access_key_id=ACCESS, aws_secret_access_key=SECRET,
                              config=botocore.config.Config(signature_version="s3v4"))
        put_url = client.generate_presigned_url("put_object", Params={"Bucket": "bench", "Key": "big.bin"})
        get_url = client.generate_presigned_url("get_object", Params={"Bucket": "bench", "Key": "big.bin"})
    else:
        put_url = get_url = url
    subprocess.run(["curl", "-sS", "-f", "-o", "/dev/null", "-T", str(source), put_url], check=True, timeout=600)
    done = subprocess.run(["curl", "-sS", "-f", "-o", "/dev/null", "-w", "%{speed_download} %{size_download}",
                           get_url], check=True, timeout=600, capture_output=True, text=True)
    speed, size = done.stdout.split()
    if int(float(size)) != mib * 1024 * 1024:
        raise SystemExit(f"{server.name}: the big GET returned {size} bytes")
    return float(speed) / 1e6


def bench_round(server: Server, workdir: Path, args, round_number: int, body: bytes) -> dict:
    """One round's PUT and GET phases on keys of its own: {"put": (ops/s, p50 s, p99 s, CPU s/op), "get": ...}."""
    # The counted requests, then one extra per connection (see the module's docstring).
    put_paths = [server.path("bench", f"r{round_number}-obj{n:05d}") for n in range(args.objects + args.clients)]
    host = {"Host": f"127.0.0.1:{server.port}"}
    puts = [("PUT", p, dict(host, **signed_headers(server, "PUT", p, len(body)))) for p in put_paths]
    get_paths = put_paths[:args.objects] + put_paths[:args.clients]
    gets = [("GET", p, dict(host, **signed_headers(server, "GET", p, None))) for p in get_paths]
    cpu = cpu_seconds(server.procs)
    put_rate, put_p50, put_p99, answered = run_phase(server, workdir, puts, args.objects, body, args.clients)
    put_cpu, cpu = (cpu_seconds(server.procs) - cpu) / answered, cpu_seconds(server.procs)
    get_rate, get_p50, get_p99, answered = run_phase(server, workdir, gets, args.objects, b"", args.clients)
    get_cpu = (cpu_seconds(server.procs) - cpu) / answered
    return {"put": (put_rate, put_p50, put_p99, put_cpu), "get": (get_rate, get_p50, get_p99, get_cpu)}


def durable_write_ceiling(workdir: Path, count: int, size: int, threads: int) -> float:
    """Blobs/s that ``threads`` native threads commit through fabric's BlobStore as a PUT does
    (packed when small), ``count`` blobs of ``size`` bytes in all: the disk's limit for PUTs that
    keep fabric's durability promise, with no HTTP and no database."""
    from fabric.objectstore.storage import BlobStore

    store = BlobStore(workdir / f"ceiling-{os.getpid()}-{time.monotonic_ns()}")
    data = os.urandom(size)
    shares = [count // threads + (1 if n < count % threads else 0) for n in range(threads)]

    def write(share: int) -> None:
        for _ in range(share):
            with store.writer(packed=True) as writer:
                writer.write(data)
                writer.commit()

    workers = [threading.Thread(target=write, args=(share,)) for share in shares]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - started
    # Left for the run's end (the work directory goes then): on ext4 without a journal, as here,
    # a new file's inode is chosen past those freed in the last seconds, each checked in the inode
    # table, which the next round's uploads of blobs with files of their own would pay for
    # (recently_deleted(), a tenth of the server's CPU in a perf profile of PUTs).
    return count / elapsed


def _median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--size", type=int, default=64 * 1024)
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3, help="PUT/GET rounds, the servers' order rotated each round")
    parser.add_argument("--skip", default="", help="comma-separated: fabric, moto, nginx")
    parser.add_argument("--workers", type=int, default=0,
                        help="fabric-objectstore's [objectstore] workers (0: its default, one per CPU core)")
    args = parser.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    kinds = [kind for name, kind in (("fabric", Fabric), ("moto", Moto), ("nginx", Nginx)) if name not in skip]
    print(f"load before: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} CPUs", flush=True)
    rounds: dict[str, list[dict]] = {}
    ceilings: list[float] = []
    big: dict[str, float] = {}
    body = os.urandom(args.size)
    with tempfile.TemporaryDirectory(prefix="fabric-bench-s3-") as tmp:
        workdir = Path(tmp)
        servers: list[Server] = []
        try:
            for kind in kinds:
                sub = workdir / kind.__name__.lower()
                sub.mkdir()
                server = Fabric(sub, args.workers) if kind is Fabric else kind(sub)
                servers.append(server)
                create_bucket(server)
                rounds[server.name] = []
            for number in range(args.rounds):
                order = servers[number % len(servers):] + servers[:number % len(servers)]
                for server in order:
                    rounds[server.name].append(bench_round(server, workdir, args, number, body))
                ceilings.append(durable_write_ceiling(workdir, args.objects, args.size, args.clients))
                figures = ", ".join(f"{name} PUT {r[-1]['put'][0]:.0f} GET {r[-1]['get'][0]:.0f}"
                                    for name, r in rounds.items())
                print(f"round {number + 1} (load {os.getloadavg()[0]:.2f}): {figures} ops/s; "
                      f"durable writes {ceilings[-1]:.0f}/s", flush=True)
            for server in servers:
                big[server.name] = big_get(server, workdir, args.big_mib) if args.big_mib else 0.0
        finally:
            for server in servers:
                server.stop()
    print(f"\n{args.objects} x {args.size // 1024} KiB, {args.clients} clients, median of {args.rounds} round(s); "
          f"GET of {args.big_mib} MiB by curl")
    print("(CPU ms/op: the server's own CPU time per request, all its processes, which the machine's other "
          "load does not inflate)")
    print(f"{'server':<22} {'PUT ops/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/op':>9} {'GET ops/s':>10} "
          f"{'p50 ms':>8} {'p99 ms':>8} {'CPU ms/op':>9} {'big GET MB/s':>13}")
    for name, results in rounds.items():
        put = [_median([r["put"][i] for r in results]) for i in range(4)]
        get = [_median([r["get"][i] for r in results]) for i in range(4)]
        print(f"{name:<22} {put[0]:>10.0f} {put[1] * 1000:>8.1f} {put[2] * 1000:>8.1f} {put[3] * 1000:>9.2f} "
              f"{get[0]:>10.0f} {get[1] * 1000:>8.1f} {get[2] * 1000:>8.1f} {get[3] * 1000:>9.2f} {big[name]:>13.0f}")
    if ceilings:
        print(f"{'disk: durable writes':<22} {_median(ceilings):>10.0f}   ({args.clients} threads writing "
              f"{args.size // 1024} KiB blobs through fabric's BlobStore as a PUT does)")
    fabric, moto, nginx = (rounds.get(n) for n in ("fabric-objectstore", "moto_server", "nginx (static files)"))
    if fabric and moto:
        def ratios(phase: str, index: int, inverse: bool = False) -> list[float]:
            return [(m[phase][index] / f[phase][index]) if inverse else (f[phase][index] / m[phase][index])
                    for f, m in zip(fabric, moto, strict=True)]

        put, get = ratios("put", 0), ratios("get", 0)
        print(f"fabric / moto, median of the rounds' ratios: PUT {_median(put):.1f}x "
              f"({', '.join(f'{r:.1f}' for r in put)}), GET {_median(get):.1f}x ({', '.join(f'{r:.1f}' for r in get)})"
              f" ops/s (goal: at least 5x); server CPU per op: PUT {_median(ratios('put', 3, True)):.1f}x less, "
              f"GET {_median(ratios('get', 3, True)):.1f}x less")
        if ceilings:
            print(f"5x moto's PUT median would be {5 * _median([m['put'][0] for m in moto]):.0f} PUT/s; the disk "
                  f"allows {_median(ceilings):.0f} durable writes/s")
    fabric_big, nginx_big = big.get("fabric-objectstore"), big.get("nginx (static files)")
    if fabric_big and nginx_big:
        print(f"fabric / nginx, 1 GiB GET: {fabric_big / nginx_big:.2f} (goal: at least 0.5)")
    print(f"load after: {os.getloadavg()[0]:.2f} (1 min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
