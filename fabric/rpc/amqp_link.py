"""One AMQP connection driven from the eventlet hub, with reconnect and failover.

A :class:`Link` owns a kombu connection (py-amqp underneath), a reader green thread
and a write lock. The reader waits for the socket to become readable on the hub
(:class:`_ReadableWaiter`), then reads every complete frame under the lock, so it works in
processes that are not monkey-patched as well as in those that are, and no two green
threads ever interleave frames. On a plain TCP connection it reads the socket itself and
parses with the link's :class:`~fabric.rpc.amqp_frames.FrameReader` (deliveries and
confirms straight to the handlers ``on_connected`` registered there, every other frame
through py-amqp). Writers take the same lock; nothing here ever waits
for the broker while holding it, except declarations at (re)connect time. Frames sent
with :meth:`Link.send` are written at once when they are the first of this turn of the
hub; those that follow in the same turn are gathered until the hub's next turn (or
``WRITE_GATHER`` bytes) and written together by the link's writer green thread: on this
machine a loopback ``sendto`` costs more than the Python that builds a message (strace and
py-spy of the RPC benchmark's server: the reply's ``sendto`` was a third of its CPU), so 50
callers' calls or a batch's replies go out in two writes instead of one each, while a lone
call or reply is not held back a turn (see :meth:`Link.send`).

Promises: when the connection breaks (socket error, forced close, missed
heartbeats, channel error) the link calls ``on_lost(error)`` once, then reconnects
and calls ``on_connected(raw)`` under the lock before anything else may use the new
connection; ``generation`` changes with every connection, so a delivery tag from an
old one is never acked on a new one.

Failover: a link has one or more broker URLs (the nodes of a RabbitMQ cluster, see
:func:`broker_urls`) and takes them in the order of kombu's ``failover_strategy``
(``round-robin``: as listed; ``shuffle``: a random order per link, which spreads a
fleet's connections over the nodes). Every new attempt, including the first after a
lost connection, goes to the next URL: a node that dropped its clients is usually
going down. Backoff (0.05 s doubling to 5 s) starts once every URL has failed in a
row, or when connections keep breaking within ``SHORT_LIVED`` seconds of being set up
(RabbitMQ 3.10 closes a connection with INTERNAL_ERROR when a reply is published to a
caller whose node has died: workers with such replies pending reconnected in a loop).
"""

from __future__ import annotations

import logging
import socket
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

import amqp
import eventlet
import greenlet
import kombu
from eventlet.event import Event
from eventlet.hubs import get_hub
from eventlet.semaphore import Semaphore
from kombu.connection import failover_strategies
from kombu.utils.url import maybe_sanitize_url

from fabric.exception import Invalid
from fabric.rpc.amqp_frames import FrameReader
from fabric.rpc.metrics import RPC as METRICS

LOG = logging.getLogger(__name__)

MAX_BACKOFF = 5.0
#: Bytes the reader asks the socket for at once. py-amqp asks for exactly what the next
#: part of a frame needs (its 7-byte header, then its payload): two recv calls per frame,
#: six per message. Measured on a 1-caller call loop: ten recv calls per call on the
#: server, each a trip through eventlet's green socket.
READ_AHEAD = 65536
#: A connection lost sooner than this after it was set up does not reset the backoff.
SHORT_LIVED = 1.0
#: Bytes of frames :meth:`Link.send` gathers before it writes them without waiting for
#: the hub's next turn (0: every send writes at once).
WRITE_GATHER = 65536
#: kombu's names for the orders in which a link tries its broker URLs.
FAILOVER_STRATEGIES = tuple(failover_strategies)


#: Each link's reader green thread -> its link (see :func:`wake_soon`).
_READERS: dict[Any, Link] = {}


def wake_soon(switch: Callable[[], Any]) -> None:
    """Call ``switch`` (a parked green thread's ``switch``) soon. Called on a link's reader
    (a delivery handed to a server, a reply to a waiting caller), it runs when the reader
    next waits for the socket, the reader switching to it instead of to the hub; elsewhere
    on the hub's next turn.

    Measured with timestamps in the RPC benchmark's server (1 caller): from a delivery's
    arrival to its handler green thread running took 15 µs (median) through the hub's
    timers; the reader is about to give the hub its turn anyway and, waiting, is resumed
    by the hub when the socket is readable again, exactly as before.
    """
    link = _READERS.get(greenlet.getcurrent())
    if link is not None and link._hand_off is None:
        link._hand_off = switch
    else:
        get_hub().schedule_call_global(0, switch)


