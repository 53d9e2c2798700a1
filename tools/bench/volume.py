"""Volume benchmark: a guest's sequential MB/s on a volume from another host beside its local disk,
and the latency of the volume lifecycle with real attaches.

Stands up a cloud of two simulated hosts (tools/bench/cloud.py's way: every worker its own
process on RabbitMQ and PostgreSQL, real QEMU guests, TCG here), the first host also running
``fabric-volume`` (qcow2 files, one ``qemu-nbd`` per attached volume on its underlay address).
One server (flavor with a 1 GiB local disk: a qcow2 file on its compute host, the guest's vda)
runs on the host that does NOT hold the volumes, so every volume it uses crosses the underlay
over NBD. Through the Block Storage and Compute APIs:

1. Lifecycle, ``--volumes`` (50) volumes one after another, p50 and p99 of: create (POST until
   ``available``), attach (``os-volume_attachments`` POST until ``in-use``: the export started
   on the volume host and the disk hot-plugged into the running guest), detach (DELETE until
   ``available``: unplugged, export ended) and delete (DELETE until the volume is gone).
2. Throughput: one volume attached (vdb) and the guest's own disk (vda), each written and read
   sequentially, ``--megabytes`` MiB at a time, ``--rounds`` times alternating, with busybox
   ``dd`` using O_DIRECT (the guest's page cache out of the way; writes also fsync'd) from a
   16 MiB pattern file in the guest's RAM, written again and again (not zeros, which a layer
   could skip); reads read back what was written (an unwritten qcow2 cluster reads as zeros
   without touching the disk, which would flatter both sides). The guest's user-data
   script (run at boot by tools/guest_image.py) does it and prints each ``dd``'s time on its
   serial console, read through ``os-getConsoleOutput``. Printed: the median MiB/s per disk and
   direction, and the ratio volume / local disk: what the NBD network path costs.

Times inside the guest come from the guest's clock (``/proc/uptime``, 10 ms steps), which under
TCG on a loaded machine is not load-independent: compare the ratio, measured in the same guest
and interleaved, not the absolute figures.

``--worker-only``: instead, no guests and no root: one ``fabric-volume`` worker process, the
lifecycle through :class:`fabric.volume.api.VolumeService` over RPC (attach = reserve, the
export call, complete), and ``qemu-io`` on the host through the NBD export beside a local qcow2.

Run from the repository root as root, with RabbitMQ and PostgreSQL up:
``.venv/bin/python tools/bench/volume.py [--volumes 50] [--megabytes 128] [--rounds 3]``.
Removes every process, namespace, vhost, database and file it made.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tools"), str(REPO / "tools" / "bench")]

from _common import (  # noqa: E402
    create_postgres_database,
    drop_postgres_database,
    percentile,
    rabbit_vhost,
    scratch_cloud_backends,
    stop_processes,
)

CONTROL = ("fabric-ipam", "fabric-scheduler", "fabric-objectstore", "fabric-api")
COMPUTE, VOLUMES = "/compute/v2.1", "/volume/v3"
#: TCG on 2 shared cores: boots and hot-plugs take seconds, more under load.
DEADLINE = 300.0
#: The first 20 characters of a volume's id are its disk's serial in the guest (fabric/virt/libvirt/volumes.py).
SERIAL_LENGTH = 20
#: MiB of the write pattern the guest keeps in RAM; a pass writes it ``--megabytes / PATTERN_MB`` times.
PATTERN_MB = 16

GUEST_SCRIPT = r"""#!/bin/sh
# fabric volume benchmark: sequential O_DIRECT dd on the volume (by its serial) and on vda.
MB={megabytes}; CHUNK={chunk}; ROUNDS={rounds}; SERIAL={serial}
vol=""
while [ -z "$vol" ]; do
    for d in /sys/block/vd*; do
        [ "$(cat "$d/serial" 2>/dev/null)" = "$SERIAL" ] && vol=${{d##*/}}
    done
    [ -z "$vol" ] && sleep 1
done
while [ ! -b /dev/vda ]; do sleep 1; done
echo "fabric-bench: volume is $vol"
# The pattern lives in the guest's RAM (128 MiB): a pass writes it CHUNK MiB at a time, MB MiB in all.
yes fabric-volume-bench-pattern | head -c $((CHUNK * 1048576)) > /tmp/pattern
fill() {{ i=0; while [ $i -lt $((MB / CHUNK)) ]; do
    dd if=/tmp/pattern of=$1 bs=1M count=$CHUNK seek=$((i * CHUNK)) oflag=direct conv=fsync,notrunc || return 1
    i=$((i + 1)); done; }}
# Debian's busybox dd prints no rate: each pass is timed by /proc/uptime (10 ms steps).
timed() {{ t0=$(cut -d' ' -f1 /proc/uptime); "$@" 2>/dev/null; t1=$(cut -d' ' -f1 /proc/uptime);
          awk "BEGIN {{ print $t1 - $t0 }}"; }}
round=1
while [ $round -le $ROUNDS ]; do
    for dev in $vol vda; do
        w=$(timed fill /dev/$dev)
        r=$(timed dd if=/dev/$dev of=/dev/null bs=1M count=$MB iflag=direct)
        echo "fabric-bench: round $round $dev write $w read $r"
    done
    round=$((round + 1))
done
echo "fabric-bench: done"
"""
_RESULT = re.compile(r"fabric-bench: round (\d+) (vd\w+) write ([\d.]+) read ([\d.]+)")


class GuestCloud:
    """The API of the benchmark's cloud, as one project's admin (tools/bench/cloud.py's client)."""

    def __init__(self, api, hosts) -> None:
        self.api, self.hosts = api, hosts

    def status(self, path: str, key: str) -> str | None:
        """``key``'s status at ``path``, None once it is gone (404)."""
        try:
            return self.api("GET", path)[key]["status"]
        except RuntimeError as exc:
            if "HTTP 404" in str(exc):
                return None
            raise

    def wait(self, path: str, key: str, wanted: str | None, deadline: float = DEADLINE) -> None:
        """Until ``path``'s status is ``wanted`` (None: gone), polled every 20 ms."""
        end = time.monotonic() + deadline
        while (status := self.status(path, key)) != wanted:
            if status is not None and (status.startswith("error") or status == "ERROR"):
                raise RuntimeError(f"{path} is {status}")
            if time.monotonic() > end:
                raise RuntimeError(f"{path} is {status}, not {wanted}, after {deadline:g}s")
            time.sleep(0.02)

    def create_volume(self, name: str) -> str:
        volume = self.api("POST", f"{VOLUMES}/volumes", {"volume": {"size": 1, "name": name}})["volume"]
        self.wait(f"{VOLUMES}/volumes/{volume['id']}", "volume", "available")
        return volume["id"]

    def attach(self, server_id: str, volume_id: str) -> None:
        self.api("POST", f"{COMPUTE}/servers/{server_id}/os-volume_attachments",
                 {"volumeAttachment": {"volumeId": volume_id}})
        self.wait(f"{VOLUMES}/volumes/{volume_id}", "volume", "in-use")

    def detach(self, server_id: str, volume_id: str) -> None:
        self.api("DELETE", f"{COMPUTE}/servers/{server_id}/os-volume_attachments/{volume_id}")
        self.wait(f"{VOLUMES}/volumes/{volume_id}", "volume", "available")

    def delete_volume(self, volume_id: str) -> None:
        self.api("DELETE", f"{VOLUMES}/volumes/{volume_id}")
        self.wait(f"{VOLUMES}/volumes/{volume_id}", "volume", None)

    def boot(self, name: str, flavor: str, image: str, network: str, group: str, user_data: str) -> dict:
        import base64

        server = self.api("POST", f"{COMPUTE}/servers", {
            "server": {"name": name, "flavorRef": flavor, "imageRef": image, "networks": [{"uuid": network}],
                       "user_data": base64.b64encode(user_data.encode()).decode()},
            "os:scheduler_hints": {"group": group}})["server"]
        self.wait(f"{COMPUTE}/servers/{server['id']}", "server", "ACTIVE")
        return self.api("GET", f"{COMPUTE}/servers/{server['id']}")["server"]

    def console(self, server_id: str) -> str:
        return self.api("POST", f"{COMPUTE}/servers/{server_id}/action", {"os-getConsoleOutput": {}})["output"]


def remote_server(cloud: GuestCloud, volume_host: str, boot_args: tuple) -> tuple[dict, list[str]]:
    """A running server on a host other than ``volume_host``: boots into an anti-affinity group
    until one lands elsewhere (the second must). (that server, the ids of every server booted)."""
    booted = []
    for attempt in range(2):
        server = cloud.boot(f"bench-vm{attempt}", *boot_args)
        booted.append(server["id"])
        if server["OS-EXT-SRV-ATTR:host"] != volume_host:
            return server, booted
    raise RuntimeError(f"anti-affinity put both servers on {volume_host}")


def guest_lifecycle(cloud: GuestCloud, server_id: str, count: int) -> None:
    timings: dict[str, list[float]] = {"create": [], "attach": [], "detach": [], "delete": []}
    for n in range(count):
        started = time.monotonic()
        volume_id = cloud.create_volume(f"bench-{n}")
        timings["create"].append(time.monotonic() - started)
        for step, act in (("attach", cloud.attach), ("detach", cloud.detach)):
            started = time.monotonic()
            act(server_id, volume_id)
            timings[step].append(time.monotonic() - started)
        started = time.monotonic()
        cloud.delete_volume(volume_id)
        timings["delete"].append(time.monotonic() - started)
    for name, values in timings.items():
        print(f"{name:>7}: p50 {percentile(values, 0.5) * 1000:8.1f} ms  p99 {percentile(values, 0.99) * 1000:8.1f} ms"
              f"  ({len(values)} volumes, a guest on the other host)", flush=True)


def guest_throughput(cloud: GuestCloud, server_id: str, volume_id: str, megabytes: int, rounds: int) -> None:
    """Attach the volume; the guest (already waiting for its serial) measures; print the figures."""
    cloud.attach(server_id, volume_id)
    end = time.monotonic() + DEADLINE + rounds * 120
    while "fabric-bench: done" not in (console := cloud.console(server_id)):
        if time.monotonic() > end:
            raise RuntimeError(f"the guest did not finish its measurement:\n{console[-3000:]}")
        time.sleep(1)
    volume_disk = re.search(r"fabric-bench: volume is (vd\w+)", console)[1]
    seconds: dict[tuple[str, str], list[float]] = {}
    for _round, disk, write, read in _RESULT.findall(console):
        # At least one step of the guest's 10 ms clock: a pass can be quicker than its resolution.
        seconds.setdefault((disk, "write"), []).append(max(float(write), 0.01))
        seconds.setdefault((disk, "read"), []).append(max(float(read), 0.01))
    for operation in ("write", "read"):
        rate = {disk: megabytes / statistics.median(seconds[(disk, operation)]) for disk in (volume_disk, "vda")}
        print(f"{operation:>7}: volume over NBD ({volume_disk}) {rate[volume_disk]:8.1f} MiB/s   local disk (vda) "
              f"{rate['vda']:8.1f} MiB/s   ratio {rate[volume_disk] / rate['vda']:.2f}   (median of {rounds} x "
              f"{megabytes} MiB, O_DIRECT, guest clock)", flush=True)
    cloud.detach(server_id, volume_id)


def run_guests(args, work: Path, database_url: str, transport_url: str) -> None:
    import cloud as bench_cloud  # tools/bench/cloud.py: its API client and image/network setup
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
        bootstrap(db, bench_cloud.PASSWORD)
    finally:
        db.dispose()
    key_dir = work / "keys"
    signing.generate(key_dir)
    for kind in worker_kinds.WORKERS.values():
        worker_kinds.manager_class(kind)  # each manager registers who may call it
    signing.install(signing.load(key_dir))
    port = free_port()
    conf = work / "fabric.conf"
    conf.write_text(f"[DEFAULT]\ndata_dir = {work / 'data'}\n[database]\nurl = {database_url}\n"
                    f"[rpc]\ntransport_url = {transport_url}\ncall_timeout = 60\n[signing]\nkey_dir = {key_dir}\n"
                    f"[api]\nlisten = 127.0.0.1\nport = {port}\nadmin_password = {bench_cloud.PASSWORD}\n"
                    f"[objectstore]\nport = {free_port()}\n")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")} | {"PYTHONPATH": str(REPO)}
    hosts = sim.SimulatedHosts(conf, 2, cloud=f"v{secrets.token_hex(3)}", log_dir=work / "logs", environ=environ,
                               volume_hosts=1)
    try:
        hosts.up(control=CONTROL)
        base = f"http://127.0.0.1:{port}"
        _, image, network = bench_cloud.prepare(base, guest)
        api = bench_cloud.Api(base)
        cloud = GuestCloud(api, hosts)
        flavor = api("POST", f"{COMPUTE}/flavors", {"flavor": {"name": "bench.disk", "ram": 128, "vcpus": 1,
                                                               "disk": 1}})["flavor"]["id"]
        group = api("POST", f"{COMPUTE}/os-server-groups", {"server_group": {
            "name": "bench-spread", "policies": ["anti-affinity"]}})["server_group"]["id"]
        volume_host = hosts.volume_hosts[0].name
        measured = cloud.create_volume("bench-throughput")
        if args.megabytes % PATTERN_MB:
            raise SystemExit(f"--megabytes {args.megabytes} is not a multiple of {PATTERN_MB}")
        script = GUEST_SCRIPT.format(megabytes=args.megabytes, chunk=PATTERN_MB, rounds=args.rounds,
                                     serial=measured[:SERIAL_LENGTH])
        started = time.monotonic()
        server, booted = remote_server(cloud, volume_host, (flavor, image, network, group, script))
        print(f"server on {server['OS-EXT-SRV-ATTR:host']} (volumes on {volume_host}), ACTIVE after "
              f"{time.monotonic() - started:.1f}s", flush=True)
        guest_throughput(cloud, server["id"], measured, args.megabytes, args.rounds)
        cloud.delete_volume(measured)
        guest_lifecycle(cloud, server["id"], args.volumes)
        for server_id in booted:
            api("DELETE", f"{COMPUTE}/servers/{server_id}")
        for server_id in booted:
            cloud.wait(f"{COMPUTE}/servers/{server_id}", "server", None)
    finally:
        hosts.down()
        signing.install(None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--volumes", type=int, default=50, help="volumes in the lifecycle run (default 50)")
    parser.add_argument("--megabytes", type=int, default=128, help="MiB per sequential pass, a multiple of "
                                                                   f"{PATTERN_MB} (default 128; --worker-only: 256)")
    parser.add_argument("--rounds", type=int, default=3, help="passes per disk and direction (default 3)")
    parser.add_argument("--worker-only", action="store_true", help="no guests: one worker, qemu-io on the host")
    args = parser.parse_args()
    if args.worker_only:
        return worker_only(args)
    if os.geteuid() != 0:
        print("tools/bench/volume.py: needs root (namespaces, bridges, QEMU taps); --worker-only does not",
              file=sys.stderr)
        return 1
    with scratch_cloud_backends("fabric_bench_volume") as (work, database_url, transport_url):
        run_guests(args, Path(work), database_url, transport_url)
    return 0


# --- --worker-only: one volume worker, no guests ---------------------------------------------------

WORKER_HOST = "volume-bench"


def _worker_context():
    from fabric.context import RequestContext

    return RequestContext(user_id="bench", project_id="volume-bench", roles=("member",))


def wait_status(volumes, volume_id: str, wanted: str, deadline: float = 120.0) -> None:
    """Until the volume's row says ``wanted`` (polled every 2 ms: the figure is the worker's)."""
    import eventlet

    from fabric.db.models import Volume

    end = time.monotonic() + deadline
    while time.monotonic() < end:
        with volumes.db.begin() as session:
            status = session.get(Volume, volume_id).status
        if status == wanted:
            return
        if status == "error":
            raise SystemExit(f"volume {volume_id} ended in error")
        eventlet.sleep(0.002)
    raise SystemExit(f"volume {volume_id} not {wanted} after {deadline}s")


def worker_lifecycle(volumes, count: int) -> None:
    ctx = _worker_context()
    timings: dict[str, list[float]] = {"create": [], "attach": [], "detach": [], "delete": []}
    for n in range(count):
        started = time.monotonic()
        volume = volumes.create(ctx, size=1, name=f"bench-{n}")
        wait_status(volumes, volume["id"], "available")
        timings["create"].append(time.monotonic() - started)
        started = time.monotonic()
        attachment = volumes.attachment_create(ctx, volume["id"], f"server-{n}")
        volumes.attachment_update(ctx, attachment["id"], {"host": "bench-compute", "ip": "127.0.0.1"})
        volumes.attachment_complete(ctx, attachment["id"], "/dev/vdb")
        timings["attach"].append(time.monotonic() - started)
        started = time.monotonic()
        volumes.attachment_delete(ctx, attachment["id"])
        timings["detach"].append(time.monotonic() - started)
        started = time.monotonic()
        volumes.delete(ctx, volume["id"])
        wait_status(volumes, volume["id"], "deleted")
        timings["delete"].append(time.monotonic() - started)
    for name, values in timings.items():
        print(f"{name:>7}: p50 {percentile(values, 0.5) * 1000:8.1f} ms  p99 {percentile(values, 0.99) * 1000:8.1f} ms"
              f"  ({len(values)} volumes, no guest)", flush=True)


def _rate(target: list[str], operation: str, megabytes: int) -> float:
    """MB/s qemu-io reports for ``operation`` (write or read) of ``megabytes`` MiB from offset 0."""
    command = f"write -P 0x5a 0 {megabytes}M" if operation == "write" else f"read 0 {megabytes}M"
    out = subprocess.run(["qemu-io", *target, "-c", command], capture_output=True, text=True, check=True).stdout
    match = re.search(r"\(([\d.]+) (\w+)/sec", out)
    if match is None:
        raise SystemExit(f"qemu-io said nothing of a rate: {out}")
    value, unit = float(match.group(1)), match.group(2)
    return value * {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024}.get(unit, 1)


def worker_throughput(volumes, scratch: Path, megabytes: int) -> None:
    ctx = _worker_context()
    volume = volumes.create(ctx, size=1, name="bench-throughput")
    wait_status(volumes, volume["id"], "available")
    attachment = volumes.attachment_create(ctx, volume["id"], "server-throughput")
    data = volumes.attachment_update(ctx, attachment["id"], {"host": "bench-compute"})["data"]
    nbd = ["-f", "raw", f"nbd://{data['host']}:{data['port']}/{data['export_name']}"]
    local = scratch / "local.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(local), "1G"], check=True)
    try:
        for operation in ("write", "read"):
            over_nbd = _rate(nbd, operation, megabytes)
            on_disk = _rate(["-f", "qcow2", str(local)], operation, megabytes)
            print(f"{operation:>7}: NBD {over_nbd:8.1f} MiB/s   local qcow2 {on_disk:8.1f} MiB/s   "
                  f"ratio {over_nbd / on_disk:.2f} ({megabytes} MiB, sequential, qemu-io on the host)", flush=True)
    finally:
        volumes.attachment_delete(ctx, attachment["id"])
        volumes.delete(ctx, volume["id"])
        wait_status(volumes, volume["id"], "deleted")


def worker_only(args) -> int:
    """One fabric-volume process; VolumeService over RPC as the API and Compute call it."""
    import fabric.cmd.eventlet_entry  # noqa: F401, I001 - first: the RPC client runs on eventlet's hub
    import eventlet

    from fabric import config, rpc, servicegroup
    from fabric.db import Database
    from fabric.db.models import Project
    from fabric.rpc import signing
    from fabric.volume.api import VolumeService
    from fabric.volume.rpcapi import BINARY, TOPIC, VolumeAPI

    megabytes = args.megabytes if args.megabytes != 128 else 256
    name, url = create_postgres_database("fabric_bench_volume")
    procs: list[subprocess.Popen] = []
    try:
        with rabbit_vhost("fabric_bench_volume") as (_, amqp), tempfile.TemporaryDirectory() as scratch:
            key_dir = str(Path(scratch) / "keys")
            signing.generate(key_dir)
            signing.install(signing.load(key_dir, roles=["api"]))
            env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}
            env.update(FABRIC_DATABASE_URL=url, FABRIC_RPC_TRANSPORT_URL=amqp, FABRIC_DEFAULT_HOST=WORKER_HOST,
                       FABRIC_DEFAULT_DATA_DIR=str(Path(scratch) / "data"), FABRIC_DEFAULT_LOG_LEVEL="WARNING",
                       FABRIC_SIGNING_KEY_DIR=key_dir, FABRIC_VOLUME_EXPORT_ADDRESS="127.0.0.1",
                       PYTHONPATH=str(REPO))
            procs.append(subprocess.Popen([sys.executable, str(REPO / "bin" / "fabric-volume")], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO))
            db = Database(url)
            ctx = _worker_context()
            with db.begin() as session:
                session.add(Project(id=ctx.project_id, name=ctx.project_id))
            end = time.monotonic() + 60
            while not servicegroup.list_services(db, topic=TOPIC, binary=BINARY, up_only=True):
                if procs[0].poll() is not None or time.monotonic() > end:
                    raise SystemExit("fabric-volume did not start")
                eventlet.sleep(0.1)
            transport = rpc.get_transport(config.Settings().replace(rpc={"transport_url": amqp}).rpc)
            try:
                volumes = VolumeService(db, VolumeAPI(transport, timeout=60))
                worker_lifecycle(volumes, args.volumes)
                worker_throughput(volumes, Path(scratch), megabytes)
            finally:
                transport.cleanup()
                stop_processes(procs)
                db.dispose()
                signing.install(None)
    finally:
        stop_processes(procs)
        drop_postgres_database(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
