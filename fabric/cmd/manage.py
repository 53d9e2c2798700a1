"""``fabric-manage``: the operator's tool.

Subcommands are grouped by what they manage; each group lives in a small
module under ``fabric/cmd/manage_*`` and registers itself here.
"""

from __future__ import annotations

import argparse
import sys

import fabric
from fabric import config, servicegroup
from fabric.cmd import (
    common,
    manage_bootstrap,
    manage_keys,
    manage_queues,
    manage_reconcile,
    manage_service,
    manage_status,
)
from fabric.db import Database, migration
from fabric.db.engine import redacted
from fabric.exception import Conflict


def _database(settings: config.Settings) -> Database:
    db = Database.from_settings(settings)
    db.check_reachable()
    return db


def db_sync(settings: config.Settings, args: argparse.Namespace) -> int:
    """Apply pending migrations (of one phase with --expand or --contract); says plainly when there
    was none. Contract is refused while a worker of another release is up (it may still use
    what contract removes)."""
    db = _database(settings)
    target = args.revision or (migration.EXPAND if args.expand else migration.CONTRACT if args.contract
                               else migration.HEADS)
    where = redacted(db.url)
    todo = migration.pending(db, target)
    if not todo:
        print(f"Database {where} is already at revision {migration.current_revision(db)}; nothing to do.")
        return 0
    if args.contract:
        others = [s for s in servicegroup.list_services(db, down_time=settings.service.service_down_time)
                  if s.up and s.version != fabric.__version__]
        if others:
            names = ", ".join(f"{s.binary} on {s.host} ({s.version})" for s in others)
            raise Conflict(reason=f"workers of another release are up: {names}; upgrade or stop them, "
                                  "then contract")
    before, after = migration.upgrade(db, target)
    print(f"Database {where} upgraded from {before or 'empty'} to {after} ({len(todo)} migration(s)).")
    return 0


def db_version(settings: config.Settings, args: argparse.Namespace) -> int:
    db = _database(settings)
    current = migration.current_revision(db)
    expand, contract = migration.pending(db, migration.EXPAND), migration.pending(db, migration.CONTRACT)
    if not expand and not contract:
        state = "up to date"
    elif expand:
        state = f"{len(expand)} expand migration(s) pending; run `fabric-manage db sync --expand`"
    else:
        state = f"{len(contract)} contract migration(s) pending; `fabric-manage db sync --contract` once every worker is upgraded"
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
    sync = db.add_parser("sync", help="upgrade the schema to the newest revision (idempotent); a rolling "
                                      "upgrade: --expand first, --contract once every worker is upgraded")
    sync.add_argument("revision", nargs="?", default=None, help="a revision to stop at (default: every head)")
    phase = sync.add_mutually_exclusive_group()
    phase.add_argument("--expand", action="store_true",
                       help="only what the previous release's workers keep working with (before rolling them)")
    phase.add_argument("--contract", action="store_true",
                       help="only what removes the previous release's schema (after every worker is upgraded)")
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
                      manage_keys.register, manage_reconcile.register, manage_status.register]


@common.clean_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = None if getattr(args, "no_settings", False) else common.load_settings(args)
    return args.func(settings, args)


if __name__ == "__main__":
    sys.exit(main())
