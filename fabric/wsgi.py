"""One green HTTP server for fabric's WSGI applications (the API, the objectstore, the
dashboard): a socket from :func:`listen`, served by ``eventlet.wsgi``."""

from __future__ import annotations

import logging
import socket
from typing import Any, ClassVar

import eventlet
import eventlet.wsgi


def listen(address: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A green socket listening on ``address``:``port`` (port 0 picks a free one; IPv6 when the
    address has a colon). ``reuse_port`` lets other processes bind the same port (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return eventlet.listen((address, port), family=family, backlog=512, reuse_port=reuse_port)


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
