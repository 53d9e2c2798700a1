"""Boot benchmark: time from ``build_instance`` to the guest answering ping, and host memory per guest.

Builds a namespace with a bridge and the network worker's dnsmasq, then
re-runs itself inside it as a compute host: a ComputeManager on the libvirt
driver (``qemu:///embed``, TCG here) with a SQLite database, addresses from a
static list, and NICs on the bridge. For each of N boots it inserts a
building instance, calls ``build_instance``, pings the guest's DHCP address
until it answers, reads the QEMU process's resident memory and CPU time and
the guest's own timestamps from its serial console, then deletes the
instance. Prints the p50/max boot time and memory per guest. Removes the
namespace, dnsmasq, guests and files it made.

Pings go out every 20 ms from a raw ICMP socket, so the figure is not
rounded up to a ping tool's one-second timeout. The one-time QEMU
capability probe of a fresh libvirt root is done (and printed) before the
timed boots. Where the time goes: the host time at which each of the
guest's console lines (/init started, modules loaded, DHCP lease, ready)
appeared, and the QEMU process's CPU time (what the boot costs, whatever
else the machine runs). The guest's own uptime at those lines is printed
too, but do not trust it on a loaded host: under TCG the guest calibrates
its TSC against an emulated timer that is starved as well, so its clock can
run fast or slow by seconds.

Run from the repository root as root: ``python tools/bench/boot.py [--boots 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tools")]

BRIDGE, SUBNET_GW = "fabbr0", "10.78.0.1/24"


def _addresses(boots: int) -> list[tuple[str, str]]:
    return [(f"52:54:00:78:00:{i + 10:02x}", f"10.78.0.{i + 10}") for i in range(boots)]


def outer(args) -> int:
    import guest_image

    from fabric.network.dhcp import DhcpServers
    from fabric.network.kernel import Kernel

    image = guest_image.ensure_guest_image(args.cache)
    ns = f"fabbench-{uuid.uuid4().hex[:6]}"
    work = Path(tempfile.mkdtemp(prefix="fabboot-", dir="/tmp"))
    dhcp = None
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        def in_ns(*argv):
            subprocess.run(["ip", "netns", "exec", ns, *argv], check=True, capture_output=True)

        in_ns("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
        in_ns("ip", "link", "set", "lo", "up")
        in_ns("ip", "link", "add", BRIDGE, "type", "bridge")
        in_ns("ip", "addr", "add", SUBNET_GW, "dev", BRIDGE)
        in_ns("ip", "link", "set", BRIDGE, "up")
        dhcp = DhcpServers(Kernel(ns), str(work / "net"))
        dhcp.ensure("bench", BRIDGE, SUBNET_GW, _addresses(args.boots))
        child = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-W", "ignore", __file__, "--inner",
             "--boots", str(args.boots), "--work", str(work), "--image", json.dumps(image.__dict__)],
            env=dict(os.environ, LIBVIRT_LOG_OUTPUTS=f"3:file:{work / 'libvirt.log'}"), cwd=REPO)
        if child.returncode:
            print((work / "libvirt.log").read_text()[-3000:] if (work / "libvirt.log").exists() else "",
                  file=sys.stderr)
        return child.returncode
    finally:
        if dhcp is not None:
            dhcp.stop_all()
        subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(work, ignore_errors=True)


def _qemu_usage(root: Path) -> tuple[float, float, float]:
    """(RSS MiB, anonymous RSS MiB, CPU seconds) of the QEMU process under ``root``.

    The anonymous part is what each guest costs on its own; the rest is
    mostly the kernel and initrd files, mapped and shared between guests.
    """
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            if b"qemu-system" in cmdline and str(root).encode() in cmdline:
                status = dict(line.split(":", 1) for line in Path(f"/proc/{entry}/status").read_text().splitlines())
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
                return (int(status["VmRSS"].split()[0]) / 1024, int(status["RssAnon"].split()[0]) / 1024, cpu)
        except (OSError, KeyError, ValueError):
            continue
    return 0.0, 0.0, 0.0


def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def ping_until_answer(address: str, deadline: float, interval: float = 0.02, on_tick=None) -> bool:
    """Send ICMP echo requests to ``address`` every ``interval`` s until one is answered.

    Calls ``on_tick()`` once per request (the benchmark watches the console
    then). Returns False if ``deadline`` (a time.monotonic() value) passes first.
    """
    ident = os.getpid() & 0xFFFF
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        seq = 0
        while time.monotonic() < deadline:
            seq = (seq + 1) & 0xFFFF
            header = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"fabric-boot-bench"
            packet = header[:2] + struct.pack("!H", _checksum(header + b"\0")) + header[4:]
            if on_tick is not None:
                on_tick()
            try:
                sock.sendto(packet, (address, 0))
            except OSError:
                pass  # no neighbour yet (EHOSTUNREACH): try again on the next tick
            until = time.monotonic() + interval
            while (left := until - time.monotonic()) > 0:
                if not select.select([sock], [], [], left)[0]:
                    break
                data, (source, _port) = sock.recvfrom(2048)
                icmp = data[(data[0] & 0x0F) * 4:]
                if source == address and icmp[0] == 0 and struct.unpack("!H", icmp[4:6])[0] == ident:
                    return True
    return False


_GUEST_MARK = re.compile(r"fabric-guest: (init|modules loaded|eth0 \S+|ready) at ([\d.]+)s")


def guest_marks(console: str) -> dict[str, float]:
    """The guest's own uptime at /init, modules loaded, DHCP bound (eth0) and ready."""
    marks = {}
    for name, uptime in _GUEST_MARK.findall(console):
        marks[name.split()[0]] = float(uptime)
    return marks


