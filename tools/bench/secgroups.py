"""Security-group benchmark on one simulated host (a namespace this script makes and removes).

200 ports (198 taps and 2 veths into endpoint namespaces) on one VXLAN network, in 20
groups of 20 rules each (every port has 20 rules). Measures:

- the time to apply a rule change to every port it touches (one rule added to or
  removed from one group: the driver rebuilds its tables in one ``nft -f``), p50 and p99;
- the time to apply one port joining or leaving a remote group of ``--members`` members
  (ports on other hosts): applied whole (``set_security`` with the changed state: the
  group's set flushed and refilled, as when every host re-read its state on each plug) and
  as a change of members (``change_members``: one element added or deleted), interleaved;
- TCP throughput between the two veth endpoints across the bridge with filtering off
  (no port filtered) and on (both ports filtered, the flow allowed by a rule), from a
  Python sender and receiver (no iperf on this machine): a ratio within one run, of the
  medians of ``--rounds`` interleaved off/on pairs (one pair alone swung from -8% to +17%
  here on a quiet machine: a single stream's rate drifts more than filtering costs).

Goals (issue 17): p99 under 100 ms; filtering costs under 10% of throughput.
Run as root: ``.venv/bin/python tools/bench/secgroups.py [--changes 50] [--seconds 2] [--rounds 7]``.
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import tempfile
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

import _common  # noqa: E402

from fabric.config import Settings  # noqa: E402
from fabric.network.drivers.linux import LinuxDriver  # noqa: E402
from fabric.network.kernel import offhub  # noqa: E402
from fabric.network.model import EndpointSpec, NetworkSpec  # noqa: E402
from fabric.network.secgroups import RuleSpec, SecurityState, merged_addresses  # noqa: E402

PORTS, GROUPS, RULES = 200, 20, 20
RECEIVER = """
import socket, sys
s = socket.socket(); s.bind(("0.0.0.0", 5201)); s.listen(1)
print("ready", flush=True)
c, _ = s.accept(); total = 0
while (d := c.recv(1 << 16)):
    total += len(d)
print(total, flush=True)
"""
SENDER = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], 5201), timeout=10); buf = b"x" * (1 << 16); end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    s.sendall(buf)
s.close()
"""


def sh(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=120)


def group_rules(group: int, extra: int = 0) -> list[RuleSpec]:
    rules = [RuleSpec.checked("ingress", protocol="tcp", port_range_min=1000 + group * 100 + n)
             for n in range(RULES - 3 + extra)]
    rules += [RuleSpec.checked("ingress", protocol="tcp", port_range_min=5201),
              RuleSpec.checked("ingress", protocol="icmp", remote_group_id=f"g{group}"),
              RuleSpec.checked("egress")]
    return rules


def security(ports: list[EndpointSpec], changed: int | None = None, extra: int = 0) -> SecurityState:
    groups = {f"g{g}": group_rules(g, extra if g == changed else 0) for g in range(GROUPS)}
    members: dict[str, list[str]] = {}
    for i, port in enumerate(ports):
        members.setdefault(f"g{i % GROUPS}", []).append(port.address)
    return SecurityState(groups=groups, ports={p.id: [f"g{i % GROUPS}"] for i, p in enumerate(ports)},
                         members=members)


def member_changes(driver: LinuxDriver, ports: list[EndpointSpec], members: int, changes: int) -> tuple[list, list]:
    """(seconds per change applied whole, seconds per change applied as members) for a port
    joining and leaving g0, which has ``members`` more members on other hosts, interleaved."""
    state = security(ports)
    state.member_ports = {g: {} for g in state.groups}
    for i, port in enumerate(ports):
        state.member_ports[f"g{i % GROUPS}"][port.id] = (port.address,)
    for i in range(members):
        state.member_ports["g0"][f"far{i}"] = (f"10.41.{i // 250}.{1 + i % 250}",)
    state.members = {g: merged_addresses(held.values()) for g, held in state.member_ports.items()}
    driver.set_security(state)
    whole, delta = [], []
    for n in range(changes):
        change = [("newcomer", ["g0"] if n % 2 == 0 else [], ("10.41.250.1",))]
        if n % 4 < 2:
            wanted = copy.deepcopy(driver.security)
            wanted.change_members(change)
            start = time.perf_counter()
            driver.set_security(wanted)
            whole.append(time.perf_counter() - start)
        else:
            start = time.perf_counter()
            driver.change_members(driver.security.change_members(change))
            delta.append(time.perf_counter() - start)
    return whole, delta


