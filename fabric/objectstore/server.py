"""One listening objectstore: the S3 application served by ``eventlet.wsgi`` on a socket."""

from __future__ import annotations

import socket

from fabric import config, wsgi
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

    log_name = "fabric.objectstore.wsgi"
    # S3 sends header names as set (x-amz-meta-* in lower case); SDKs keep the case of
    # user metadata names as they receive it.
    wsgi_options = {"capitalize_response_headers": False}

    def __init__(self, settings: config.Settings, service: Objectstore, sock: socket.socket | None = None) -> None:
        super().__init__(sock if sock is not None else listen(settings), _one_content_length(build_app(service)))
        self.url = config.reachable_url(settings.objectstore.listen, self.port, settings.objectstore.public_url)


def _one_content_length(app):
    """``app`` with its ``content-length`` header spelt ``Content-Length``: eventlet.wsgi adds its
    own ``Content-Length`` to a sized body unless one spelt so is there, and a second length
    makes strict clients (wrk, http-parser) drop the connection."""

    def wrapped(environ, start_response):
        def respond(status, headers, exc_info=None):
            headers = [("Content-Length", v) if n == "content-length" else (n, v) for n, v in headers]
            return start_response(status, headers, exc_info)
        return app(environ, respond)
    return wrapped