def inner(args) -> int:
    from fabric.compute.manager import ComputeManager
    from fabric.config import Settings
    from fabric.context import RequestContext
    from fabric.db import Database
    from fabric.db.models import Base
    from fabric.virt.driver import BootImage
    from tests.fixtures.instances import add_instance

    image = json.loads(args.image)
    work = Path(args.work)
    addresses = _addresses(args.boots)

    class StaticAddresses:
        def allocate(self, ctx, instance, index, request):
            mac, ip = addresses[request["slot"]]
            return {"id": f"port-{request['slot']}", "network_id": "bench", "mac": mac, "address": ip}

        def release(self, ctx, instance, index, vif):
            pass

    class BridgePlugger:
        def plug(self, ctx, host, vif):
            return {"bridge": BRIDGE}

        def unplug(self, ctx, host, vif):
            pass

    class Kernels:
        def boot_image(self, ctx, instance):
            return BootImage(kernel=image["kernel"], initrd=image["initrd"], cmdline=image["cmdline"])

    class NoClaims:
        def release(self, instance_id, host):
            return True

    settings = Settings().replace(
        default={"host": "bench", "data_dir": str(work)},
        compute={"driver": "libvirt", "libvirt_uri": f"qemu:///embed?root={work / 'embed'}",
                 "instances_path": str(work / "instances"), "guest_shutdown_timeout": 0.0})
    db = Database(f"sqlite:///{work / 'bench.db'}")
    Base.metadata.create_all(db.engine)
    manager = ComputeManager(settings, "bench", db, driver=None, addresses=StaticAddresses(),
                             network=BridgePlugger(), rescheduler=None, claims=NoClaims(), images=Kernels())
    manager.init_host()
    # A fresh qemu:///embed root probes QEMU's capabilities on first use (seconds,
    # once per host, cached under the root): do it before timing boots.
    probe_started = time.monotonic()
    manager.driver.host.call(lambda conn: conn.getDomainCapabilities(None, "x86_64", None,
                                                                     manager.driver.domain_type, 0))
    print(f"libvirt QEMU capability probe (once per host, not in the boot times): "
          f"{time.monotonic() - probe_started:.2f} s", flush=True)
    ctx = RequestContext.admin()
    boots, spawns, memory, anon, cpus, seen_all = [], [], [], [], [], []
    for slot in range(args.boots):
        instance_id = str(uuid.uuid4())
        add_instance(db, id=instance_id, project_id="bench", user_id="bench", host="bench", image_id="kernel",
                     requested_networks=[{"network_id": "bench", "slot": slot}])
        started = time.monotonic()
        manager.build_instance(ctx, instance_id)
        spawned = time.monotonic() - started
        spawns.append(spawned)
        cpu_at_start = _qemu_usage(work)[2]  # QEMU start-up, before the guest runs much
        ip = addresses[slot][1]
        console = work / "instances" / instance_id / "console.log"
        seen: dict[str, float] = {}  # host time when each guest line first showed on the console

        def watch_console(console=console, seen=seen, started=started):
            try:
                text = console.read_text(errors="replace")
            except OSError:
                return
            for name in guest_marks(text):
                seen.setdefault(name, time.monotonic() - started)

        if not ping_until_answer(ip, started + 120, on_tick=watch_console):
            print(f"boot {slot}: no ping within 120 s", file=sys.stderr)
            return 1
        boots.append(time.monotonic() - started)
        rss, rss_anon, cpu = _qemu_usage(work)
        memory.append(rss)
        anon.append(rss_anon)
        cpus.append(cpu)
        watch_console()
        seen_all.append(seen)
        guest = guest_marks(manager.driver.get_console_output(instance_id))
        on_host = ", ".join(f"{k} {v:.2f}" for k, v in seen.items())
        in_guest = ", ".join(f"{k} {v:.2f}" for k, v in guest.items())
        print(f"boot {slot}: build_instance returned after {spawned:.2f} s, first ping after {boots[-1]:.2f} s, "
              f"QEMU CPU {cpu:.2f} s ({cpu_at_start:.2f} when started), RSS {rss:.0f} MiB ({rss_anon:.0f} anon)\n"
              f"  console lines seen at (host s after build_instance): [{on_host}]; "
              f"guest uptime at them: [{in_guest}]", flush=True)
        manager.terminate_instance(ctx, instance_id)
    manager.cleanup_host()
    print(f"build_instance -> ping over {args.boots} boots: p50 {statistics.median(boots):.2f} s, "
          f"min {min(boots):.2f} s, max {max(boots):.2f} s (virt_type {manager.driver.domain_type})")
    print(f"QEMU CPU time to first ping: p50 {statistics.median(cpus):.2f} s")
    init_seen = [s["init"] for s in seen_all if "init" in s]
    print(f"phases (p50, host s after build_instance was called): build_instance returned "
          f"{statistics.median(spawns):.2f}, /init on the console "
          f"{statistics.median(init_seen) if init_seen else float('nan'):.2f}, "
          f"first ping {statistics.median(boots):.2f}")
    print(f"host memory per guest (QEMU RSS, 128 MiB guest): p50 {statistics.median(memory):.0f} MiB, "
          f"of which anonymous {statistics.median(anon):.0f} MiB (the rest: file pages of QEMU, its libraries and the kernel, shared between guests)")
    print(f"host load average while measuring: {os.getloadavg()[0]:.1f} (CPUs: {os.cpu_count()})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boots", type=int, default=5)
    parser.add_argument("--cache", help="guest image cache (default: $FABRIC_GUEST_CACHE or ~/.cache/fabric/guest)")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--image", help=argparse.SUPPRESS)
    args = parser.parse_args()
    return inner(args) if args.inner else outer(args)


if __name__ == "__main__":
    sys.exit(main())
