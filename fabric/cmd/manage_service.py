"""``fabric-manage service list|disable|enable``: the services registry."""

from __future__ import annotations

import argparse

from fabric import config, servicegroup
from fabric.cmd import launcher
from fabric.cmd.tables import format_table
from fabric.db import Database


def _database(settings: config.Settings) -> Database:
    """The registry's database; DatabaseUnavailable or DatabaseNotSynced when unusable."""
    return launcher.open_database(settings, sync_if_empty=False)


def service_list(settings: config.Settings, args: argparse.Namespace) -> int:
    """One line per registered service: where, what, up or down, when last seen, disabled why."""
    db = _database(settings)
    try:
        services = servicegroup.list_services(db, topic=args.topic, host=args.host,
                                              down_time=settings.service.service_down_time)
    finally:
        db.dispose()
    if not services:
        print("No services are registered.")
        return 0
    rows = [(s.host, s.binary, s.topic, "up" if s.up else "down",
             s.last_heartbeat.isoformat(sep=" ", timespec="seconds") if s.last_heartbeat else "never",
             "disabled" if s.disabled else "enabled", s.disabled_reason or "")
            for s in services]
    print(format_table(("Host", "Binary", "Topic", "State", "Last heartbeat (UTC)", "Status",
                        "Disabled reason"), rows), end="")
    return 0


def _set_disabled(settings: config.Settings, args: argparse.Namespace, disabled: bool) -> int:
    db = _database(settings)
    try:
        servicegroup.set_disabled(db, args.host, args.binary, disabled,
                                  reason=getattr(args, "reason", None))
    finally:
        db.dispose()
    what = f"disabled ({args.reason})" if disabled and args.reason else ("disabled" if disabled else "enabled")
    print(f"Service {args.binary} on host {args.host} is {what}.")
    return 0


def service_disable(settings: config.Settings, args: argparse.Namespace) -> int:
    """Take a service out of scheduling (it keeps running); NotFound if unknown."""
    return _set_disabled(settings, args, True)


def service_enable(settings: config.Settings, args: argparse.Namespace) -> int:
    return _set_disabled(settings, args, False)


def register(groups: argparse._SubParsersAction) -> None:
    """Add the ``service`` group to fabric-manage."""
    service = groups.add_parser("service", help="the services registry").add_subparsers(
        dest="action", required=True)
    listing = service.add_parser("list", help="registered services, up or down, enabled or not")
    listing.add_argument("--topic", help="only services of this topic")
    listing.add_argument("--host", help="only services on this host")
    listing.set_defaults(func=service_list)
    disable = service.add_parser("disable", help="disable a service (schedulers skip it)")
    disable.add_argument("host")
    disable.add_argument("binary", help="e.g. fabric-compute")
    disable.add_argument("--reason", help="why (shown by service list; at most 255 characters)")
    disable.set_defaults(func=service_disable)
    enable = service.add_parser("enable", help="enable a disabled service")
    enable.add_argument("host")
    enable.add_argument("binary")
    enable.set_defaults(func=service_enable)