def broker_urls(transport_url: str) -> list[str]:
    """The broker URLs in an ``[rpc] transport_url``, one per node, each ``amqp://``.

    Accepted: one URL; kombu's failover list, URLs separated by ``;``
    (``amqp://u:p@h1:5672/v;amqp://u:p@h2:5673/v``); and oslo.messaging's host list,
    hosts separated by ``,`` in one URL (``amqp://u:p@h1:5672,h2:5673/v``), where a host
    without credentials uses those of the host before it and all share the vhost.
    ``pyamqp://`` means ``amqp://``. Raises :class:`~fabric.exception.Invalid` naming
    the part that is not an ``amqp://`` URL with a host.
    """
    urls: list[str] = []
    for part in (p.strip() for p in transport_url.split(";")):
        if not part:
            continue
        scheme, sep, rest = part.partition("://")
        if not sep or scheme.lower() not in ("amqp", "pyamqp"):
            raise Invalid(reason=f"transport_url part {maybe_sanitize_url(part)!r}: accepted are "
                                 "amqp://user:pass@host:port/vhost URLs, separated by ';' (or hosts by ',')")
        netloc, slash, path = rest.partition("/")
        credentials = ""
        for host in netloc.split(","):
            userinfo, at, hostport = host.rpartition("@")
            if at:
                credentials = userinfo + "@"
            if not hostport.strip():
                raise Invalid(reason=f"transport_url part {maybe_sanitize_url(part)!r}: a host is "
                                     "empty; accepted is host[:port] between the commas")
            urls.append(f"amqp://{credentials}{hostport.strip()}{slash}{path}")
    if not urls:
        raise Invalid(reason=f"transport_url {transport_url!r}: names no broker")
    return urls


def read_ahead(transport: amqp.transport._AbstractTransport) -> None:
    """Make py-amqp's plain TCP transport read up to ``READ_AHEAD`` bytes per recv; it
    keeps what it read beyond the frame it wanted in its own buffer for the next."""
    if isinstance(transport, amqp.transport.TCPTransport):
        recv = transport.sock.recv
        transport._quick_recv = lambda wanted: recv(max(wanted, READ_AHEAD))


