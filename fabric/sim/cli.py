"""``tools/hosts``: simulated hypervisor hosts on this machine.

``tools/hosts up N --config FILE`` stands up N hosts over the broker and
database FILE names (the control workers, fabric-api, -scheduler and -ipam, run
elsewhere: ``tools/run --hosts N`` starts everything) and stays in the
foreground; SIGINT or SIGTERM removes everything it made. ``tools/hosts down``
stops a run from another terminal (or cleans up after one that died);
``tools/hosts cleanup`` removes every dead run's leftovers; ``tools/hosts
status`` lists what is there.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from fabric import config
from fabric.exception import FabricError, Invalid
from fabric.sim import hosts, netns


def _prefix(args: argparse.Namespace) -> str:
    return config.load(args.config).network.prefix if args.config else config.NetworkSection().prefix


def serve(cloud: hosts.SimulatedHosts, stop: threading.Event, out=sys.stdout) -> None:
    """Keep ``cloud`` up until ``stop`` is set, saying when one of its processes exits; then take it down."""
    reported: set[str] = set()
    try:
        while not stop.wait(1.0):
            for name, popen in cloud.processes.items():
                if popen.poll() is not None and name not in reported:
                    reported.add(name)
                    print(f"{name} exited ({popen.returncode}); its log: {cloud.log_path(name)}", file=out, flush=True)
    finally:
        print("taking the simulated hosts down ...", file=out, flush=True)
        cloud.down()


def up(args: argparse.Namespace) -> int:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    cloud = hosts.SimulatedHosts(args.config, args.count, cloud=args.cloud, underlay=args.underlay,
                                 log_dir=args.log_dir)
    cloud.up()
    print(cloud.describe(), flush=True)
    print("up; Ctrl-C (or tools/hosts down) removes everything", flush=True)
    serve(cloud, stop)
    return 0


def down(args: argparse.Namespace) -> int:
    removed = hosts.take_down(_prefix(args), args.cloud)
    print("\n".join(removed) if removed else f"nothing of cloud {args.cloud!r} was left")
    return 0


def cleanup(args: argparse.Namespace) -> int:
    removed = hosts.cleanup_leftovers(_prefix(args))
    print("\n".join(removed) if removed else "no leftovers")
    return 0


def status(args: argparse.Namespace) -> int:
    prefix = _prefix(args)
    root = hosts.STATE_ROOT
    for path in sorted(root.glob(f"{prefix}-*")) if root.is_dir() else []:
        state = hosts.StateDir(path)
        record = state.read()
        owner = record.get("owner", {}).get("pid", "?")
        print(f"{path.name}: {'up (process ' + str(owner) + ')' if state.is_held() else 'dead: tools/hosts cleanup'}")
        for host in record.get("hosts", []):
            print(f"  {host['name']}: namespace {host['namespace']}, address {host['address']}")
    pattern = netns.namespace_pattern(prefix)
    for ns in netns.list_namespaces():
        if pattern.fullmatch(ns):
            print(f"namespace {ns}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tools/hosts", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="stand up N hosts and stay in the foreground")
    start.add_argument("count", type=int, help="number of hosts")
    start.add_argument("--config", required=True, type=Path, help="fabric.conf naming the broker and database")
    start.add_argument("--underlay", default=hosts.DEFAULT_UNDERLAY, help="underlay network (default %(default)s)")
    start.add_argument("--log-dir", help="where the hosts' workers log (default: data_dir/sim/CLOUD/logs)")
    start.set_defaults(func=up)
    for name, func, text in (("down", down, "stop a running cloud, or clean up after a dead one"),
                             ("cleanup", cleanup, "remove every dead run's leftovers"),
                             ("status", status, "list simulated clouds and their namespaces")):
        command = commands.add_parser(name, help=text)
        command.add_argument("--config", type=Path, help="fabric.conf (for its network prefix; default fab)")
        command.set_defaults(func=func)
    for command in (start, commands.choices["down"]):
        command.add_argument("--cloud", default="sim", help="cloud name (default %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FabricError as exc:  # a bad setting, an unreachable database, a host that would not start
        print(f"tools/hosts: {exc.message}", file=sys.stderr)
        return 2 if isinstance(exc, Invalid) else 1


if __name__ == "__main__":
    sys.exit(main())
