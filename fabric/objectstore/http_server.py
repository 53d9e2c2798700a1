"""The objectstore's HTTP/1.1 server: httptools' C parser on eventlet's green sockets, calling
the S3 application (:mod:`fabric.objectstore.app`) as WSGI.

Why not ``eventlet.wsgi``: its protocol is the standard library's ``BaseHTTPRequestHandler``,
a request line and header lines read one ``readline`` each through a buffered file over the
socket, an environ of every CGI variable, a response's header lines formatted one by one.
Profiled under the objectstore's bench (cProfile with thread CPU time), this server costs a
tenth less of a small PUT's or GET's CPU than that layer did. Here one ``recv`` feeds the parser (httptools, the
parser under uvicorn: llhttp, node.js's, in C), the headers reach the application as one
dictionary, and an answer's head and (small) body leave in one ``send``.

What a client can count on:

- HTTP/1.0 and 1.1, persistent connections, pipelined requests answered in order;
- request bodies framed by Content-Length or the chunked transfer coding, read as the
  application asks for them (streamed: an upload of any size keeps the process small), and
  ``Expect: 100-continue`` answered when the application first reads the body;
- a request the parser refuses (a bad request line, a header line that is not ``name:
  value``) is answered 400, a header section past MAX_HEAD_BYTES 431, and the connection closed;
- an answer without Content-Length is sent chunked (HTTP/1.1) or until the connection closes;
- a body the application left unread is read and dropped (up to DRAIN_MAX bytes; past that,
  or when the client still waits for ``100 Continue``, the connection is closed after the answer);
- a connection idle for ``socket_timeout`` seconds is closed.

The environ has the CGI variables S3 needs (no ``HTTP_*`` keys): ``RAW_PATH_INFO`` (the path
as sent, which SigV4 signs), and ``fabric.headers``, every header by its lower-case name
(repeated ones joined with commas).
"""

from __future__ import annotations

import collections
import logging
import socket
import sys
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote_to_bytes

import eventlet
import httptools

LOG = logging.getLogger(__name__)

#: Bytes asked of the socket at a time.
RECV_SIZE = 256 * 1024
#: Most bytes of one request's line and header section (the standard library allows 100 lines
#: of up to 64 KiB; S3 requests are a few KiB, a presigned URL's line the longest).
MAX_HEAD_BYTES = 256 * 1024
#: Most bytes of a body the application did not read that are read and dropped to keep the
#: connection; past that it is closed instead.
DRAIN_MAX = 1024 * 1024
#: Answers that never carry a body (RFC 9110).
_BODILESS = (b"204", b"304")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_TOO_LARGE = b"431 Request Header Fields Too Large"
#: Seconds a connection closed with the client's bytes still arriving keeps reading (and
#: dropping) them, so the kernel does not answer them with a reset that may destroy the answer.
LINGER_SECONDS = 2.0


class _Request:
    """One request as the parser reads it: head first, then body pieces as they arrive."""

    __slots__ = ("url", "fields", "method", "version", "keep_alive", "pieces", "buffered", "complete",
                 "expects_continue", "continued", "oversized")

    def __init__(self) -> None:
        self.url = b""
        self.fields: list[tuple[bytes, bytes]] = []
        self.method = ""
        self.version = "1.1"
        self.keep_alive = True
        self.pieces: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.complete = False
        self.expects_continue = False
        self.continued = False
        self.oversized = False  # its header section passed MAX_HEAD_BYTES


