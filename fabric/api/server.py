"""Serve the API with eventlet.wsgi.

The launcher (``fabric-api``, ``fabric-all``) monkey-patches first, then
calls :func:`serve`; tests call :func:`listen` + :func:`start` to run it on a
green thread on a free port.
"""

from __future__ import annotations

import logging
import socket

from fabric import config, heap, wsgi
from fabric.api.app import build_app
from fabric.api.clients import Clients
from fabric.db import Database

LOG = logging.getLogger(__name__)


def listen(settings: config.Settings, port: int | None = None, *, join: bool = False) -> socket.socket:
    """Bind the API socket (``[api] listen`` and ``port``, default the configured one; port 0 picks a
    free one); PortInUse when something listens there. A fixed port is bound with SO_REUSEPORT so
    the worker's helper processes (fabric.api.processes) bind it too (``join``)."""
    port = settings.api.port if port is None else port
    return wsgi.listen(settings.api.listen, port, reuse_port=port != 0, join=join)


class ApiServer(wsgi.GreenServer):
    """One listening API: ``start()`` serves on a green thread, ``stop()`` ends it."""

    log_name = "fabric.api.wsgi"

    def __init__(self, settings: config.Settings, db: Database, clients: Clients,
                 sock: socket.socket | None = None) -> None:
        sock = sock or listen(settings)
        super().__init__(sock, build_app(settings, db, clients, bound_port=sock.getsockname()[1]))

    @property
    def url(self) -> str:
        return self.app.deps.base_url()

    def serve(self) -> None:
        """Serve until the socket closes (blocks this green thread)."""
        LOG.info("API listening on %s", self.url)
        # Everything loaded so far (modules, SQLAlchemy's mappers, the routes, the OpenAPI
        # document) lives as long as the process: move it out of the collector's generations,
        # or every full collection walks it again. Listings allocate tens of thousands of
        # containers, so they trigger collections; without this, a third of the CPU of
        # GET /servers/detail went to collections re-walking that heap.
        heap.freeze_startup_objects()
        super().serve()
