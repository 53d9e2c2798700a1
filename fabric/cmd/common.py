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
    return settings


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
