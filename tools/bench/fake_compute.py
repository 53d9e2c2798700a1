"""Fake virt driver at scale: many simulated hosts in one process.

Creates N fake drivers (one per simulated compute host) and spawns G guests
on each, then runs one power-state sweep and one resource report per host,
as the periodic tasks would. Prints operations per second and the process's
memory growth per host and per guest. No threads are created per host or
guest. Run: ``python tools/bench/fake_compute.py [--hosts 500] [--guests 20]``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fabric.virt.driver import BootImage, GuestSpec, NetworkInterface  # noqa: E402
from fabric.virt.fake import FakeDriver  # noqa: E402


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=500)
    parser.add_argument("--guests", type=int, default=20)
    args = parser.parse_args()
    image = BootImage(kernel="/boot/vmlinuz", initrd="/boot/initrd")
    base_rss, threads = _rss_mib(), threading.active_count()

    started = time.perf_counter()
    drivers = [FakeDriver(hostname=f"fake{i}") for i in range(args.hosts)]
    for driver in drivers:
        driver.init_host(driver.hostname)
    hosts_rss = _rss_mib()

    spawn_start = time.perf_counter()
    for h, driver in enumerate(drivers):
        for g in range(args.guests):
            n = h * args.guests + g
            driver.spawn(GuestSpec(uuid=str(uuid.uuid4()), name=f"g{n}", vcpus=1, memory_mb=512, disk_gb=1,
                                   image=image, interfaces=(NetworkInterface(
                                       id=f"p{n}", mac=f"52:54:{n >> 24 & 255:02x}:{n >> 16 & 255:02x}:"
                                       f"{n >> 8 & 255:02x}:{n & 255:02x}", tap=f"tap{n}"),)))
    spawn_seconds = time.perf_counter() - spawn_start
    sweep_start = time.perf_counter()
    for driver in drivers:
        driver.get_power_states()
        driver.get_available_resource()
    sweep_seconds = time.perf_counter() - sweep_start
    total = args.hosts * args.guests
    print(f"{args.hosts} fake hosts created in {spawn_start - started:.3f} s "
          f"({(hosts_rss - base_rss) * 1024 / args.hosts:.1f} KiB each)")
    print(f"{total} spawns: {total / spawn_seconds:,.0f} spawns/s "
          f"({(_rss_mib() - hosts_rss) * 1024 / total:.2f} KiB per guest)")
    print(f"power sweep + resource report of every host: {sweep_seconds * 1000:.1f} ms total, "
          f"{sweep_seconds * 1e6 / args.hosts:.0f} us per host")
    print(f"threads: {threads} before, {threading.active_count()} after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
