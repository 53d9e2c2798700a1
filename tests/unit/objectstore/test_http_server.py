"""The objectstore's HTTP server: requests framed as HTTP/1.1 says (lengths, chunks, pipelining,
100-continue), bad requests refused with 4xx, and a connection kept only while it is in step."""

from __future__ import annotations

import json
import socket
import threading

import eventlet
import pytest

from fabric.objectstore import http_server


def echo(environ, start_response):
    """Answers what it was asked: method, paths, query, headers and body (when ``?read``), as JSON."""
    body = environ["wsgi.input"].read() if "read" in environ["QUERY_STRING"] else b""
    if "unframed" in environ["QUERY_STRING"]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"no ", b"length"])
    answer = json.dumps({"method": environ["REQUEST_METHOD"], "raw": environ["RAW_PATH_INFO"],
                         "path": environ["PATH_INFO"], "query": environ["QUERY_STRING"],
                         "headers": environ["fabric.headers"], "body": body.decode("latin-1")}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))])
    return [answer]


@pytest.fixture
def address():
    """A server of ``echo`` on a loopback port, its hub in a native thread of its own."""
    listening = eventlet.listen(("127.0.0.1", 0))
    thread = threading.Thread(target=http_server.serve, args=(listening, echo), kwargs={"socket_timeout": 30},
                              daemon=True)
    thread.start()
    yield listening.getsockname()
    listening.close()  # the server notices at its next accept; the daemon thread goes with the process


class Client:
    """A raw HTTP connection: send bytes, read one answer (status, headers, body) at a time."""

    def __init__(self, address) -> None:
        self.sock = socket.create_connection(address, timeout=10)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def answer(self) -> tuple[int, dict[str, str], bytes]:
        status = self.file.readline()
        assert status.startswith(b"HTTP/1.1 "), status
        headers = {}
        while (line := self.file.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.lower()] = value.strip()
        if "content-length" in headers:
            body = self.file.read(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while (size := int(self.file.readline(), 16)) > 0:
                body += self.file.read(size)
                self.file.readline()
            self.file.readline()
        else:
            body = self.file.read()
        return int(status.split()[1]), headers, body

    def closed(self) -> bool:
        return self.file.read(1) == b""

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def client(address):
    made = Client(address)
    yield made
    made.close()


def test_pipelined_requests_are_answered_in_order_on_one_connection(client):
    client.send(b"PUT /b/k%20x?read&a=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nX-Amz-Meta-A:  v  \r\n"
                b"x-amz-meta-a: w\r\n\r\nhello"
                b"GET /b/second HTTP/1.1\r\nHost: h\r\n\r\n")
    status, _, body = client.answer()
    first = json.loads(body)
    assert status == 200 and first["method"] == "PUT" and first["body"] == "hello"
    assert (first["raw"], first["path"], first["query"]) == ("/b/k%20x", "/b/k x", "read&a=1")
    assert first["headers"]["x-amz-meta-a"] == "v,w" and first["headers"]["content-length"] == "5"
    status, headers, body = client.answer()
    assert status == 200 and json.loads(body)["raw"] == "/b/second" and "connection" not in headers


def test_a_chunked_request_body_arrives_decoded(client):
    client.send(b"PUT /b/k?read HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
    assert json.loads(client.answer()[2])["body"] == "abcdefg"


def test_100_continue_is_sent_when_the_body_is_first_read(client):
    client.send(b"PUT /b/k?read HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    assert client.file.readline() == b"HTTP/1.1 100 Continue\r\n" and client.file.readline() == b"\r\n"
    client.send(b"body")
    assert json.loads(client.answer()[2])["body"] == "body"


def test_an_unread_body_is_dropped_and_the_connection_goes_on(client):
    client.send(b"PUT /b/k HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")
    assert json.loads(client.answer()[2])["body"] == ""
    client.send(b"GET /b/next HTTP/1.1\r\nHost: h\r\n\r\n")
    assert json.loads(client.answer()[2])["raw"] == "/b/next"


def test_a_client_still_waiting_for_100_continue_gets_the_answer_and_a_closed_connection(client):
    client.send(b"PUT /b/k HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    status, headers, _ = client.answer()
    assert status == 200 and headers["connection"] == "close" and client.closed()


def test_an_answer_without_length_is_chunked_for_http_1_1_and_closes_for_1_0(address):
    modern, old = Client(address), Client(address)
    try:
        modern.send(b"GET /b/k?unframed HTTP/1.1\r\nHost: h\r\n\r\n")
        status, headers, body = modern.answer()
        assert headers["transfer-encoding"] == "chunked" and body == b"no length"
        old.send(b"GET /b/k?unframed HTTP/1.0\r\n\r\n")
        status, headers, body = old.answer()
        assert headers["connection"] == "close" and body == b"no length"
    finally:
        modern.close()
        old.close()


def test_a_head_answer_carries_the_length_but_no_body(client):
    client.send(b"HEAD /b/k HTTP/1.1\r\nHost: h\r\n\r\nGET /b/after HTTP/1.1\r\nHost: h\r\n\r\n")
    status = client.file.readline()
    headers = {}
    while (line := client.file.readline()) != b"\r\n":
        name, _, value = line.decode().partition(":")
        headers[name.lower()] = value.strip()
    assert status.split()[1] == b"200" and int(headers["content-length"]) > 0
    assert json.loads(client.answer()[2])["raw"] == "/b/after"  # the next answer follows the head at once


@pytest.mark.parametrize("request_bytes, status", [
    (b"GET / HTTP/1.1\r\nHost: x\r\nthis is not a header\r\n\r\n", 400),
    (b"NOT A REQUEST LINE\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (n, b"v" * 1000) for n in range(300)) + b"\r\n", 431),
], ids=["no header field", "bad request line", "header section too large"])
def test_what_the_parser_refuses_is_answered_4xx_and_the_connection_closed(address, client, request_bytes, status):
    client.send(request_bytes)
    assert client.answer()[0] == status and client.closed()
    other = Client(address)  # the server still answers
    try:
        other.send(b"GET /b/k HTTP/1.1\r\nHost: h\r\n\r\n")
        assert other.answer()[0] == 200
    finally:
        other.close()


def test_a_client_that_closes_mid_body_leaves_the_server_answering(address, client):
    client.send(b"PUT /b/k?read HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nonly part")
    client.sock.shutdown(socket.SHUT_WR)
    status, _, body = client.answer()  # the application saw a short body; the answer still goes out
    assert status == 200 and json.loads(body)["body"] == "only part"
    other = Client(address)
    try:
        other.send(b"GET /b/k HTTP/1.1\r\nHost: h\r\n\r\n")
        assert other.answer()[0] == 200
    finally:
        other.close()
