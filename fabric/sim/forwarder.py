"""A loopback forwarder between a simulated host's namespace and the root namespace.

``python -m fabric.sim.forwarder NAMESPACE PORT [PORT ...]`` listens on
``127.0.0.1:PORT`` *inside* NAMESPACE and relays each connection to
``127.0.0.1:PORT`` in the namespace the process runs in (the root one). The
listening sockets are made by a thread that has joined NAMESPACE with
setns(2) and then ends: a socket stays in the namespace it was created in, so
accepted connections live there while the connections out are made from the
process's own namespace. So host processes reach RabbitMQ (or the API) at the
same loopback address as everyone else, and no address is added anywhere.

``python -m fabric.sim.forwarder --into NAMESPACE PORT [PORT ...]`` is the other
way round: it listens on ``127.0.0.1:PORT`` in its own (root) namespace and
connects to ``127.0.0.1:PORT`` inside NAMESPACE (``tools/run`` reaches the API
of the fabric-all that runs in its host's namespace so).

Prints ``ready`` on stdout once every port listens; exits on SIGTERM or SIGINT.
Native threads, two per relayed connection: a host has a handful of
long-lived AMQP connections, so simplicity wins over a selector loop.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from fabric.sim import netns

BUFFER = 65536
LOOPBACK = "127.0.0.1"
T = TypeVar("T")


def _in_namespace(namespace: str | None, make: Callable[[], T]) -> T:
    """``make()`` run by a thread that has entered ``namespace`` (None: this one), so the sockets
    it creates belong there; a thread of its own because setns changes only the calling thread."""
    if namespace is None:
        return make()
    made: dict[str, Any] = {}

    def run() -> None:
        try:
            netns.enter(namespace)
            made["value"] = make()
        except (OSError, netns.SimulationError) as exc:
            made["error"] = exc

    thread = threading.Thread(target=run, name=f"in-{namespace}")
    thread.start()
    thread.join()
    if "error" in made:
        raise made["error"]
    return made["value"]


def _listeners(ports: list[int]) -> list[socket.socket]:
    sockets = []
    for port in ports:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOOPBACK, port))
        sock.listen(64)
        sockets.append(sock)
    return sockets


def listen_in(namespace: str | None, ports: list[int]) -> list[socket.socket]:
    """Listening sockets on 127.0.0.1:PORT inside ``namespace`` (None: this process's own);
    SimulationError if one cannot bind."""
    try:
        return _in_namespace(namespace, lambda: _listeners(ports))
    except (OSError, netns.SimulationError) as exc:
        where = namespace or "the root namespace"
        raise netns.SimulationError(reason=f"cannot listen on {LOOPBACK}:{ports} in {where}: {exc}") from None


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy bytes until end of stream, then pass the end on (half-close)."""
    try:
        while data := source.recv(BUFFER):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock, how in ((sink, socket.SHUT_WR), (source, socket.SHUT_RD)):
            try:
                sock.shutdown(how)
            except OSError:
                pass


def _relay(inside: socket.socket, port: int, target_namespace: str | None) -> None:
    try:
        outside = _in_namespace(target_namespace, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        outside.settimeout(10)
        outside.connect((LOOPBACK, port))
    except (OSError, netns.SimulationError):
        inside.close()  # the service is down: the client sees a reset and retries
        return
    outside.settimeout(None)
    for sock in (inside, outside):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    back = threading.Thread(target=_pump, args=(outside, inside), daemon=True)
    back.start()
    _pump(inside, outside)
    back.join()
    inside.close()
    outside.close()


def _accept_forever(listener: socket.socket, target_namespace: str | None) -> None:
    port = listener.getsockname()[1]
    while True:
        try:
            inside, _ = listener.accept()
        except OSError:
            return  # closed at shutdown
        threading.Thread(target=_relay, args=(inside, port, target_namespace), daemon=True).start()


def serve(namespace: str, ports: list[int], stop: threading.Event, *, into: bool = False) -> None:
    """Forward ``ports`` from ``namespace`` to the root one (or, ``into``, from the root
    namespace into ``namespace``) until ``stop`` is set."""
    listeners = listen_in(None if into else namespace, ports)
    for listener in listeners:
        threading.Thread(target=_accept_forever, args=(listener, namespace if into else None),
                         daemon=True).start()
    print("ready", flush=True)
    stop.wait()
    for listener in listeners:
        listener.close()


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    into = bool(args) and args[0] == "--into"
    if into:
        args.pop(0)
    if len(args) < 2 or not all(a.isdigit() for a in args[1:]):
        print("usage: python -m fabric.sim.forwarder [--into] NAMESPACE PORT [PORT ...]", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        serve(args[0], [int(p) for p in args[1:]], stop, into=into)
    except netns.SimulationError as exc:
        print(f"forwarder: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
