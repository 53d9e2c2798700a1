"""One AMQP connection driven from the eventlet hub, with reconnect.

A :class:`Link` owns a kombu connection (py-amqp underneath), a reader green thread
and a write lock. The reader waits for the socket to become readable on the hub
(``trampoline``), then reads every complete frame under the lock, so it works in
processes that are not monkey-patched as well as in those that are, and no two green
threads ever interleave frames. Writers take the same lock; nothing here ever waits
for the broker while holding it, except declarations at (re)connect time.

Promises: when the connection breaks (socket error, forced close, missed
heartbeats, channel error) the link calls ``on_lost(error)`` once, then reconnects
with exponential backoff (0.05 s doubling to 5 s) and calls ``on_connected(raw)``
under the lock before anything else may use the new connection; ``generation``
changes with every connection, so a delivery tag from an old one is never acked on
a new one.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable

import amqp
import eventlet
import kombu
from eventlet.event import Event
from eventlet.hubs import trampoline
from eventlet.semaphore import Semaphore

LOG = logging.getLogger(__name__)

MAX_BACKOFF = 5.0


class Link:
    """An AMQP connection with a reader on the hub; see the module docstring."""

    def __init__(self, url: str, heartbeat: int, name: str,
                 on_connected: Callable[[amqp.Connection], None],
                 on_lost: Callable[[Exception], None]) -> None:
        self.url = url
        self.heartbeat = heartbeat
        self.name = name
        self.on_connected = on_connected
        self.on_lost = on_lost
        self.lock = Semaphore(1)
        self.raw: amqp.Connection | None = None
        self.generation = 0
        self._kombu: kombu.Connection | None = None
        self._up = Event()
        self._closing = False
        self._thread = eventlet.spawn(self._run)

    # -- state --------------------------------------------------------------
    def wait_up(self, timeout: float | None) -> bool:
        """Block until connected (True) or ``timeout`` passed (False)."""
        if self.raw is not None:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.raw is None and not self._closing:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self._up.wait(remaining)
        return self.raw is not None

    def broken(self, raw: amqp.Connection, error: BaseException) -> None:
        """A writer saw ``raw`` fail: make the reader notice at once."""
        if self.raw is raw:
            LOG.debug("%s: write failed: %s", self.name, error)
            try:
                raw.transport.sock.shutdown(socket.SHUT_RDWR)
            except Exception:  # noqa: BLE001 - already gone is fine
                pass

    # -- the reader -----------------------------------------------------------
    def _run(self) -> None:
        delay = 0.05
        while not self._closing:
            conn = kombu.Connection(self.url, heartbeat=self.heartbeat, connect_timeout=5,
                                    transport_options={"confirm_publish": False})
            try:
                conn.connect()
                raw = conn.connection
                with self.lock:
                    self.on_connected(raw)
                    self._kombu, self.raw = conn, raw
            except Exception as exc:  # noqa: BLE001 - any failure means: try again later
                try:
                    conn.collect()  # a half-set-up connection must not linger on the broker
                except Exception:  # noqa: BLE001
                    pass
                if self._closing:
                    return
                LOG.warning("%s: cannot set up the broker connection (%s); retrying in %.2fs",
                            self.name, exc, delay)
                eventlet.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            delay = 0.05
            up, self._up = self._up, Event()
            up.send(True)
            error: Exception = ConnectionError("connection closed")
            try:
                self._pump(raw)
            except Exception as exc:  # noqa: BLE001 - every failure is a lost connection
                error = exc
            with self.lock:
                self.raw = None
                self.generation += 1
            try:
                conn.collect()
            except Exception:  # noqa: BLE001
                pass
            if self._closing:
                return
            LOG.warning("%s: lost the broker connection (%s: %s); reconnecting",
                        self.name, type(error).__name__, error)
            try:
                self.on_lost(error)
            except Exception:  # noqa: BLE001
                LOG.exception("%s: connection-lost handler failed", self.name)

    def _pump(self, raw: amqp.Connection) -> None:
        transport = raw.transport
        sock = transport.sock
        interval = raw.heartbeat / 4 if raw.heartbeat else None
        next_tick = time.monotonic() + (interval or 0)
        while not self._closing:
            try:
                trampoline(sock, read=True, timeout=interval)
            except eventlet.timeout.Timeout:
                pass
            with self.lock:
                if self.raw is not raw:
                    return
                with transport.having_timeout(0):
                    while True:
                        try:
                            frame = transport.read_frame()
                        except TimeoutError:
                            break
                        raw.on_inbound_frame(frame)
                if interval is not None and time.monotonic() >= next_tick:
                    raw.heartbeat_tick(rate=4)
                    next_tick = time.monotonic() + interval

    def close(self) -> None:
        """Close the connection for good (no reconnect)."""
        self._closing = True
        # Stop the reader first: a monkey-patched socket allows one reader at a time,
        # and closing reads the broker's Close-Ok.
        self._thread.kill()
        with self.lock:
            raw, self.raw = self.raw, None
            if raw is not None:
                try:
                    raw.close()
                except Exception:  # noqa: BLE001 - closing a broken connection
                    pass
        if not self._up.ready():
            self._up.send(False)
        if self._kombu is not None:
            try:
                self._kombu.collect()
            except Exception:  # noqa: BLE001
                pass
