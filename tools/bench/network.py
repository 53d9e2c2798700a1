"""Time to plug and unplug endpoints on one simulated host (real kernel objects).

    python tools/bench/network.py [--endpoints 100] [--type vxlan|routed] [--kind tap|veth]

Runs inside scratch network namespaces it creates and deletes; prints p50/p99/max
per operation in milliseconds. Needs root.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from _common import percentile  # noqa: E402 - this folder is first on sys.path

from fabric.config import Settings  # noqa: E402
from fabric.ipam.layout import Layout  # noqa: E402
from fabric.network.drivers.linux import LinuxDriver  # noqa: E402
from fabric.network.kernel import offhub  # noqa: E402
from fabric.network.model import EndpointSpec, HostSpec, NetworkSpec, RoutedSpec, segment_match  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=100)
    parser.add_argument("--type", choices=("vxlan", "routed"), default="vxlan")
    parser.add_argument("--kind", choices=("tap", "veth"), default="tap")
    args = parser.parse_args()

    tag = uuid.uuid4().hex[:6]
    host_ns, ep_ns = f"fabbench-{tag}-h", f"fabbench-{tag}-e"
    for ns in (host_ns, ep_ns):
        subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                        "net.ipv6.conf.default.disable_ipv6=1"], check=True)
    subprocess.run(["ip", "-n", host_ns, "link", "add", "under0", "type", "veth", "peer", "name", "under1"],
                   check=True)
    subprocess.run(["ip", "-n", host_ns, "addr", "add", "192.168.90.1/24", "dev", "under0"], check=True)
    subprocess.run(["ip", "-n", host_ns, "link", "set", "under0", "up"], check=True)
    driver = None
    try:
        with tempfile.TemporaryDirectory() as data_dir:
            settings = Settings().replace(default={"host": "bench", "data_dir": data_dir},
                                          network={"driver": "linux", "tunnel_address": "192.168.90.1"})
            driver = LinuxDriver(settings, netns=host_ns)
            driver.set_remote_hosts([HostSpec(f"r{i}", f"192.168.90.{10 + i}") for i in range(3)])
            layout = Layout.build("10.64.0.0/16", 4, 4, 4, 4)
            if args.type == "routed":
                driver.set_routed(RoutedSpec(str(layout.host_gateway(1)), str(layout.host_block(1)), "10.64.0.0/16"))
                mask, value = segment_match(layout, 1, 1)
                network = NetworkSpec(id="bench", network_type="routed", match_mask=mask, match_value=value)
            else:
                network = NetworkSpec(id="bench", network_type="vxlan", segmentation_id=4242)
            driver.setup_network(network)
            endpoints = []
            for i in range(args.endpoints):
                address = f"10.64.{16 + i // 256}.{i % 256}" if args.type == "routed" else None
                endpoints.append(EndpointSpec(f"ep-{i}", "bench", f"02:00:00:00:{i // 256:02x}:{i % 256:02x}",
                                              address=address, kind=args.kind,
                                              netns=ep_ns if args.kind == "veth" else None, ifname=f"e{i}"))
            plug, unplug = [], []
            for endpoint in endpoints:
                start = time.perf_counter()
                driver.plug(endpoint)
                plug.append((time.perf_counter() - start) * 1000)
            for endpoint in endpoints:
                start = time.perf_counter()
                driver.unplug(endpoint.id)
                unplug.append((time.perf_counter() - start) * 1000)
            print(f"network bench: {args.endpoints} {args.kind} endpoints on one {args.type} network")
            for name, values in (("plug", plug), ("unplug", unplug)):
                print(f"  {name:7s} p50 {statistics.median(values):6.1f} ms   p99 {percentile(values, 0.99):6.1f} ms"
                      f"   max {max(values):6.1f} ms")
    finally:
        if driver is not None:
            driver.stop()
        for ns in (host_ns, ep_ns):
            offhub.release(ns)
            subprocess.run(["ip", "netns", "del", ns], check=False)


if __name__ == "__main__":
    main()
