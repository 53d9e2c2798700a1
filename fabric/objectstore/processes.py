"""The objectstore's helper processes: ``[objectstore] workers`` processes serve its one port
(how, and what they promise: :mod:`fabric.wsgi_processes`).

What is the objectstore's own:

- helpers never sweep the blob store: only the worker does, before anything listens, and a
  helper never outlives its worker, so a restarted objectstore never sweeps while a helper of
  the old one is still writing;
- an upload a helper was receiving when it died stays in ``tmp/`` until the next start's sweep,
  as after any crash.
"""

from __future__ import annotations

from collections.abc import Callable

from fabric import config, wsgi_processes
from fabric.db import Database

#: The launcher module whose ``helper()`` runs in a helper process.
LAUNCHER = "fabric.cmd.objectstore"


def process_count(settings: config.Settings, backend: str) -> int:
    """How many processes serve S3 (``[objectstore] workers``: see :func:`wsgi_processes.process_count`)."""
    return wsgi_processes.process_count(settings.objectstore.workers, port=settings.objectstore.port,
                                        backend=backend)


def helpers(settings: config.Settings, backend: str) -> wsgi_processes.Helpers:
    """The helpers this worker runs beside itself (not started yet)."""
    return wsgi_processes.Helpers(settings, service="Objectstore", launcher=LAUNCHER, port=settings.objectstore.port,
                                  count=process_count(settings, backend) - 1)


def serve_helper(settings: config.Settings, port: int) -> Callable[[], None]:
    """In a helper: serve S3 on ``port`` beside the worker; the function that stops it."""
    from fabric.objectstore.core import Objectstore
    from fabric.objectstore.server import ObjectstoreServer, listen

    db = Database.from_settings(settings)
    server = ObjectstoreServer(settings, Objectstore.from_settings(settings, db), listen(settings, port, join=True))
    server.start()

    def stop() -> None:
        server.stop()
        db.dispose()

    return stop
