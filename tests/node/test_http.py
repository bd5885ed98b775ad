"""The node's HTTP/1.1 request reading (`Handler.parse_request`), on a real server over real sockets.

The node is a stand-in that answers only the routes these requests reach
(/health/live, and 404 for unknown routes): what is tested here is the
request line, the headers and keep-alive, not a model.
"""

import re
import socket
import threading
import time

import pytest

from conclave_node.serve import Handler, NodeHTTPServer, headers_read


class _Metrics:
    def observe(self, **labels):
        pass


class _Node:
    secret = None
    started = time.time()
    metrics = _Metrics()


@pytest.fixture
def server():
    handler = type("TestHandler", (Handler,), {"node": _Node()})
    httpd = NodeHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def exchange(sock: socket.socket, data: bytes, *, responses: int = 1) -> bytes:
    """Send `data` on `sock` and read until `responses` whole answers (or the end of the connection) came back."""
    sock.sendall(data)
    received = b""
    while received.count(b"HTTP/1.1 ") - received.count(b"HTTP/1.1 100 ") < responses or not _complete(received):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def connect(server) -> socket.socket:
    return socket.create_connection(server.server_address[:2], timeout=30)


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server ends the connection (a timeout fails the test: no wait depends on the host's speed)."""
    return sock.recv(1) == b""


def still_open(sock: socket.socket) -> bool:
    """The connection answers another request."""
    return statuses(exchange(sock, b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")) == [200]


def _complete(received: bytes) -> bool:
    """Whether the last response in `received` has all of its body."""
    start = received.rfind(b"HTTP/1.1 ")
    head, sep, body = received[start:].partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return True


def statuses(received: bytes) -> list[int]:
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", received)]


def test_header_names_are_case_insensitive_and_the_connection_stays_open_for_the_next_request(server):
    with connect(server) as sock:
        received = exchange(
            sock,
            b"POST /nowhere HTTP/1.1\r\nhost: x\r\ncontent-LENGTH: 5\r\n\r\nhello"
            b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n",
            responses=2,
        )
        assert statuses(received) == [404, 200]  # the body was read by its length, so the second request parsed
        assert b'"status":"alive"' in received
        assert still_open(sock)


def test_http_1_0_closes_unless_it_asks_for_keep_alive(server):
    with connect(server) as sock:
        assert statuses(exchange(sock, b"GET /health/live HTTP/1.0\r\n\r\n")) == [200]
        assert closed_by_server(sock)
    with connect(server) as sock:
        assert statuses(exchange(sock, b"GET /health/live HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")) == [200]
        assert still_open(sock)
    with connect(server) as sock:
        assert statuses(exchange(sock, b"GET /health/live HTTP/1.1\r\nConnection: close\r\n\r\n")) == [200]
        assert closed_by_server(sock)


def test_expect_100_continue_is_answered_before_the_body(server):
    with connect(server) as sock:
        sock.sendall(b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b"{}")
        assert statuses(sock.recv(65536)) == [404]


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /health/live HTTP/1.1\r\nHost: x\r\n folded: value\r\n\r\n", 400),
        (b"GET /health/live HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"GET /health/live HTTP/1.1\r\nName : value\r\n\r\n", 400),
        (b"GET /health/live HTTP/1.1\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n", 400),
        (b"GET /health/live HTTP/1.1\r\n" + b"X-H: v\r\n" * 101 + b"\r\n", 400),
        (b"GET /health/live HTTP/2.0\r\n\r\n", 505),
        (b"GET /health/live SPDY/3\r\n\r\n", 400),
        (b"GET /health/live\r\n\r\n", 400),
        (b"GET / health/live HTTP/1.1\r\n\r\n", 400),
    ],
    ids=[
        "folded",
        "no-colon",
        "space-before-colon",
        "line-too-long",
        "too-many",
        "http2",
        "not-http",
        "http09",
        "4-words",
    ],
)
def test_malformed_requests_get_a_4xx_or_505_and_the_connection_closes(server, request_bytes, status):
    with connect(server) as sock:
        assert statuses(exchange(sock, request_bytes)) == [status]
        assert closed_by_server(sock)


def test_repeated_headers_keep_the_first_and_lookups_ignore_case():
    import io

    headers = headers_read(io.BytesIO(b"Content-Length: 3\r\ncontent-length: 9\r\nX-A:  spaced  \r\n\r\nrest"))
    assert headers.get("CONTENT-LENGTH") == "3" and headers["x-a"] == "spaced" and "X-a" in headers
    assert headers.get("Authorization") is None


def test_a_client_that_resets_its_connection_is_not_logged_as_an_error_but_a_real_error_is(server, capsys):
    try:
        raise ConnectionResetError(104, "Connection reset by peer")
    except ConnectionResetError:
        server.handle_error(None, ("127.0.0.1", 1))
    assert capsys.readouterr().err == ""
    try:
        raise ValueError("a bug")
    except ValueError:
        server.handle_error(None, ("127.0.0.1", 1))
    assert "ValueError: a bug" in capsys.readouterr().err