def throughput(sender_ns: str, receiver_ns: str, address: str, seconds: float) -> float:
    """Bytes per second of one TCP stream from ``sender_ns`` to ``address`` in ``receiver_ns``."""
    receiver = subprocess.Popen(["ip", "netns", "exec", receiver_ns, sys.executable, "-c", RECEIVER],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout.readline().strip() == "ready"
        start = time.monotonic()
        sh("ip", "netns", "exec", sender_ns, sys.executable, "-c", SENDER, address, str(seconds))
        total = int(receiver.stdout.readline())
        return total / (time.monotonic() - start)
    finally:
        receiver.kill()
        receiver.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--members", type=int, default=3000, help="members of the remote group a port joins")
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:6]
    host, e1, e2 = f"fabb-{tag}-h", f"fabb-{tag}-e1", f"fabb-{tag}-e2"
    made = []
    try:
        for ns in (host, e1, e2):
            sh("ip", "netns", "add", ns)
            made.append(ns)
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
               "net.ipv6.conf.default.disable_ipv6=1")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        settings = Settings().replace(default={"host": "bench", "data_dir": tempfile.mkdtemp()},
                                      network={"driver": "linux", "tunnel_address": "192.168.90.1"})
        driver = LinuxDriver(settings, netns=host)
        network = NetworkSpec(id="bench-net", network_type="vxlan", segmentation_id=900, host_address="10.40.0.1/16")
        driver.setup_network(network)
        ports = []
        for i in range(PORTS):
            address = f"10.40.{1 + i // 250}.{1 + i % 250}"
            if i < 2:
                spec = EndpointSpec(f"p{i}", network.id, f"02:00:00:40:00:{i:02x}", address, kind="veth",
                                    netns=(e1, e2)[i])
            else:
                spec = EndpointSpec(f"p{i}", network.id, f"02:00:00:40:{i // 256:02x}:{i % 256:02x}", address)
            driver.plug(spec)
            ports.append(spec)
        for ns, port in ((e1, ports[0]), (e2, ports[1])):
            sh("ip", "-n", ns, "addr", "add", f"{port.address}/16", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")

        offs, ons = [], []
        for _ in range(args.rounds):
            driver.set_security(SecurityState())
            offs.append(throughput(e1, e2, ports[1].address, args.seconds))
            driver.set_security(security(ports))
            ons.append(throughput(e1, e2, ports[1].address, args.seconds))
        off, on = _common.percentile(offs, 0.5), _common.percentile(ons, 0.5)
        pairs = sorted((1 - b / a) * 100 for a, b in zip(offs, ons, strict=True))

        timings = []
        for n in range(args.changes):
            wanted = security(ports, changed=n % GROUPS, extra=1 if n % 2 == 0 else 0)
            start = time.perf_counter()
            driver.set_security(wanted)
            timings.append(time.perf_counter() - start)
        rules = driver.security_rules().count("\n")
        whole, delta = member_changes(driver, ports, args.members, args.changes * 2)
        p50, p99 = _common.percentile(timings, 0.5), _common.percentile(timings, 0.99)
        print(f"ports {PORTS}, groups {GROUPS}, rules per port {RULES}, nft lines listed {rules}")
        print(f"rule change applied to every port it touches ({PORTS // GROUPS} ports each): "
              f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms over {len(timings)} changes (goal p99 < 100 ms)")
        print(f"a port joining or leaving a remote group of {args.members} members: applied whole p50 "
              f"{_common.percentile(whole, 0.5) * 1000:.1f} ms, p99 {_common.percentile(whole, 0.99) * 1000:.1f} ms; "
              f"as a change of members p50 {_common.percentile(delta, 0.5) * 1000:.1f} ms, "
              f"p99 {_common.percentile(delta, 0.99) * 1000:.1f} ms ({len(delta)} changes each, interleaved)")
        print(f"throughput filtering off {off * 8 / 1e9:.2f} Gbit/s, on {on * 8 / 1e9:.2f} Gbit/s: "
              f"cost {(1 - on / off) * 100:.1f}% (goal < 10%); medians of {args.rounds} interleaved pairs, "
              f"whose own costs ranged {pairs[0]:.1f}% to {pairs[-1]:.1f}%")
        driver.stop()
    finally:
        for ns in reversed(made):
            for pid in _pids_in(ns):
                os.kill(pid, 9)
            offhub.release(ns)
            subprocess.run(["ip", "netns", "del", ns], check=False)


def _pids_in(ns: str) -> list[int]:
    try:
        target = os.stat(f"/run/netns/{ns}").st_ino
    except FileNotFoundError:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if os.stat(f"/proc/{entry}/ns/net").st_ino == target:
                    found.append(int(entry))
            except OSError:
                continue
    return found


if __name__ == "__main__":
    main()