def describe(url: str) -> str:
    """``host:port/vhost`` of a broker URL, without credentials (for logs and errors)."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.hostname}:{parts.port or 5672}{parts.path or '/'}"


class _ReadableWaiter:
    """Waits, on the hub, for a socket to become readable, or ``interval`` to pass.

    eventlet's ``trampoline`` registers the socket with the hub's epoll and removes it
    again on every wait, and schedules and cancels a timer for the timeout: two
    epoll_ctl calls and a timer per message read. This keeps the socket registered
    between waits and one timer running per ``interval``. Measured with a one-byte
    ping-pong over a socket pair to another process: 26 us of CPU per round trip with
    trampoline, 13 us with this. The reader is resumed only while it waits here; a
    readiness seen while it is elsewhere (waiting for the lock) removes the
    registration until its next wait, so the hub never spins on unread data.
    """

    def __init__(self, fileno: int, interval: float | None) -> None:
        self.hub = get_hub()
        self.fileno = fileno
        self.interval = interval
        self.reader = greenlet.getcurrent()
        self.waiting = False
        self.listener: Any = None
        self.timer: Any = None

    def _resume(self, *_: Any) -> None:
        if self.waiting:
            self.waiting = False
            self.reader.switch()
        elif self.listener is not None:  # not waiting: stop the hub reporting it until then
            self.hub.remove(self.listener)
            self.listener = None

    def _tick(self) -> None:
        self.timer = None
        if self.waiting:
            self.waiting = False
            self.reader.switch()

    def _woken(self) -> None:
        if self.waiting:
            self.waiting = False
            self.reader.switch()

    def wake(self) -> None:
        """End the current (or next) wait soon, as if the socket were readable."""
        self.hub.schedule_call_global(0, self._woken)

    def _closed(self, *_: Any) -> None:
        self.listener = None
        if self.waiting:
            self.waiting = False
            self.reader.switch()  # the next read finds the socket closed

    def wait(self, hand_off: Callable[[], Any] | None = None) -> None:
        """Return when the socket is readable, or after ``interval``. ``hand_off``: a
        green thread's ``switch`` to call instead of switching to the hub (that green
        thread gives the hub its turn when it waits; see :func:`wake_soon`)."""
        if self.listener is None:
            self.listener = self.hub.add(self.hub.READ, self.fileno, self._resume, self._closed, None)
        if self.timer is None and self.interval is not None:
            self.timer = self.hub.schedule_call_global(self.interval, self._tick)
        self.waiting = True
        try:
            if hand_off is not None:
                hand_off()  # returns when the hub resumes this reader, or at once if it did not switch
            if self.waiting:
                self.hub.switch()
        finally:
            self.waiting = False

    def close(self) -> None:
        if self.listener is not None:
            self.hub.remove(self.listener)
            self.listener = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class Link:
    """An AMQP connection with a reader on the hub; see the module docstring."""

    def __init__(self, urls: Sequence[str], heartbeat: int, name: str,
                 on_connected: Callable[[amqp.Connection], None],
                 on_lost: Callable[[Exception], None],
                 failover_strategy: str = "round-robin") -> None:
        if isinstance(urls, str):
            urls = [urls]
        if not urls:
            raise ValueError(f"{name}: no broker URL")
        if failover_strategy not in failover_strategies:
            raise ValueError(f"failover_strategy {failover_strategy!r}: accepted are "
                             f"{', '.join(FAILOVER_STRATEGIES)}")
        self.urls = list(urls)
        self._next_url = failover_strategies[failover_strategy](self.urls)
        #: The URL of the current connection (or of the last attempt).
        self.url = self.urls[0]
        self.heartbeat = heartbeat
        self.name = name
        self.on_connected = on_connected
        self.on_lost = on_lost
        self.lock = Semaphore(1)
        self.raw: amqp.Connection | None = None
        #: The current connection's inbound frames: ``on_connected`` registers the
        #: handlers of its consumers and confirm channels there (see amqp_frames).
        self.frames = FrameReader(lambda frame: None)
        self.generation = 0
        #: Work for the reader (:meth:`run_on_reader`), oldest first.
        self._tasks: list[Callable[[amqp.Connection], None]] = []
        self._readable: _ReadableWaiter | None = None
        self._kombu: kombu.Connection | None = None
        self._up = Event()
        self._closing = False
        #: Frames :meth:`send` gathered for ``_gathered_on`` and not yet written.
        self._gathered: list[bytes] = []
        self._gathered_size = 0
        self._gathered_on: amqp.Connection | None = None
        self._write_due = False
        #: Something was written by :meth:`send` in this turn of the hub (what follows
        #: is gathered until :meth:`_end_turn`).
        self._turn_busy = False
        self._writer_parked = False
        #: A parked green thread's ``switch`` the reader calls when it next waits (:func:`wake_soon`).
        self._hand_off: Callable[[], Any] | None = None
        #: The connection whose real socket :meth:`write` sends to directly, and its send.
        self._send_on: amqp.Connection | None = None
        self._send_now: Callable[[bytes, int], int] | None = None
        self._writer = eventlet.spawn(self._write_gathered)
        self._thread = eventlet.spawn(self._run)
        _READERS[self._thread] = self

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

    def run_on_reader(self, task: Callable[[amqp.Connection], None]) -> None:
        """Have the reader run ``task(raw)`` soon, under the lock, between two reads.

        For synchronous AMQP methods (opening a channel, declaring a queue, closing a
        channel) on a connection already in use: they read the socket until the broker
        answers, and only the reader may read it (a monkey-patched socket allows one
        reader at a time, and frames must not be split between two). Frames read
        meanwhile for other channels go to their handlers as usual (through py-amqp).
        A task is run on whatever connection is current when its turn comes, the next
        one if the link is down, so it must check what it finds (``generation``). An
        exception from it counts as a lost connection.
        """
        self._tasks.append(task)
        if self._readable is not None:
            self._readable.wake()

    # -- writing ------------------------------------------------------------
    def send(self, raw: amqp.Connection, data: bytes) -> None:
        """Write ``data`` (whole frames) to ``raw``: at once if it is the first of this
        turn of the hub, else together with what other green threads send before the
        hub's next turn, one socket write for them all (caller holds the lock). A write that fails breaks the connection (:meth:`broken`), as if the reader
        had seen it fail: what it carried is then re-sent or failed by ``on_lost``.

        Writers of anything else on ``raw`` (py-amqp's methods) call :meth:`write_gathered`
        first, so frames keep their order on every channel (publisher-confirm tags count
        publishes in the order the broker receives them).
        """
        if self._gathered_on is not raw:  # what was gathered for a lost connection is dropped
            self._gathered, self._gathered_size, self._gathered_on = [], 0, raw
        if not self._turn_busy and not self._gathered:
            # The first of this turn goes now: a lone call or reply waited a turn of the
            # hub for nothing (tools/bench/rpc.py, 1 caller, timestamps on both sides
            # under load 15: 14 us at the caller, 31 us at the server, median, of a
            # ~900 us round trip). What follows in this turn is gathered behind it.
            self._turn_busy = True
            get_hub().schedule_call_global(0, self._end_turn)
            try:
                self.write(raw, data)
            except Exception as exc:  # noqa: BLE001 - the reader sees the connection break
                self.broken(raw, exc)
            return
        self._gathered.append(data)
        self._gathered_size += len(data)
        if self._gathered_size >= WRITE_GATHER:
            self.write_gathered(raw)

    def write_gathered(self, raw: amqp.Connection) -> None:
        """Write now what :meth:`send` gathered for ``raw`` (caller holds the lock)."""
        gathered = self._gathered
        if not gathered or self._gathered_on is not raw:
            return
        self._gathered, self._gathered_size = [], 0
        try:
            self.write(raw, gathered[0] if len(gathered) == 1 else b"".join(gathered))
        except Exception as exc:  # noqa: BLE001 - the reader sees the connection break
            self.broken(raw, exc)

    def write(self, raw: amqp.Connection, data: bytes) -> None:
        """Write ``data`` to ``raw`` (caller holds the lock). On plain TCP it goes to the
        real socket under eventlet's green one, without waiting: py-amqp's ``write``,
        eventlet's ``sendall`` and its send loop were ~2 µs of Python per message around
        the system call. What the socket does not take at once is written through
        py-amqp (waiting on the hub for room). Raises what py-amqp's ``write`` raises."""
        if raw is self._send_on:
            try:
                sent = self._send_now(data, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                raw.transport.connected = False  # as py-amqp's write marks it
                raise
            if sent < len(data):
                raw.transport.write(data[sent:])
        else:
            raw.transport.write(data)
        raw.bytes_sent += 1

    def _end_turn(self) -> None:
        """On the hub, a turn after :meth:`send` wrote: the next send may write at once
        again, and what was gathered behind that write goes to the writer."""
        self._turn_busy = False
        if self._gathered and not self._write_due:
            self._write_due = True
            self._wake_writer()

    def _wake_writer(self) -> None:
        # On the hub, which must not write (a full socket would make it wait): the
        # writer does, resumed only where it parks; busy, it looks again before parking.
        if self._writer_parked:
            self._writer_parked = False
            self._writer.switch()

    def _write_gathered(self) -> None:
        """The link's writer: writes what :meth:`send` gathered behind a turn's first write.
        It lives as long as the link (a green thread per write cost more than the write)."""
        hub = get_hub()
        while True:
            while self._write_due:
                self._write_due = False
                with self.lock:
                    if self.raw is not None:
                        self.write_gathered(self.raw)
            self._writer_parked = True
            try:
                hub.switch()
            finally:
                self._writer_parked = False

    def in_reader(self) -> bool:
        """Whether the caller is the link's reader (where tasks run)."""
        return greenlet.getcurrent() is self._thread

    # -- the reader -----------------------------------------------------------
    def _run(self) -> None:
        delay = 0.05
        failures = 0
        while not self._closing:
            self.url = next(self._next_url)
            conn = kombu.Connection(self.url, heartbeat=self.heartbeat, connect_timeout=5,
                                    transport_options={"confirm_publish": False})
            try:
                # One attempt: kombu's connect() would sleep 2 s (time.sleep, blocking an
                # unpatched hub) and try the same broker again; the loop here fails over.
                conn.ensure_connection(max_retries=0, reraise_as_library_errors=False)
                raw = conn.connection
                read_ahead(raw.transport)
                self.frames = FrameReader(raw.on_inbound_frame)
                if isinstance(raw.transport, amqp.transport.TCPTransport):
                    sock = raw.transport.sock
                    self._send_on, self._send_now = raw, getattr(sock, "fd", sock).send
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
                failures += 1
                if failures % len(self.urls):
                    LOG.warning("%s: cannot set up a connection to %s (%s); trying the next broker",
                                self.name, describe(self.url), exc)
                    continue
                LOG.warning("%s: cannot set up a connection to %s (%s); retrying in %.2fs",
                            self.name, describe(self.url), exc, delay)
                eventlet.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            if self.generation:
                METRICS.reconnected()
            if self.generation or len(self.urls) > 1:
                LOG.info("%s: connected to %s", self.name, describe(self.url))
            failures = 0
            connected_at = time.monotonic()
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
            LOG.warning("%s: lost the broker connection to %s (%s: %s); reconnecting",
                        self.name, describe(self.url), type(error).__name__, error)
            try:
                self.on_lost(error)
            except Exception:  # noqa: BLE001
                LOG.exception("%s: connection-lost handler failed", self.name)
            if time.monotonic() - connected_at >= SHORT_LIVED:
                delay = 0.05
            else:
                eventlet.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)

    def _pump(self, raw: amqp.Connection) -> None:
        transport = raw.transport
        interval = raw.heartbeat / 4 if raw.heartbeat else None
        next_tick = time.monotonic() + (interval or 0)
        readable = self._readable = _ReadableWaiter(transport.sock.fileno(), interval)
        # Plain TCP: read the socket here and parse with the link's FrameReader. The
        # real socket under eventlet's green one (``fd``) with MSG_DONTWAIT never waits.
        recv = None
        if isinstance(transport, amqp.transport.TCPTransport):
            recv = getattr(transport.sock, "fd", transport.sock).recv
        try:
            while not self._closing:
                # Frames first, then wait: what the set-up read ahead may already hold
                # complete frames that no new byte on the socket would announce.
                with self.lock:
                    if self.raw is not raw:
                        return
                    if recv is not None:
                        self._read(raw, recv)
                    else:
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
                    if self._tasks:
                        # py-amqp's own reads wait on the hub for this socket meanwhile,
                        # and may leave whole frames in its buffer: read again first.
                        readable.close()
                        self.write_gathered(raw)
                        while self._tasks:
                            self._tasks.pop(0)(raw)
                        continue
                hand_off, self._hand_off = self._hand_off, None
                readable.wait(hand_off)
        finally:
            self._readable = None
            readable.close()
            self._release_hand_off()

    def _release_hand_off(self) -> None:
        """A hand-off the reader will not make (it stops or reconnects) goes to the hub."""
        hand_off, self._hand_off = self._hand_off, None
        if hand_off is not None:
            get_hub().schedule_call_global(0, hand_off)

    def _read(self, raw: amqp.Connection, recv: Callable[[int, int], bytes]) -> None:
        """Handle every frame the socket holds now (caller holds the lock). Bytes of an
        incomplete frame stay in py-amqp's read buffer, where closing reads them from."""
        transport = raw.transport
        frames = self.frames
        pending, transport._read_buffer = transport._read_buffer, b""
        if pending:
            pending = frames.feed(pending)
        while True:
            try:
                data = recv(READ_AHEAD, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            if not data:
                raise ConnectionError("the broker closed the connection")
            raw.bytes_recv += 1  # any byte received counts for the heartbeat check
            pending = frames.feed(pending + data if pending else data)
            if len(data) < READ_AHEAD:
                break  # drained: a second recv would only say EAGAIN
        transport._read_buffer = pending

    def close(self) -> None:
        """Close the connection for good (no reconnect)."""
        self._closing = True
        # Stop the reader first: a monkey-patched socket allows one reader at a time,
        # and closing reads the broker's Close-Ok.
        self._thread.kill()
        _READERS.pop(self._thread, None)
        self._release_hand_off()
        with self.lock:
            raw, self.raw = self.raw, None
            self._writer.kill()
            if raw is not None:
                self.write_gathered(raw)
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
