"""Serve the dashboard with eventlet.wsgi (like the API), on ``[dashboard] listen``/``port``.

The dashboard is no worker: it consumes no queue, holds no signing key and
needs no database, so it is not a :class:`~fabric.service.Service`.
``fabric-dashboard`` serves it alone; ``fabric-all`` starts it beside its
workers with :func:`start`.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from fabric import config, wsgi
from fabric.dashboard.app import build_app


def api_identity_url(settings: config.Settings) -> str:
    """The API's Identity v3 endpoint: ``[dashboard] api_url``, else the API's own
    ``public_url`` or listen address (0.0.0.0 and :: reached over loopback) plus ``/v3``."""
    if settings.dashboard.api_url:
        return settings.dashboard.api_url.rstrip("/")
    return config.reachable_url(settings.api.listen, settings.api.port, settings.api.public_url) + "/v3"


class DashboardServer(wsgi.GreenServer):
    """One listening dashboard: ``start()`` serves on a green thread, ``stop()`` ends it."""

    log_name = "fabric.dashboard.wsgi"

    def __init__(self, settings: config.Settings, identity_url: str | None = None,
                 sock: socket.socket | None = None) -> None:
        self.identity_url = identity_url or api_identity_url(settings)
        super().__init__(sock or wsgi.listen(settings.dashboard.listen, settings.dashboard.port),
                         build_app(self.identity_url, secure_cookies=settings.dashboard.secure_cookies))
        self.url = config.reachable_url(settings.dashboard.listen, self.port) + "/dashboard/"


def start(settings: config.Settings) -> Callable[[], None]:
    """Serve the dashboard on a green thread (announcing its URL); returns its stop function."""
    server = DashboardServer(settings).start()
    print(f"fabric dashboard listening on {server.url} (API {server.identity_url})", flush=True)
    return server.stop
