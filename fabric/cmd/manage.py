"""``fabric-manage``: the operator's tool.

Subcommands are grouped by what they manage; each group lives in a small
module under ``fabric/cmd/manage_*`` and registers itself here.
"""

from __future__ import annotations

import argparse
import sys

from fabric import config
from fabric.cmd import common, manage_bootstrap, manage_keys, manage_queues, manage_reconcile, manage_service
from fabric.db import Database, migration
from fabric.db.engine import redacted


def _database(settings: config.Settings) -> Database:
    db = Database.from_settings(settings)
    db.check_reachable()
    return db


def db_sync(settings: config.Settings, args: argparse.Namespace) -> int:
    """Apply every pending migration; says plainly when there was none."""
    db = _database(settings)
    head = migration.head_revision()
    before = migration.current_revision(db)
    where = redacted(db.url)
    if before == head:
        print(f"Database {where} is already at revision {head}; nothing to do.")
        return 0
    _, after = migration.upgrade(db, args.revision)
    print(f"Database {where} upgraded from {before or 'empty'} to {after}.")
    return 0


def db_version(settings: config.Settings, args: argparse.Namespace) -> int:
    db = _database(settings)
    current = migration.current_revision(db)
    head = migration.head_revision()
    state = "up to date" if current == head else f"head is {head}; run `fabric-manage db sync`"
    print(f"{current or 'empty'} ({state})")
    return 0


def db_downgrade(settings: config.Settings, args: argparse.Namespace) -> int:
    db = _database(settings)
    before, after = migration.downgrade(db, args.revision)
    print(f"Database {redacted(db.url)} downgraded from {before or 'empty'} to {after or 'empty'}.")
    return 0


def config_sample(settings: config.Settings | None, args: argparse.Namespace) -> int:
    sys.stdout.write(config.sample())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fabric-manage", description="Operate a fabric deployment.")
    common.add_config_argument(parser)
    groups = parser.add_subparsers(dest="group", required=True, metavar="GROUP")

    db = groups.add_parser("db", help="schema migrations").add_subparsers(dest="action", required=True)
    sync = db.add_parser("sync", help="upgrade the schema to the newest revision (idempotent)")
    sync.add_argument("revision", nargs="?", default="head")
    sync.set_defaults(func=db_sync)
    db.add_parser("version", help="show the schema revision").set_defaults(func=db_version)
    down = db.add_parser("downgrade", help="downgrade the schema (default: to empty)")
    down.add_argument("revision", nargs="?", default="base")
    down.set_defaults(func=db_downgrade)

    cfg = groups.add_parser("config", help="configuration").add_subparsers(dest="action", required=True)
    cfg.add_parser("sample", help="print the sample configuration").set_defaults(func=config_sample, no_settings=True)

    for register in EXTRA_GROUPS:
        register(groups)
    return parser


#: ``register(subparsers)`` functions of the subcommand groups that live in
#: their own modules (services, queues, topology ...).
EXTRA_GROUPS: list = [manage_service.register, manage_queues.register, manage_bootstrap.register,
                      manage_keys.register, manage_reconcile.register]


@common.clean_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = None if getattr(args, "no_settings", False) else common.load_settings(args)
    return args.func(settings, args)


if __name__ == "__main__":
    sys.exit(main())
