"""The metadata server of one host: a listener per device, inside the host's network namespace.

Each listener is a TCP socket on 169.254.169.254:80 bound (``SO_BINDTODEVICE``)
to one device: an L2 network's bridge, or a routed endpoint's own device. The
kernel hands a connection to the listener of the device the packet came in
on, so the listener's networks are where the request arrived, whatever the
guest wrote in it; and because the socket is bound to that device, replies
leave by it too, so two networks using the same addresses on one host each
get their own answers. Sockets are made in the namespace's native thread (a
socket belongs to the namespace it was created in) and served by green
threads (``eventlet.wsgi``), so lookups use the worker's green database access.

The address itself must be local in the namespace; the network driver puts it
there (see :mod:`fabric.network.drivers.linux`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any

import eventlet
import eventlet.wsgi
from eventlet import greenio, patcher

from fabric import exception
from fabric.db import Database
from fabric.metadata import METADATA_ADDRESS, METADATA_PORT, facts
from fabric.metadata.app import Finder, MetadataApp
from fabric.network.kernel import offhub

LOG = logging.getLogger(__name__)
_socket = patcher.original("socket")

#: Concurrent connections one listener serves; more wait in the listen backlog.
CONNECTIONS_PER_LISTENER = 16


def _listen(local: dict[str, Any], device: str, address: str, port: int) -> Any:
    """A listening socket on ``address:port`` that only sees traffic arriving on ``device``."""
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    try:
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_BINDTODEVICE, device.encode())
        sock.bind((address, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise exception.KernelError(op="listen", target=f"{address}:{port} on {device}", errno=exc.errno or 0,
                                    reason=exc.strerror or str(exc)) from None
    return sock


def _device_indexes(local: dict[str, Any]) -> dict[str, int]:
    return {name: index for index, name in _socket.if_nameindex()}


@dataclasses.dataclass
class _Listener:
    ifindex: int
    app: MetadataApp
    sock: Any
    thread: Any


class MetadataServer:
    """Serves metadata on chosen devices of one network namespace (``None``: the process's own)."""

    def __init__(self, netns: str | None, find: Finder, client_timeout: float = 10.0,
                 address: str = METADATA_ADDRESS, port: int = METADATA_PORT) -> None:
        self.netns = netns
        self.find = find
        self.client_timeout = client_timeout
        self.address = address
        self.port = port
        self._listeners: dict[str, _Listener] = {}

    @classmethod
    def from_database(cls, db: Database, netns: str | None, client_timeout: float = 10.0) -> MetadataServer:
        """A server that looks instances up in ``db``."""
        return cls(netns, functools.partial(facts.find_instance, db), client_timeout)

    def serve_exactly(self, devices: dict[str, tuple[str, ...]]) -> None:
        """Listen on exactly ``devices`` (device name -> the networks it carries).

        A device that does not exist yet is skipped (the next call picks it
        up); a device recreated under the same name gets a new listener.
        Raises KernelError when a socket cannot be bound (say, the address is
        not local in the namespace).
        """
        thread = offhub.thread_for(self.netns)
        indexes = thread.run(_device_indexes)
        for device in list(self._listeners):
            if device not in devices or indexes.get(device) != self._listeners[device].ifindex:
                self._close(device)
        for device, networks in sorted(devices.items()):
            listener = self._listeners.get(device)
            if listener is not None:
                listener.app.network_ids = networks
                continue
            if device not in indexes:
                continue
            raw = thread.run(_listen, device, self.address, self.port)
            sock = greenio.GreenSocket(raw)
            app = MetadataApp(networks, self.find, device=device)
            green = eventlet.spawn(eventlet.wsgi.server, sock, app, log=LOG, log_output=False, keepalive=False,
                                   socket_timeout=self.client_timeout, max_size=CONNECTIONS_PER_LISTENER)
            self._listeners[device] = _Listener(indexes[device], app, sock, green)
            LOG.info("metadata: serving %s on %s for networks %s", self.address, device, ", ".join(networks))

    def listening(self) -> dict[str, tuple[str, ...]]:
        """Device -> networks of every listener."""
        return {device: listener.app.network_ids for device, listener in sorted(self._listeners.items())}

    def _close(self, device: str) -> None:
        listener = self._listeners.pop(device)
        listener.thread.kill()
        # Closed here, not by the server's own exit (which waits for open
        # connections): the port must be free at once for a new listener.
        listener.sock.close()

    def stop(self) -> None:
        """Close every listener (idempotent); connections being served finish on their own."""
        for device in list(self._listeners):
            self._close(device)
