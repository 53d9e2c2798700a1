"""What every worker launcher shares: arguments, database check, services, serving.

Launcher modules import :mod:`fabric.cmd.eventlet_entry` first and then call
:func:`launch` with the workers they run.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence

from kombu.utils.url import maybe_sanitize_url

from fabric import config, metrics, rpc
from fabric.cmd import common, workers
from fabric.db import Database, migration
from fabric.db.engine import redacted
from fabric.exception import DatabaseNotSynced
from fabric.rpc import signing
from fabric.service import Service, serve

LOG = logging.getLogger(__name__)


def open_database(settings: config.Settings, *, sync_if_empty: bool) -> Database:
    """The shared database, checked reachable and carrying fabric's schema.

    With ``sync_if_empty`` an empty SQLite database is brought to the newest
    schema first (the embedded all-in-one default). Raises DatabaseUnavailable
    or DatabaseNotSynced.
    """
    db = Database.from_settings(settings)
    db.check_reachable()
    if "services" in migration.table_names(db):
        return db
    if sync_if_empty and db.backend == "sqlite":
        _, revision = migration.upgrade(db)
        LOG.info("Created the schema (revision %s) in the empty database %s", revision, redacted(db.url))
        return db
    raise DatabaseNotSynced(url=redacted(db.url))


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    common.add_config_argument(parser)
    return parser


def launch(binaries: tuple[str, ...], argv: list[str] | None, *, prog: str, description: str,
           embedded: bool = False, beside: Sequence[Callable[[config.Settings], Callable[[], None]]] = ()) -> int:
    """Run the workers ``binaries`` in this process until SIGTERM/SIGINT; exit status.

    ``beside`` are servers that are no workers (no queues, no registry: the
    dashboard): each is started with the settings and returns its stop function.

    ``embedded`` (fabric-all) creates the schema in an empty SQLite database and
    generates the RPC signing keys when the key directory holds none.
    Raises FabricError for a bad setting, missing signing keys or an unreachable database (the
    launcher's ``clean_errors`` turns it into one line).
    """
    args = build_parser(prog, description).parse_args(argv)
    settings = common.load_settings(args)
    # Only the keys of the roles run here; fabric-all makes every role's on its first start.
    roles = [workers.worker(binary).topic for binary in binaries]
    signing.install(signing.from_settings(settings, roles, default_role="api" if "api" in roles else None,
                                          generate_missing=embedded))
    db = open_database(settings, sync_if_empty=embedded)
    transport = rpc.get_transport(settings.rpc)
    stops: list[Callable[[], None]] = []
    try:
        if settings.rpc.transport_url.startswith("memory://") and len(binaries) == 1:
            LOG.warning("%s uses the in-process memory:// transport: only workers in this "
                        "process can reach it (fabric-all is the embedded mode)", prog)
        host = settings.default.host
        services = []
        for binary in binaries:
            spec = workers.worker(binary)
            manager = workers.build_manager(binary, settings, host=host, db=db, transport=transport)
            services.append(Service(settings, binary, spec.topic, manager, host=host,
                                    transport=transport, db=db))
        LOG.info("%s starting %s on host %s (transport %s, database %s)", prog,
                 ", ".join(binaries), host, maybe_sanitize_url(settings.rpc.transport_url), redacted(db.url))
        stops.extend(start(settings) for start in beside)
        if "fabric-api" in binaries:
            metrics.register_instance_states(db)
        stops.append(metrics.start_exposition(settings))
        return serve(services, settings)
    finally:
        for stop in reversed(stops):
            stop()
        transport.cleanup()
        db.dispose()
