"""One listening objectstore: the S3 application served by ``eventlet.wsgi`` on a socket."""

from __future__ import annotations

import logging
import socket

import eventlet
import eventlet.wsgi

from fabric import config
from fabric.objectstore.app import build_app
from fabric.objectstore.core import Objectstore


def listen(settings: config.Settings, port: int | None = None) -> socket.socket:
    """A green socket listening on ``[objectstore] listen`` and ``port`` (default: the configured
    one). A fixed port is bound with SO_REUSEPORT, so the worker's helper processes can bind it
    too, each its own socket the kernel spreads new connections over."""
    address = settings.objectstore.listen
    port = settings.objectstore.port if port is None else port
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    # Not for port 0: the kernel may pick a port another SO_REUSEPORT socket of this user holds.
    return eventlet.listen((address, port), family=family, backlog=512, reuse_port=port != 0)


class ObjectstoreServer:
    """Serves ``service`` on ``sock`` (by default a new socket on the configured address):
    ``start()`` serves on a green thread, ``serve()`` in the calling one, ``stop()`` ends it."""

    def __init__(self, settings: config.Settings, service: Objectstore, sock: socket.socket | None = None) -> None:
        self.sock = sock if sock is not None else listen(settings)
        self.port = self.sock.getsockname()[1]
        address = settings.objectstore.listen
        host = "127.0.0.1" if address in ("0.0.0.0", "") else address
        self.url = settings.objectstore.public_url.rstrip("/") or \
            f"http://{f'[{host}]' if ':' in host else host}:{self.port}"
        self.app = build_app(service)
        self._thread = None

    def serve(self) -> None:
        eventlet.wsgi.server(self.sock, self.app, log=logging.getLogger("fabric.objectstore.wsgi"),
                             log_output=False, max_size=1000, keepalive=True, socket_timeout=300,
                             # S3 sends header names as set (x-amz-meta-* in lower case); SDKs keep
                             # the case of user metadata names as they receive it.
                             capitalize_response_headers=False)

    def start(self) -> ObjectstoreServer:
        self._thread = eventlet.spawn(self.serve)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.kill()
            self._thread = None
        self.sock.close()
