"""Serve the dashboard with eventlet.wsgi (like the API), on ``[dashboard] listen``/``port``.

The dashboard is no worker: it consumes no queue, holds no signing key and
needs no database, so it is not a :class:`~fabric.service.Service`.
``fabric-dashboard`` serves it alone; ``fabric-all`` starts it beside its
workers with :func:`start`.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

import eventlet
import eventlet.wsgi

from fabric import config
from fabric.dashboard.app import build_app


def api_identity_url(settings: config.Settings) -> str:
    """The API's Identity v3 endpoint: ``[dashboard] api_url``, else the API's own
    ``public_url`` or listen address (0.0.0.0 and :: reached over loopback) plus ``/v3``."""
    if settings.dashboard.api_url:
        return settings.dashboard.api_url.rstrip("/")
    if settings.api.public_url:
        return settings.api.public_url.rstrip("/") + "/v3"
    listen = settings.api.listen
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}.get(listen, listen)
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{host}:{settings.api.port}/v3"


class DashboardServer:
    """One listening dashboard: ``start()`` serves on a green thread, ``stop()`` ends it."""

    def __init__(self, settings: config.Settings, identity_url: str | None = None,
                 sock: socket.socket | None = None) -> None:
        family = socket.AF_INET6 if ":" in settings.dashboard.listen else socket.AF_INET
        self.sock = sock or eventlet.listen((settings.dashboard.listen, settings.dashboard.port),
                                            family=family, backlog=512)
        self.port = self.sock.getsockname()[1]
        self.identity_url = identity_url or api_identity_url(settings)
        self.app = build_app(self.identity_url, secure_cookies=settings.dashboard.secure_cookies)
        listen = settings.dashboard.listen
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}.get(listen, listen)
        self.url = f"http://{f'[{host}]' if ':' in host and not host.startswith('[') else host}:{self.port}/dashboard/"
        self._thread = None

    def serve(self) -> None:
        """Serve until the socket closes (blocks this green thread)."""
        eventlet.wsgi.server(self.sock, self.app, log=logging.getLogger("fabric.dashboard.wsgi"), log_output=False,
                             max_size=1000, keepalive=True, socket_timeout=300)

    def start(self) -> DashboardServer:
        self._thread = eventlet.spawn(self.serve)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.kill()
            self._thread = None
        self.sock.close()


def start(settings: config.Settings) -> Callable[[], None]:
    """Serve the dashboard on a green thread (announcing its URL); returns its stop function."""
    server = DashboardServer(settings).start()
    print(f"fabric dashboard listening on {server.url} (API {server.identity_url})", flush=True)
    return server.stop