class _Body:
    """``wsgi.input``: the request's body, read from the connection as asked."""

    def __init__(self, connection: _Connection, request: _Request) -> None:
        self._connection = connection
        self._request = request
        self.consumed = 0

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all when negative), fewer only at the body's end (or when the
        connection broke: the caller finds the body short of its length)."""
        request = self._request
        if request.expects_continue and not request.continued:
            request.continued = True
            if not request.complete and not request.buffered:
                self._connection.send(_CONTINUE)
        while (size < 0 or request.buffered < size) and not request.complete:
            if not self._connection.receive():
                break
        pieces = request.pieces
        if size < 0 or request.buffered <= size:
            data = b"".join(pieces)
            pieces.clear()
        else:
            taken, parts = 0, []
            while taken < size:
                piece = pieces.popleft()
                if taken + len(piece) > size:
                    pieces.appendleft(piece[size - taken:])
                    piece = piece[:size - taken]
                parts.append(piece)
                taken += len(piece)
            data = b"".join(parts)
        request.buffered -= len(data)
        self.consumed += len(data)
        return data


class _Connection:
    """One client connection: parse, call the application, answer, until either side closes."""

    def __init__(self, sock: socket.socket, address: Any, app: Callable, server: tuple[str, str],
                 timeout: float) -> None:
        self.sock = sock
        self.app = app
        self.base = {"SCRIPT_NAME": "", "SERVER_NAME": server[0], "SERVER_PORT": server[1],
                     "REMOTE_ADDR": address[0] if isinstance(address, tuple) else "",
                     "REMOTE_PORT": str(address[1]) if isinstance(address, tuple) else "",
                     "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
                     "wsgi.multithread": True, "wsgi.multiprocess": True, "wsgi.run_once": False}
        sock.settimeout(timeout)
        self.parser = httptools.HttpRequestParser(self)
        self.ready: collections.deque[_Request] = collections.deque()  # heads read, not yet answered
        self.parsing: _Request | None = None
        self.in_head = False  # between a request's first byte and the end of its header section
        self.head_bytes = 0
        self.refused: bytes | None = None  # the status line of a request the parser refused
        self.at_end = False  # the client sent all it will (or the connection broke)

    # --- the parser's callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.parsing = _Request()
        self.in_head = True

    def on_url(self, url: bytes) -> None:
        self.parsing.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.parsing.fields.append((name, value))

    def on_headers_complete(self) -> None:
        request, parser = self.parsing, self.parser
        request.method = parser.get_method().decode("latin-1")
        request.version = parser.get_http_version()
        request.keep_alive = parser.should_keep_alive()
        request.oversized = self.head_bytes > MAX_HEAD_BYTES
        self.in_head = False
        self.ready.append(request)

    def on_body(self, body: bytes) -> None:
        self.parsing.pieces.append(body)
        self.parsing.buffered += len(body)

    def on_message_complete(self) -> None:
        self.parsing.complete = True
        self.head_bytes = 0

    # --- the socket ------------------------------------------------------------------------------

    def receive(self) -> bool:
        """Feed the parser what the socket has; False when nothing more will come (the client
        closed, went quiet past the timeout, or sent what the parser refuses)."""
        if self.at_end or self.refused is not None:
            return False
        try:
            data = self.sock.recv(RECV_SIZE)
        except OSError:  # reset, timed out
            data = b""
        if not data:
            self.at_end = True
            return False
        if self.in_head or self.parsing is None or self.parsing.complete:
            self.head_bytes += len(data)  # the whole piece: a bound on the head's size, not a measure
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.refused = b"400 Bad Request"  # no protocol switch here
            return False
        except httptools.HttpParserError:
            self.refused = b"400 Bad Request"
            return False
        if self.in_head and self.head_bytes > MAX_HEAD_BYTES:
            self.refused = _TOO_LARGE
            return False
        return True

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    # --- requests --------------------------------------------------------------------------------

    def serve(self) -> None:
        try:
            while True:
                while not self.ready:
                    if not self.receive():
                        if self.refused is not None:
                            self._refuse(self.refused)
                        return
                request = self.ready.popleft()
                if request.oversized:
                    self._refuse(_TOO_LARGE)
                    return
                if not self.answer(request):
                    self._linger()
                    return
        except OSError:
            pass  # the client went away mid-answer
        except Exception:
            LOG.exception("Objectstore connection from %s failed", self.base["REMOTE_ADDR"])
        finally:
            self.sock.close()

    def _refuse(self, status: bytes) -> None:
        """Answer ``status`` with no body and close: the request could not be read."""
        self.refused = status
        self.send(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        self._linger()

    def _linger(self) -> None:
        """Stop sending, then drop what the client still sends until it closes (at most
        DRAIN_MAX bytes, LINGER_SECONDS)."""
        if self.at_end:
            return  # it sent all it will
        self.sock.shutdown(socket.SHUT_WR)
        self.sock.settimeout(LINGER_SECONDS)
        dropped = 0
        try:
            while dropped <= DRAIN_MAX and (data := self.sock.recv(RECV_SIZE)):
                dropped += len(data)
        except OSError:
            pass

    def environ(self, request: _Request, body: _Body) -> dict[str, Any]:
        headers: dict[str, str] = {}
        for name, value in request.fields:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1").strip(" \t")
            headers[key] = f"{headers[key]},{text}" if key in headers else text
        path, _, query = request.url.partition(b"?")
        raw_path = path.decode("latin-1")
        environ = dict(self.base)
        environ.update({"REQUEST_METHOD": request.method, "RAW_PATH_INFO": raw_path,
                        "PATH_INFO": unquote_to_bytes(raw_path).decode("latin-1") if "%" in raw_path else raw_path,
                        "QUERY_STRING": query.decode("latin-1"), "SERVER_PROTOCOL": f"HTTP/{request.version}",
                        "CONTENT_TYPE": headers.get("content-type", ""),
                        "CONTENT_LENGTH": headers.get("content-length", ""),
                        "wsgi.input": body, "fabric.headers": headers})
        return environ

    def answer(self, request: _Request) -> bool:
        """Call the application for ``request`` and send its answer; whether the connection goes on."""
        body = _Body(self, request)
        request.expects_continue = request.version == "1.1" and any(
            name.lower() == b"expect" and value.strip().lower() == b"100-continue" for name, value in request.fields)
        started: list = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info=None) -> Callable[[bytes], None]:
            if exc_info is not None and started and started[0] is None:
                raise exc_info[1].with_traceback(exc_info[2])  # the head is out: too late to change it
            started[:] = [status, headers]
            return pending.append

        pending: list[bytes] = []  # what the application gave write() (PEP 3333's legacy path)
        result: Iterable[bytes] = self.app(self.environ(request, body), start_response)
        try:
            keep, framing = self._head(request, started)
            chunked = framing == "chunked"
            bodiless = request.method == "HEAD" or started[1]
            first = True
            for data in _chain(pending, result):
                if not data or bodiless:
                    continue
                if chunked:
                    data = b"%x\r\n%s\r\n" % (len(data), data)
                if first:
                    self.send(started[0] + data)
                    started[0], first = None, False
                else:
                    self.send(data)
            tail = b"0\r\n\r\n" if chunked else b""
            if first:
                self.send(started[0] + tail)
                started[0] = None
            elif tail:
                self.send(tail)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return keep and framing != "close" and self._finish_body(request)

    def _head(self, request: _Request, started: list) -> tuple[bool, str]:
        """Turn ``started`` (status, headers) into (the encoded head, whether the status allows no
        body); returns (keep the connection, framing: "length" (or none needed), "chunked" or "close")."""
        status, headers = started
        status_bytes = status.encode("latin-1")
        lines = [b"HTTP/1.1 ", status_bytes, b"\r\n"]
        bodiless = status_bytes[:3] in _BODILESS or status_bytes[:1] == b"1"
        length = False
        for name, value in headers:
            if not length and name.lower() == "content-length":
                length = True
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        # A client still waiting for 100 Continue will not send the body the application left unread.
        keep = request.keep_alive and not self.at_end and not (
            request.expects_continue and not request.continued and not request.complete)
        if length or request.method == "HEAD" or bodiless:
            framing = "length"
        elif request.version == "1.1":
            framing = "chunked"
            lines.append(b"Transfer-Encoding: chunked\r\n")
        else:
            framing = "close"
        if not keep or framing == "close":
            lines.append(b"Connection: close\r\n")
        elif request.version == "1.0":
            lines.append(b"Connection: keep-alive\r\n")
        lines.append(b"\r\n")
        started[:] = [b"".join(lines), bodiless]
        return keep, framing

    def _finish_body(self, request: _Request) -> bool:
        """Read and drop what is left of the request's body; whether the connection can go on."""
        if request.expects_continue and not request.continued and not request.complete:
            return False  # the client waits for 100 Continue before sending it: it never will
        dropped = 0
        while not request.complete:
            dropped += request.buffered
            request.pieces.clear()
            request.buffered = 0
            if dropped > DRAIN_MAX or not self.receive():
                return False
        return True


def _chain(pending: list[bytes], result: Iterable[bytes]) -> Iterable[bytes]:
    yield from pending
    yield from result


def serve(sock: socket.socket, app: Callable, *, socket_timeout: float = 300, max_connections: int = 1000) -> None:
    """Answer connections on the listening green ``sock`` with ``app`` until the socket closes
    (or this green thread is killed), each on a green thread of its own."""
    host, port = sock.getsockname()[:2]
    server = (str(host), str(port))
    pool = eventlet.GreenPool(max_connections)
    while True:
        try:
            client, address = sock.accept()
        except OSError as exc:
            if sock.fileno() == -1:
                return  # closed: stopped
            LOG.warning("Objectstore could not accept a connection: %s", exc)
            eventlet.sleep(0.1)
            continue
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pool.spawn_n(_Connection(client, address, app, server, socket_timeout).serve)
