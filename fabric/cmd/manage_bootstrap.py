"""``fabric-manage bootstrap --admin-password ...``: the first admin.

The command lives here, above the API; what it does is
:func:`fabric.api.bootstrap.bootstrap`, which the API worker also runs on an
empty database.
"""

from __future__ import annotations

import argparse

from fabric import config
from fabric.api.bootstrap import bootstrap
from fabric.cmd import launcher


def _run(settings: config.Settings, args: argparse.Namespace) -> int:
    # DatabaseNotSynced (one clear line) when `fabric-manage db sync` has not run yet.
    db = launcher.open_database(settings, sync_if_empty=False)
    ids = bootstrap(db, args.admin_password, args.admin_user, args.admin_project)
    print(f"Admin user {args.admin_user} ({ids['user_id']}) has the admin role on project "
          f"{args.admin_project} ({ids['project_id']}).")
    return 0


def register(groups: argparse._SubParsersAction) -> None:
    """Add ``fabric-manage bootstrap`` to the operator's tool."""
    parser = groups.add_parser("bootstrap", help="create the first admin user, project and roles (idempotent)")
    parser.add_argument("--admin-password", required=True, help="password of the admin user")
    parser.add_argument("--admin-user", default="admin", help="name of the admin user (default: admin)")
    parser.add_argument("--admin-project", default="admin", help="name of the admin project (default: admin)")
    parser.set_defaults(func=_run)
