"""What every launcher shares: the config-file argument, settings, logging, and
turning a FabricError into one clear line and a non-zero exit."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path

from fabric import config, log
from fabric.exception import FabricError

DEFAULT_CONFIG_FILES = ("/etc/fabric/fabric.conf",)

#: Exit status for a configuration or input error the operator must fix.
EXIT_USAGE = 2


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config-file", metavar="PATH", default=os.environ.get("FABRIC_CONFIG"),
        help="INI settings file (default: $FABRIC_CONFIG, else /etc/fabric/fabric.conf if present; "
             "else the embedded defaults)")


def load_settings(args: argparse.Namespace) -> config.Settings:
    """Settings from --config-file (or the default file if it exists) and the environment."""
    path = args.config_file
    if path is None:
        path = next((p for p in DEFAULT_CONFIG_FILES if Path(p).is_file()), None)
    settings = config.load(path)
    log.setup(settings.default.log_level, settings.default.log_file)
    name_database_sessions(f"{Path(sys.argv[0]).stem or 'fabric'}@{settings.default.host}")
    return settings


def name_database_sessions(name: str) -> None:
    """Name this process's PostgreSQL sessions ``name`` (``fabric-compute@host1``): what
    ``pg_stat_activity.application_name`` shows an operator tracing a connection, a lock or a
    slow query to its worker. Set in the environment (libpq's ``PGAPPNAME``), so the helper
    processes a worker starts carry its name, and replaced by every command that loads
    settings, so a command started by another never carries its parent's. An
    ``application_name`` in the database URL wins over it."""
    # PostgreSQL keeps 63 bytes of it (NAMEDATALEN - 1).
    os.environ["PGAPPNAME"] = name.encode()[:63].decode(errors="ignore")


def clean_errors(main: Callable[..., int]) -> Callable[..., int]:
    """Run a launcher; a FabricError becomes one line on stderr and exit status 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except FabricError as exc:
            prog = Path(sys.argv[0]).name or "fabric"
            print(f"{prog}: error: {exc.message}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            return 130

    return wrapper
