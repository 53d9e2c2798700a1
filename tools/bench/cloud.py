"""Cloud benchmark: ``server create`` through the API to the guest answering ping, on two
simulated hosts with every worker its own process (RabbitMQ, PostgreSQL, real QEMU guests,
the linux network driver).

1. Sequential: N servers (default 5), one at a time, each deleted before the next; the time
   from the ``POST /servers`` to the first echo reply from its address. p50 and max.
2. At once: M servers (default 10) posted together (one thread each); the time until every
   one has answered, beside the CPU time their QEMU processes had used by then
   (``/proc/<pid>/stat`` utime + stime) divided by the machine's cores: what the emulator
   itself needed. Their ratio says how much the control plane adds.

Goals (issue 12): p50 under 5 s; the M all answering within 1.5x (QEMU CPU time / cores).

Each server gets a fixed address (``networks: [{"uuid", "fixed_ip"}]``), so its address is
known before it boots; once the scheduler has placed it, the benchmark pings it from its
host's namespace every 20 ms from a raw ICMP socket (``_common.ping_from``: a thread per
probe, entered into the namespace), so figures are not rounded up to a ping tool's one-second
timeout. One untimed server per host first absorbs libvirt's one-time QEMU capability probe
on each host.

Run from the repository root as root, with RabbitMQ and PostgreSQL up (``tools/test``
installs them): ``.venv/bin/python tools/bench/cloud.py [--sequential 5] [--concurrent 10]``.
Removes every process, namespace, vhost, database and file it made.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tools")]

from _common import percentile, ping_from, scratch_cloud_backends  # noqa: E402

PASSWORD = "bench-cloud-pw"
CIDR_PREFIX = "10.77.0."
CONTROL = ("fabric-ipam", "fabric-scheduler", "fabric-api")
BOOT_DEADLINE = 300.0


class Api:
    """A small JSON client of fabric's API with one project-scoped token."""

    def __init__(self, base: str) -> None:
        self.base = base
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "domain": {"name": "Default"}, "password": PASSWORD}}},
            "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}}
        request = urllib.request.Request(f"{base}/v3/auth/tokens", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            self.token = answer.headers["X-Subject-Token"]

    def __call__(self, method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(f"{self.base}{path}", json.dumps(body).encode() if body else None,
                                         {"Content-Type": "application/json", "X-Auth-Token": self.token},
                                         method=method)
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                data = answer.read()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path}: HTTP {exc.code} {exc.read()[:300]!r}") from None
        return json.loads(data) if data else {}


class Bench:
    def __init__(self, api: Api, hosts, flavor: str, image: str, network: str) -> None:
        self.api, self.hosts, self.flavor, self.image, self.network = api, hosts, flavor, image, network
        self.octets = itertools.count(10)  # next() is atomic: servers booted at once take distinct addresses

    def boot(self, name: str) -> tuple[str, str, float]:
        """Create a server and wait for its first echo reply: (id, host, seconds from the POST)."""
        address = f"{CIDR_PREFIX}{next(self.octets)}"
        started = time.monotonic()
        server = self.api("POST", "/compute/v2.1/servers", {"server": {
            "name": name, "flavorRef": self.flavor, "imageRef": self.image,
            "networks": [{"uuid": self.network, "fixed_ip": address}]}})["server"]
        deadline = started + BOOT_DEADLINE
        while True:
            shown = self.api("GET", f"/compute/v2.1/servers/{server['id']}")["server"]
            if shown["status"] == "ERROR":
                raise RuntimeError(f"server {name} failed: {shown.get('fault')}")
            if shown.get("OS-EXT-SRV-ATTR:host"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"server {name} was not placed within {BOOT_DEADLINE:g}s")
            time.sleep(0.05)
        host = shown["OS-EXT-SRV-ATTR:host"]
        answered = ping_from(self.hosts.host(host).namespace, address, deadline)
        if answered is None:
            raise RuntimeError(f"server {name} ({address} on {host}) did not answer within {BOOT_DEADLINE:g}s")
        return server["id"], host, answered - started

    def delete(self, server_ids: list[str]) -> None:
        for server_id in server_ids:
            self.api("DELETE", f"/compute/v2.1/servers/{server_id}")
        deadline = time.monotonic() + BOOT_DEADLINE
        while self.api("GET", "/compute/v2.1/servers")["servers"]:
            if time.monotonic() > deadline:
                raise RuntimeError("servers were not deleted in time")
            time.sleep(0.2)


def qemu_cpu_seconds(namespaces: list[str]) -> dict[int, float]:
    """Pid -> CPU seconds (user + system) of every QEMU process in ``namespaces``."""
    from fabric.sim.netns import pids_in

    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for ns in namespaces:
        for pid in pids_in(ns):
            try:
                if not Path(f"/proc/{pid}/comm").read_text().startswith("qemu"):
                    continue
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            found[pid] = (int(stat[11]) + int(stat[12])) / tick
    return found


def openstack(env: dict[str, str], *args: str) -> dict:
    done = subprocess.run([str(Path(sys.executable).parent / "openstack"), *args, "-f", "json"], env=env,
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"openstack {' '.join(args)}: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)


def prepare(base: str, guest) -> tuple[str, str, str]:
    """Through the API, with the openstack CLI: a flavor, the guest image (kernel, ramdisk and
    a boot image naming them), a network and a subnet. (flavor id, image id, network id)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")} | {
        "OS_AUTH_URL": f"{base}/v3", "OS_USERNAME": "admin", "OS_PASSWORD": PASSWORD, "OS_PROJECT_NAME": "admin",
        "OS_USER_DOMAIN_NAME": "Default", "OS_PROJECT_DOMAIN_NAME": "Default", "OS_IDENTITY_API_VERSION": "3"}
    flavor = openstack(env, "flavor", "create", "--ram", "128", "--vcpus", "1", "--disk", "0", "bench.tiny")
    kernel = openstack(env, "image", "create", "--file", guest.kernel, "--disk-format", "aki",
                       "--container-format", "aki", "bench-kernel")
    ramdisk = openstack(env, "image", "create", "--file", guest.initrd, "--disk-format", "ari",
                        "--container-format", "ari", "bench-ramdisk")
    with tempfile.NamedTemporaryFile(suffix=".ami") as boot_file:
        boot_file.write(b"direct kernel boot")
        boot_file.flush()
        boot = openstack(env, "image", "create", "--file", boot_file.name, "--disk-format", "ami",
                         "--container-format", "ami", "--property", f"kernel_id={kernel['id']}",
                         "--property", f"ramdisk_id={ramdisk['id']}",
                         "--property", f"os_command_line={guest.cmdline}", "bench-guest")
    network = openstack(env, "network", "create", "--provider-network-type", "vxlan", "bench-net")
    openstack(env, "subnet", "create", "--network", "bench-net", "--subnet-range", f"{CIDR_PREFIX}0/24", "bench-sub")
    return flavor["id"], boot["id"], network["id"]


def run(args, work: Path, database_url: str, transport_url: str) -> None:
    import guest_image

    from fabric.api.bootstrap import bootstrap
    from fabric.cmd import workers as worker_kinds
    from fabric.db import Database
    from fabric.rpc import signing
    from fabric.sim import hosts as sim
    from tests.fixtures.processes import free_port

    guest = guest_image.ensure_guest_image()
    db = Database(database_url)
    try:
        bootstrap(db, PASSWORD)
    finally:
        db.dispose()
    key_dir = work / "keys"
    signing.generate(key_dir)
    for kind in worker_kinds.WORKERS.values():
        worker_kinds.manager_class(kind)  # each manager registers who may call it
    signing.install(signing.load(key_dir))  # this process tells running network workers of the hosts
    port = free_port()
    conf = work / "fabric.conf"
    conf.write_text(f"[DEFAULT]\ndata_dir = {work / 'data'}\n[database]\nurl = {database_url}\n"
                    f"[rpc]\ntransport_url = {transport_url}\ncall_timeout = 60\n[signing]\nkey_dir = {key_dir}\n"
                    f"[api]\nlisten = 127.0.0.1\nport = {port}\nadmin_password = {PASSWORD}\n")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")} | {"PYTHONPATH": str(REPO)}
    hosts = sim.SimulatedHosts(conf, 2, cloud=f"b{secrets.token_hex(3)}", log_dir=work / "logs", environ=environ)
    try:
        hosts.up(control=CONTROL)
        base = f"http://127.0.0.1:{port}"
        flavor, image, network = prepare(base, guest)
        bench = Bench(Api(base), hosts, flavor, image, network)
        namespaces = [h.namespace for h in hosts.hosts]

        warm = [bench.boot(f"warm{i}") for i in range(len(hosts.hosts))]
        print("warm-up (libvirt's first QEMU probe on each host): "
              + ", ".join(f"{host} {seconds:.2f}s" for _, host, seconds in warm), flush=True)
        bench.delete([server_id for server_id, _, _ in warm])

        times = []
        for i in range(args.sequential):
            server_id, host, seconds = bench.boot(f"seq{i}")
            times.append(seconds)
            print(f"  seq{i} on {host}: create -> ping {seconds:.2f}s", flush=True)
            bench.delete([server_id])
        print(f"sequential, {args.sequential} servers: create -> ping p50 {percentile(times, 0.5):.2f}s, "
              f"max {max(times):.2f}s (goal: p50 < 5 s)", flush=True)

        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(args.concurrent) as pool:
            results = list(pool.map(lambda i: bench.boot(f"par{i}"), range(args.concurrent)))
        wall = time.monotonic() - started
        cpu = qemu_cpu_seconds(namespaces)
        cores = os.cpu_count() or 1
        emulator = sum(cpu.values()) / cores
        placed = {h.name: sum(1 for _, host, _ in results if host == h.name) for h in hosts.hosts}
        print(f"at once, {args.concurrent} servers ({placed}): all answering after {wall:.2f}s; "
              f"each {percentile([s for *_, s in results], 0.5):.2f}s p50, {max(s for *_, s in results):.2f}s max",
              flush=True)
        print(f"  their QEMU CPU time {sum(cpu.values()):.1f}s over {len(cpu)} processes / {cores} cores = "
              f"{emulator:.2f}s; wall / that = {wall / emulator:.2f}x (goal: <= 1.5x)", flush=True)
        bench.delete([server_id for server_id, _, _ in results])
    finally:
        hosts.down()
        signing.install(None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequential", type=int, default=5, help="servers booted one at a time (default 5)")
    parser.add_argument("--concurrent", type=int, default=10, help="servers booted at once (default 10)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("tools/bench/cloud.py: needs root (namespaces, bridges, QEMU taps)", file=sys.stderr)
        return 1
    with scratch_cloud_backends("fabric_bench_cloud") as (work, database_url, transport_url):
        run(args, Path(work), database_url, transport_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
