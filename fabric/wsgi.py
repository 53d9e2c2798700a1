"""One green HTTP server for fabric's WSGI applications (the API, the objectstore, the
dashboard): a socket from :func:`listen`, served by ``eventlet.wsgi``."""

from __future__ import annotations

import errno
import logging
import socket
from typing import Any, ClassVar

import eventlet
import eventlet.wsgi

from fabric.exception import FabricError


class PortInUse(FabricError):
    """A server's port is taken (local to the process that tried; never sent)."""

    remote_safe: ClassVar[bool] = False
    msg_fmt: ClassVar[str] = ("Cannot listen on {address} port {port}: something listens there already "
                              "(another fabric worker, or an earlier one still running?)")


def listen(address: str, port: int, *, reuse_port: bool = False, join: bool = False) -> socket.socket:
    """A green socket listening on ``address``:``port`` (port 0 picks a free one; IPv6 when the
    address has a colon); PortInUse when the port is taken.

    ``reuse_port`` lets this process's helpers bind the same port afterwards (SO_REUSEPORT), each
    its own socket the kernel spreads new connections over. Such a socket is still the first on
    its port: binding fails when anything listens there already, so a second server never quietly
    shares the port of one still running. ``join`` binds beside the sockets already there
    (a helper joining its worker's port).
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        if reuse_port and not join:
            _check_free(family, address, port)
        return eventlet.listen((address, port), family=family, backlog=512, reuse_port=reuse_port or join)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(address=address, port=port) from None
        raise


def _check_free(family: socket.AddressFamily, address: str, port: int) -> None:
    """Raise EADDRINUSE when a socket listens on the port: a bind without SO_REUSEPORT fails
    beside any listening socket, whether that one set SO_REUSEPORT or not."""
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections in TIME_WAIT do not count
        probe.bind((address, port))


class GreenServer:
    """Serves a WSGI ``app`` on ``sock``: :meth:`start` on a green thread, :meth:`serve` in the
    calling one, :meth:`stop` ends it and closes the socket."""

    log_name: ClassVar[str] = "fabric.wsgi"
    #: Extra keyword arguments of ``eventlet.wsgi.server`` for this kind of server.
    wsgi_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, sock: socket.socket, app: Any) -> None:
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self.app = app
        self._thread = None

    def serve(self) -> None:
        """Serve until the socket closes (blocks this green thread)."""
        eventlet.wsgi.server(self.sock, self.app, log=logging.getLogger(self.log_name), log_output=False,
                             max_size=1000, keepalive=True, socket_timeout=300, **self.wsgi_options)

    def start(self) -> GreenServer:
        self._thread = eventlet.spawn(self.serve)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.kill()
            self._thread = None
        self.sock.close()
