"""One listening objectstore: the S3 application served on a socket by the objectstore's own
HTTP server (:mod:`fabric.objectstore.http_server`)."""

from __future__ import annotations

import socket

from fabric import config, wsgi
from fabric.objectstore import http_server
from fabric.objectstore.app import build_app
from fabric.objectstore.core import Objectstore


def listen(settings: config.Settings, port: int | None = None, *, join: bool = False) -> socket.socket:
    """A green socket listening on ``[objectstore] listen`` and ``port`` (default: the configured
    one); PortInUse when something listens there. A fixed port is bound with SO_REUSEPORT, so the
    worker's helper processes can bind it too (``join``), each its own socket the kernel spreads
    new connections over."""
    port = settings.objectstore.port if port is None else port
    # Not for port 0: the kernel may pick a port another SO_REUSEPORT socket of this user holds.
    return wsgi.listen(settings.objectstore.listen, port, reuse_port=port != 0, join=join)


class ObjectstoreServer(wsgi.GreenServer):
    """Serves ``service`` on ``sock`` (by default a new socket on the configured address):
    ``start()`` serves on a green thread, ``serve()`` in the calling one, ``stop()`` ends it."""

    def __init__(self, settings: config.Settings, service: Objectstore, sock: socket.socket | None = None) -> None:
        super().__init__(sock if sock is not None else listen(settings), build_app(service))
        self.url = config.reachable_url(settings.objectstore.listen, self.port, settings.objectstore.public_url)

    def serve(self) -> None:
        """Serve until the socket closes (blocks this green thread)."""
        http_server.serve(self.sock, self.app, socket_timeout=300, max_connections=1000)

