"""Serve the API with eventlet.wsgi.

The launcher (``fabric-api``, ``fabric-all``) monkey-patches first, then
calls :func:`serve`; tests call :func:`listen` + :func:`start` to run it on a
green thread on a free port.
"""

from __future__ import annotations

import gc
import logging
import socket

import eventlet
import eventlet.wsgi

from fabric import config
from fabric.api.app import build_app
from fabric.api.clients import Clients
from fabric.db import Database

LOG = logging.getLogger(__name__)


def listen(settings: config.Settings) -> socket.socket:
    """Bind the API socket (``[api] listen``/``port``; port 0 picks a free one)."""
    family = socket.AF_INET6 if ":" in settings.api.listen else socket.AF_INET
    return eventlet.listen((settings.api.listen, settings.api.port), family=family, backlog=512)


class ApiServer:
    """One listening API: ``start()`` serves on a green thread, ``stop()`` ends it."""

    def __init__(self, settings: config.Settings, db: Database, clients: Clients,
                 sock: socket.socket | None = None) -> None:
        self.sock = sock or listen(settings)
        self.port = self.sock.getsockname()[1]
        self.app = build_app(settings, db, clients, bound_port=self.port)
        self._thread = None

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
        gc.collect()
        gc.freeze()
        eventlet.wsgi.server(self.sock, self.app, log=logging.getLogger("fabric.api.wsgi"), log_output=False,
                             max_size=1000, keepalive=True, socket_timeout=300)

    def start(self) -> ApiServer:
        self._thread = eventlet.spawn(self.serve)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.kill()
            self._thread = None
        self.sock.close()
