"""``fabric-manage reconcile servers|networks|volumes|addresses``: where hosts and the database disagree.

Reports by default; repairs only the kinds a flag names (``--fix-stale``,
``--fix-orphans``, ``--fix-unsynced``, ``--fix-all``). Servers and networks are
asked of each host's compute or network worker over RPC (every host whose worker is
up in the services registry, or the one ``--host`` names), so the command works
from any machine with the API's signing key; addresses are asked of IPAM. The
workers find the drift and make the repairs themselves, through their own handlers
(see :mod:`fabric.reconcile`). One line per finding, then a summary; the exit
status is 0 when nothing is left unrepaired, 1 when drift remains, 2 for bad usage
or an unreachable service.
"""

from __future__ import annotations

import argparse
import collections
import sys
from collections.abc import Callable
from typing import Any, TextIO

from fabric import config, rpc, servicegroup
from fabric.cmd import launcher
from fabric.compute.rpcapi import ComputeAPI
from fabric.context import RequestContext
from fabric.db import Database
from fabric.exception import FabricError, Invalid, NotFound
from fabric.ipam.rpcapi import IpamAPI
from fabric.network.rpcapi import NetworkAPI
from fabric.reconcile import KINDS, Finding, Fixes
from fabric.rpc import signing
from fabric.volume.rpcapi import VolumeAPI

#: Area -> the topic of the workers that answer for it (None: IPAM, not per host).
AREAS = {"servers": "compute", "networks": "network", "volumes": "volume", "addresses": None}


def _hosts(db: Database, topic: str, host: str | None, down_time: float, out: TextIO) -> list[str]:
    """The hosts to ask: ``host`` (NotFound unless a ``topic`` worker is registered there),
    else every host whose ``topic`` worker is up (the others are named as not checked)."""
    services = servicegroup.list_services(db, topic=topic, host=host, down_time=down_time)
    if host is not None and not services:
        raise NotFound(kind=f"{topic} worker on host", ident=host)
    up = sorted({s.host for s in services if s.up})
    for down in sorted({s.host for s in services} - set(up)):
        print(f"{down}: not checked: its {topic} worker is down", file=out)
    return up


def reconcile(area: str, fixes: Fixes, *, db: Database, transport: Any, host: str | None = None,
              down_time: float = servicegroup.DEFAULT_DOWN_TIME, timeout: float | None = None,
              out: TextIO = sys.stdout) -> list[Finding]:
    """Ask the workers for ``area``'s drift (repairing what ``fixes`` names), print one line
    per finding and a summary to ``out``; returns the findings. Raises Invalid for an
    unknown area or ``host`` with addresses, NotFound for an unknown ``host``."""
    if area not in AREAS:
        raise Invalid(reason=f"reconcile {area!r}: accepted are {', '.join(AREAS)}")
    ctx = RequestContext.admin()
    topic = AREAS[area]
    answers: list[dict[str, Any]] = []
    if topic is None:
        if host is not None:
            raise Invalid(reason=f"--host {host}: addresses are IPAM's, not a host's; leave --host out")
        answers.append(IpamAPI(transport, timeout=timeout).reconcile_addresses(ctx, fixes.to_dict()))
    else:
        ask: Callable[..., dict[str, Any]] = {
            "compute": lambda: ComputeAPI(transport, timeout=timeout).reconcile_servers,
            "network": lambda: NetworkAPI(transport, timeout=timeout).reconcile_networks,
            "volume": lambda: VolumeAPI(transport, timeout=timeout).reconcile_volumes}[topic]()
        for name in _hosts(db, topic, host, down_time, out):
            try:
                answers.append(ask(ctx, name, fixes.to_dict()))
            except FabricError as exc:
                print(f"{name}: not checked: {exc.message}", file=out)
    findings = [Finding.from_dict(f) for answer in answers for f in answer["findings"]]
    for finding in findings:
        print(finding.line(), file=out)
    counts = collections.Counter(f.kind for f in findings)
    fixed = sum(f.fixed for f in findings)
    checked = ", ".join(sorted(a["host"] for a in answers if a["host"])) or ("IPAM" if topic is None else "none")
    summary = ", ".join(f"{counts[k]} {k}" for k in KINDS)
    print(f"{area}: {len(findings)} finding(s) ({summary}) on {checked}; {fixed} fixed.", file=out)
    return findings


def reconcile_command(settings: config.Settings, args: argparse.Namespace) -> int:
    """``fabric-manage reconcile AREA``: exit 0 when nothing is left unrepaired, 1 otherwise."""
    fixes = Fixes.all() if args.fix_all else Fixes(args.fix_stale, args.fix_orphans, args.fix_unsynced)
    # An operator's tool doing the API's job: it signs as the API, whose calls these are.
    signing.install(signing.from_settings(settings, ["api"], default_role="api"))
    db = launcher.open_database(settings, sync_if_empty=False)
    transport = rpc.get_transport(settings.rpc)
    try:
        findings = reconcile(args.area, fixes, db=db, transport=transport, host=args.host,
                             down_time=settings.service.service_down_time, timeout=args.timeout)
    finally:
        transport.cleanup()
        db.dispose()
    return 1 if any(not f.fixed for f in findings) else 0


def register(groups: argparse._SubParsersAction) -> None:
    """Add the ``reconcile`` group to fabric-manage."""
    parser = groups.add_parser("reconcile", help="find (and repair) drift between hosts and the database")
    parser.add_argument("area", choices=tuple(AREAS), help="servers: guests; networks: kernel objects; "
                                                           "volumes: volume files and NBD exports; "
                                                           "addresses: allocations and ports")
    parser.add_argument("--host", help="only this host (servers, networks, volumes)")
    parser.add_argument("--fix-stale", action="store_true", help="repair what the database has and the host lacks")
    parser.add_argument("--fix-orphans", action="store_true", help="remove what the host has and the database lacks")
    parser.add_argument("--fix-unsynced", action="store_true", help="repair what both have but differently")
    parser.add_argument("--fix-all", action="store_true", help="all three")
    parser.add_argument("--timeout", type=float, default=None, help="seconds to wait for each host's answer")
    parser.set_defaults(func=reconcile_command)
